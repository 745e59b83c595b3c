package spool

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// nobody is the uid the tests give directories to, to play another user.
const nobody = 65534

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another user")
	}
}

// TestOpenRefusesUntrustedDirs: a data directory (the spool's parent), a
// spool directory or a spool subdirectory that belongs to another user or
// that group or others may write is refused at Open, with an error naming
// it and a hint saying what to do; the agent's own private directories are
// taken.
func TestOpenRefusesUntrustedDirs(t *testing.T) {
	type setup func(t *testing.T, data, spool string)
	chmod := func(rel string, mode os.FileMode) setup {
		return func(t *testing.T, data, spool string) {
			if err := os.Chmod(filepath.Join(data, rel), mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	chown := func(rel string) setup {
		return func(t *testing.T, data, spool string) {
			needRoot(t)
			if err := os.Chown(filepath.Join(data, rel), nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name    string
		setup   setup
		err     string // %s: the data directory
		hint    string
		dirErr  bool // a *DirError
		allowed bool
	}{
		{name: "private", setup: chmod(".", 0o700), allowed: true},
		{name: "readable by others", setup: chmod(".", 0o755), allowed: true},
		{name: "data directory world-writable", setup: chmod(".", 0o777), dirErr: true,
			err:  "data directory %s is writable by group or others (mode 0777); refusing to use it",
			hint: "make it writable by its owner only: chmod go-w %s"},
		{name: "data directory sticky and world-writable", setup: chmod(".", 0o1777), dirErr: true,
			err: "data directory %s is writable by group or others (mode 0777)"},
		{name: "data directory group-writable", setup: chmod(".", 0o770), dirErr: true,
			err: "data directory %s is writable by group or others (mode 0770)"},
		{name: "spool directory writable by others", setup: chmod("spool", 0o703), dirErr: true,
			err:  "spool directory %s/spool is writable by group or others (mode 0703)",
			hint: "chmod go-w %s/spool"},
		{name: "data directory of another user", setup: chown("."), dirErr: true,
			err:  "data directory %s belongs to uid 65534 (nobody), not to uid 0 (root) that sealrelay runs as; refusing to use it",
			hint: "the spool must belong to the user sealrelay runs as: run sealrelay as nobody (sudo -u nobody sealrelay ...), or, if the directory is meant for root, chown -R root %s"},
		{name: "spool directory of another user", setup: chown("spool"), dirErr: true,
			err:  "spool directory %s/spool belongs to uid 65534 (nobody), not to uid 0 (root)",
			hint: "sudo -u nobody sealrelay"},
		{name: "journal directory of another user", setup: chown("spool/journal"), dirErr: true,
			err: "journal directory %s/spool/journal belongs to uid 65534 (nobody)"},
		{name: "journal directory a symlink", setup: func(t *testing.T, data, spool string) {
			j := filepath.Join(spool, journalDir)
			if err := os.RemoveAll(j); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(t.TempDir(), j); err != nil {
				t.Fatal(err)
			}
		}, err: "journal directory %s/spool/journal is a symlink; refusing to follow it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			spool := filepath.Join(data, "spool")
			q, err := Open(Options{Dir: spool}) // creates them, private
			if err != nil {
				t.Fatal(err)
			}
			q.Close()
			tc.setup(t, data, spool)
			q, err = Open(Options{Dir: spool})
			if tc.allowed {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				q.Close()
				return
			}
			if err == nil {
				q.Close()
				t.Fatalf("Open succeeded, want an error")
			}
			if want := strings.ReplaceAll(tc.err, "%s", data); !strings.Contains(err.Error(), want) {
				t.Errorf("error = %q, want %q", err, want)
			}
			var de *DirError
			if errors.As(err, &de) != tc.dirErr {
				t.Errorf("error %T: is a *DirError: %v, want %v", err, !tc.dirErr, tc.dirErr)
			}
			if tc.hint != "" {
				if want := strings.ReplaceAll(tc.hint, "%s", data); de == nil || !strings.Contains(de.Hint(), want) {
					t.Errorf("hint = %q, want %q", hintOf(de), want)
				}
			}
		})
	}
}

func hintOf(e *DirError) string {
	if e == nil {
		return "(none)"
	}
	return e.Hint()
}

// victim is a file outside the spool that a planted symlink points at.
func victim(t *testing.T) (path string, check func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "victim")
	const content = "root:x:0:0:root:/root:/bin/bash\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, func() {
		t.Helper()
		if b, err := os.ReadFile(path); err != nil || string(b) != content {
			t.Errorf("the victim file was written through a planted symlink: now %q, %v", b, err)
		}
	}
}

// plant makes a symlink at path pointing at target.
func plant(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

// TestPlantedSymlinksAreNotFollowed: symlinks planted in the spool under
// the names of the temporary files the spool writes next, pointing at a
// file elsewhere, are never written through: not by an envelope rewrite,
// not by a move out of the journal, not by the quarantine (whose
// directory, planted as a symlink, is refused).
func TestPlantedSymlinksAreNotFollowed(t *testing.T) {
	defer411 := func(d *Delivery) []RcptResult { return all(Temporary, errors.New("451 4.3.0 later"))(d) }

	t.Run("envelope rewrite", func(t *testing.T) {
		target, check := victim(t)
		h := newHarness(t, Options{})
		id := h.put("alice@example.com", "bob@example.org")
		plant(t, target, filepath.Join(h.dir, id+envSuffix+tmpSuffix))
		h.run(&fakeDeliverer{respond: defer411})
		h.waitProcessed(id)
		check()
		env, err := readEnvelopeFile(filepath.Join(h.dir, id+envSuffix))
		if err != nil || env.Attempts != 1 {
			t.Errorf("envelope after the rewrite: %+v, %v; want 1 attempt recorded", env, err)
		}
	})

	t.Run("move out of the journal", func(t *testing.T) {
		target, check := victim(t)
		h := journalHarness(t, Options{})
		id := h.put("alice@example.com", "bob@example.org")
		plant(t, target, filepath.Join(h.dir, id+msgSuffix+tmpSuffix))
		plant(t, target, filepath.Join(h.dir, id+envSuffix+tmpSuffix))
		h.run(&fakeDeliverer{respond: defer411})
		h.waitProcessed(id)
		check()
		for _, suffix := range []string{msgSuffix, envSuffix} {
			fi, err := os.Lstat(filepath.Join(h.dir, id+suffix))
			if err != nil || !fi.Mode().IsRegular() {
				t.Errorf("%s after the move: %v, %v; want a regular file", id+suffix, fi, err)
			}
		}
		if b, _ := os.ReadFile(filepath.Join(h.dir, id+msgSuffix)); string(b) != testMessage {
			t.Errorf("moved message = %q", b)
		}
	})

	t.Run("quarantine copy", func(t *testing.T) {
		target, check := victim(t)
		h := journalHarness(t, Options{})
		h.put("alice@example.com", "bob@example.org")
		seg := segments(t, h.dir)[0]
		crash(h.q)
		damageByte(t, seg, recHeaderLen+10)
		qdir := filepath.Join(h.dir, quarantineDir)
		if err := os.Mkdir(qdir, 0o700); err != nil {
			t.Fatal(err)
		}
		name := "journal-" + filepath.Base(seg)
		plant(t, target, filepath.Join(qdir, name))
		plant(t, target, filepath.Join(qdir, name+tmpSuffix))
		plant(t, target, filepath.Join(qdir, name+".1"+tmpSuffix))
		h2 := journalHarness(t, Options{Dir: h.dir})
		check()
		if len(h2.logs.Lines("copied damaged journal segment to quarantine", name+".1")) != 1 {
			t.Errorf("no copy of the damaged segment next to the planted names; logs:\n%s", h2.logs)
		}
	})

	t.Run("quarantine directory", func(t *testing.T) {
		elsewhere := t.TempDir()
		h := newHarness(t, Options{})
		id := h.put("alice@example.com", "bob@example.org")
		os.Remove(filepath.Join(h.dir, id+envSuffix)) // damaged: quarantined at the next Open
		crash(h.q)
		plant(t, elsewhere, filepath.Join(h.dir, quarantineDir))
		h2 := newHarness(t, Options{Dir: h.dir})
		if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
			t.Errorf("the quarantine wrote through a symlinked directory: %v", ents)
		}
		if lines := h2.logs.Lines("cannot quarantine it", id, "quarantine directory", "is a symlink"); len(lines) != 1 {
			t.Errorf("log lines = %q; logs:\n%s", lines, h2.logs)
		}
		if _, err := os.Stat(filepath.Join(h.dir, id+msgSuffix)); err != nil {
			t.Errorf("the damaged item's message left its place: %v", err)
		}
	})
}

// damageByte flips a byte of the file at path.
func damageByte(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off >= len(b) {
		t.Fatalf("%s has %d bytes, cannot damage offset %d", path, len(b), off)
	}
	b[off] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
