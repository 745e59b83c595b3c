package agefile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
)

// TestReadRefusesAFileOthersCanChange: whoever can write the credential
// file chooses the credentials the agent uses (age does not authenticate
// the sender), so a file that group or others can write, one another user
// owns, or one in a directory others can write is refused.
func TestReadRefusesAFileOthersCanChange(t *testing.T) {
	id, pub := newServer(t, "a")
	creds := []secrets.Credential{secrets.NewCredential("primary", "relay@example.com", testPassword, "")}
	write := func(t *testing.T, dir string) string {
		t.Helper()
		path := filepath.Join(dir, "credentials.age")
		if err := Write(path, creds, recipients(t, pub)); err != nil {
			t.Fatal(err)
		}
		return path
	}
	check := func(t *testing.T, path, want string) {
		t.Helper()
		_, err := Read(path, id)
		if err == nil || !errors.Is(err, keys.ErrUnsafeFile) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Read = %v, want an unsafe-file error containing %q", err, want)
		}
	}

	t.Run("readable by all is fine", func(t *testing.T) {
		path := write(t, t.TempDir())
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(path, id); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("group-writable", func(t *testing.T) {
		path := write(t, t.TempDir())
		if err := os.Chmod(path, 0o664); err != nil {
			t.Fatal(err)
		}
		check(t, path, "credential file "+path+" is accessible by group or others (mode 0664); refusing to use it")
	})
	t.Run("in a world-writable directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "drop")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := write(t, dir)
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		check(t, path, "credential file "+path+": directory "+dir+" is writable by group or others (mode 0777)")
	})
	t.Run("owned by another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("giving a file to another user (chown) needs root")
		}
		path := write(t, t.TempDir())
		if err := os.Chown(path, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		check(t, path, "credential file "+path+" is owned by uid 4242, not by uid 0")
	})
}
