package roots

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadErrors(t *testing.T) {
	junk := filepath.Join(t.TempDir(), "junk.pem")
	os.WriteFile(junk, []byte("not a certificate"), 0o644)
	for _, tc := range []struct{ file, want string }{
		{junk, "ca_file " + junk + ": no PEM certificate found"},
		{"/nonexistent/ca.pem", "reading ca_file: open /nonexistent/ca.pem: no such file or directory"},
	} {
		if _, err := Load(tc.file); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%s) = %v, want %q", tc.file, err, tc.want)
		}
	}
	if p, err := Load(""); err != nil || p == nil {
		t.Errorf("Load(\"\") = %v, %v", p, err)
	}
}
