package safeio

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMode: Options.Mode gives the file its bits whatever the umask.
func TestMode(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "f")
	err := WriteFile(path, func(w io.Writer) error { _, err := io.Copy(w, strings.NewReader("x")); return err }, Options{Mode: 0o640})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %o, want 640 under umask 077", fi.Mode().Perm())
	}
}
