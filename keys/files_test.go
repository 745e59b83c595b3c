package keys

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/hint"
)

// otherUID is a user that is neither root nor the test's user.
const otherUID = 4242

// needRoot skips the part of a test that gives files to another user.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("giving a file to another user (chown) needs root; the mode checks run in the other tests")
	}
}

// unsafeFile is what a check should say about a file: the error's type and
// text, and its hint.
type unsafeFile struct {
	errHas, hintHas string
}

func checkUnsafe(t *testing.T, err error, want unsafeFile) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want an error containing %q", want.errHas)
	}
	if !errors.Is(err, ErrUnsafeFile) {
		t.Errorf("error %v (%T) is not ErrUnsafeFile", err, err)
	}
	if !strings.Contains(err.Error(), want.errHas) {
		t.Errorf("error %q\nwant it to contain %q", err, want.errHas)
	}
	var h hint.Hinter
	if !errors.As(err, &h) || !strings.Contains(h.Hint(), want.hintHas) {
		t.Errorf("hint of %v: want it to contain %q", err, want.hintHas)
	}
}

func writeRecipients(t *testing.T, dir string) string {
	t.Helper()
	_, pub := writeIdentity(t, false, 0o600)
	p := filepath.Join(dir, "recipients.txt")
	if err := os.WriteFile(p, []byte("# server\n"+pub+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOwnerOfSecretFiles(t *testing.T) {
	needRoot(t)
	path, _ := writeIdentity(t, false, 0o600)
	if _, err := Load(path); err != nil {
		t.Fatalf("an identity owned by root, mode 0600: %v", err)
	}
	if err := os.Chown(path, otherUID, otherUID); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	checkUnsafe(t, err, unsafeFile{
		errHas:  "identity file " + path + " is owned by uid 4242, not by uid 0 (the user sealrelay runs as) or root; refusing to use it: its owner can change it",
		hintHas: "chown 0 " + path,
	})
	var oe *OwnerError
	if !errors.As(err, &oe) || oe.Owner != otherUID {
		t.Errorf("error %T, want *OwnerError", err)
	}

	rec := writeRecipients(t, t.TempDir())
	if err := os.Chown(rec, otherUID, otherUID); err != nil {
		t.Fatal(err)
	}
	_, err = LoadRecipients(rec)
	checkUnsafe(t, err, unsafeFile{errHas: "recipient list " + rec + " is owned by uid 4242", hintHas: "chown 0 " + rec})
}

func TestWritableRecipientList(t *testing.T) {
	for _, mode := range []os.FileMode{0o664, 0o646, 0o666} {
		rec := writeRecipients(t, t.TempDir())
		if err := os.Chmod(rec, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadRecipients(rec)
		checkUnsafe(t, err, unsafeFile{
			errHas:  "recipient list " + rec + " is accessible by group or others (mode " + "0" + strconv.FormatUint(uint64(mode), 8) + ")",
			hintHas: "make it writable by its owner only: chmod go-w " + rec,
		})
	}
	// Readable by all is fine: the list holds public keys.
	rec := writeRecipients(t, t.TempDir())
	if _, err := LoadRecipients(rec); err != nil {
		t.Fatalf("a 0644 recipient list: %v", err)
	}
}

func TestDirectoriesOnThePath(t *testing.T) {
	base := t.TempDir()
	mk := func(rel string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(base, rel)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		dir  func() string // where the recipient list goes
		want *unsafeFile   // nil: accepted
	}{
		{"private directory", func() string { return mk("private", 0o700) }, nil},
		{"sticky world-writable directory, as /tmp", func() string { return mk("tmp", os.ModeSticky|0o777) }, nil},
		{"group-writable directory", func() string { return mk("group", 0o775) },
			&unsafeFile{"directory " + filepath.Join(base, "group") + " is writable by group or others (mode 0775); refusing to use the file: whoever can write the directory can replace it",
				"chmod go-w " + filepath.Join(base, "group")}},
		{"world-writable grandparent", func() string { mk("open", 0o777); return mk("open/inner", 0o755) },
			&unsafeFile{"directory " + filepath.Join(base, "open") + " is writable by group or others (mode 0777)", "chmod go-w " + filepath.Join(base, "open")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := writeRecipients(t, c.dir())
			_, err := LoadRecipients(rec)
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			checkUnsafe(t, err, *c.want)
		})
	}

	t.Run("symlink into a writable directory", func(t *testing.T) {
		rec := writeRecipients(t, mk("shared", 0o777))
		link := filepath.Join(mk("safe", 0o700), "recipients.txt")
		if err := os.Symlink(rec, link); err != nil {
			t.Fatal(err)
		}
		_, err := LoadRecipients(link)
		checkUnsafe(t, err, unsafeFile{"recipient list " + link + ": directory " + filepath.Join(base, "shared") + " is writable", "chmod go-w"})
	})

	t.Run("identity in a writable directory", func(t *testing.T) {
		path, _ := writeIdentity(t, false, 0o600)
		dir := mk("keys", 0o770)
		moved := filepath.Join(dir, "identity.txt")
		if err := os.Rename(path, moved); err != nil {
			t.Fatal(err)
		}
		_, err := Load(moved)
		checkUnsafe(t, err, unsafeFile{"identity file " + moved + ": directory " + dir + " is writable by group or others (mode 0770)", "chmod go-w " + dir})
	})

	t.Run("directory of another user", func(t *testing.T) {
		needRoot(t)
		dir := mk("theirs", 0o755)
		rec := writeRecipients(t, dir)
		if err := os.Chown(dir, otherUID, otherUID); err != nil {
			t.Fatal(err)
		}
		_, err := LoadRecipients(rec)
		checkUnsafe(t, err, unsafeFile{"directory " + dir + " is owned by uid 4242, not by uid 0 (the user sealrelay runs as) or root", "chown 0 " + dir})
		// The sticky bit does not help a directory another user owns.
		if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
			t.Fatal(err)
		}
		_, err = LoadRecipients(rec)
		checkUnsafe(t, err, unsafeFile{"is owned by uid 4242", "chown"})
	})
}
