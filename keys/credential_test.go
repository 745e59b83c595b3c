package keys

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/hint"
	sc "github.com/sealrelay/sealrelay/internal/testing/systemdcreds"
)

// credentialsDir lays out a $CREDENTIALS_DIRECTORY as systemd does for a
// service that runs as the test's user (root, when the test runs as root,
// like systemd's own files): the credential "identity" holding data with
// mode 0400, in a directory of mode 0500. It returns the directory.
func credentialsDir(t *testing.T, data []byte) string {
	t.Helper()
	return sc.Dir(t, t.TempDir(), map[string][]byte{"identity": data}, os.Geteuid())
}

// inCredentialsDir runs f with dir writable, then makes it 0500 again.
func inCredentialsDir(t *testing.T, dir string, f func()) {
	t.Helper()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
}

func TestLoadCredential(t *testing.T) {
	data, pub, err := Generate(false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := credentialsDir(t, data)
	id, err := LoadCredential(dir, "identity")
	if err != nil {
		t.Fatal(err)
	}
	if id.PublicKey() != pub {
		t.Errorf("public key %s, want %s", id.PublicKey(), pub)
	}
	if want := "systemd credential identity in " + dir; id.Source() != want {
		t.Errorf("Source() = %q, want %q", id.Source(), want)
	}
	if want := filepath.Join(dir, "identity"); id.Path() != want {
		t.Errorf("Path() = %q, want %q", id.Path(), want)
	}

	// LoadRef reads "credential:NAME" from $CREDENTIALS_DIRECTORY, and
	// anything else as a file.
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	if id, err := LoadRef("credential:identity"); err != nil || id.PublicKey() != pub {
		t.Errorf("LoadRef(credential:identity) = %v, %v", id, err)
	}
	path, filePub := writeIdentity(t, false, 0o600)
	if id, err := LoadRef(path); err != nil || id.PublicKey() != filePub || id.Source() != "file "+path {
		t.Errorf("LoadRef(%s) = %v, %v", path, id, err)
	}
}

// credentialCase is a credential laid out in a way LoadCredential refuses.
type credentialCase struct {
	name    string
	setup   func(t *testing.T, dir string) // changes the systemd layout
	dir     func(dir string) string        // the CREDENTIALS_DIRECTORY passed
	cred    string                         // the name asked for; default "identity"
	want    string                         // in the error
	hintHas string
	unsafe  bool // errors.Is(err, ErrUnsafeFile)
}

// TestLoadCredentialRefused: every way a credential is refused names the
// credential and the directory, says why, gives a hint, and quotes no key.
func TestLoadCredentialRefused(t *testing.T) {
	data, _, err := Generate(false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.Split(string(data), "\n")[2]
	cases := []credentialCase{
		{name: "unset", dir: func(string) string { return "" },
			want: `systemd credential "identity": $CREDENTIALS_DIRECTORY is not set`, hintHas: "LoadCredentialEncrypted=identity:"},
		{name: "relative", dir: func(string) string { return "credentials" },
			want: "$CREDENTIALS_DIRECTORY is not an absolute path", hintHas: "/run/credentials/UNIT"},
		{name: "missing", cred: "other",
			want: "the service was not given it", hintHas: "LoadCredentialEncrypted=other:/etc/sealrelay/identity.cred"},
		{name: "bad name", cred: "../identity",
			want: "not a credential name systemd accepts", hintHas: "LoadCredentialEncrypted=NAME:FILE"},
		{name: "world-readable", setup: chmodCred(0o404),
			want: "others may read it (mode 0404)", hintHas: "systemd makes a credential readable", unsafe: true},
		{name: "group-writable", setup: chmodCred(0o420),
			want: "group or others may write it (mode 0420)", hintHas: "systemd makes a credential readable", unsafe: true},
		{name: "group-readable without ACL", setup: chmodCred(0o440),
			want: "may read it, and no ACL limits that to the user sealrelay runs as (mode 0440)", hintHas: "systemd makes", unsafe: true},
		{name: "symlink", setup: func(t *testing.T, dir string) {
			inCredentialsDir(t, dir, func() {
				os.Rename(filepath.Join(dir, "identity"), filepath.Join(dir, "real"))
				if err := os.Symlink("real", filepath.Join(dir, "identity")); err != nil {
					t.Fatal(err)
				}
			})
		}, want: "it is a symbolic link; refusing to follow it", hintHas: "systemd makes", unsafe: true},
		{name: "directory", setup: func(t *testing.T, dir string) {
			inCredentialsDir(t, dir, func() {
				os.Remove(filepath.Join(dir, "identity"))
				os.Mkdir(filepath.Join(dir, "identity"), 0o500)
			})
		}, want: "it is not a regular file", hintHas: "systemd makes", unsafe: true},
		{name: "directory writable by others", setup: func(t *testing.T, dir string) {
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
		}, want: "its directory is not safe: systemd credential", hintHas: "systemd makes", unsafe: true},
	}
	if os.Geteuid() == 0 {
		cases = append(cases, credentialCase{name: "another user's", setup: func(t *testing.T, dir string) {
			if err := os.Chown(filepath.Join(dir, "identity"), otherUID, otherUID); err != nil {
				t.Fatal(err)
			}
		}, want: "it is owned by uid 4242, not by uid 0", hintHas: "systemd makes", unsafe: true})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := credentialsDir(t, data)
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			passed := dir
			if tc.dir != nil {
				passed = tc.dir(dir)
			}
			cred := tc.cred
			if cred == "" {
				cred = "identity"
			}
			id, err := LoadCredential(passed, cred)
			if err == nil {
				t.Fatalf("loaded %v; want an error containing %q", id, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
			if passed != "" {
				if prefix := `systemd credential "` + cred + `" in ` + passed + ": "; !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("error %q does not start with %q", err, prefix)
				}
			}
			var ce *CredentialError
			if !errors.As(err, &ce) {
				t.Errorf("error is a %T, not a *CredentialError", err)
			}
			if got := errors.Is(err, ErrUnsafeFile); got != tc.unsafe {
				t.Errorf("errors.Is(err, ErrUnsafeFile) = %v, want %v", got, tc.unsafe)
			}
			hints := hint.All(err)
			if len(hints) == 0 || !strings.Contains(hints[0], tc.hintHas) {
				t.Errorf("hints %q: want the first to contain %q", hints, tc.hintHas)
			}
			for _, s := range append(hints, err.Error()) {
				if strings.Contains(s, "AGE-SECRET-KEY") || strings.Contains(s, secret[20:40]) {
					t.Errorf("error or hint quotes the key: %q", s)
				}
			}
		})
	}
}

func chmodCred(mode os.FileMode) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		if err := os.Chmod(filepath.Join(dir, "identity"), mode); err != nil {
			t.Fatal(err)
		}
	}
}

func TestValidCredentialName(t *testing.T) {
	for name, want := range map[string]bool{
		"identity": true, "sealrelay.identity": true, "id_1-x@host": true, "a b": true,
		strings.Repeat("x", 255): true, strings.Repeat("x", 256): false,
		"": false, ".": false, "..": false, "a/b": false, "a:b": false, "tab\there": false, "é": false, "del\x7f": false,
	} {
		if got := ValidCredentialName(name); got != want {
			t.Errorf("ValidCredentialName(%q) = %v, want %v", name, got, want)
		}
	}
}
