package safeio

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func write(path, data string, opt Options) error {
	return WriteFile(path, func(w io.Writer) error {
		_, err := io.WriteString(w, data)
		return err
	}, opt)
}

// names lists the entries of dir.
func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestWriteFileReplaces(t *testing.T) {
	for _, opt := range []Options{{}, {FixedTemp: true}, {KeepMode: true}} {
		dir := t.TempDir()
		path := filepath.Join(dir, "f")
		if err := write(path, "one", opt); err != nil {
			t.Fatal(err)
		}
		if err := write(path, "two", opt); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != "two" {
			t.Errorf("%+v: content %q, want %q", opt, got, "two")
		}
		if m := mode(t, path); m != 0o600 {
			t.Errorf("%+v: mode %04o, want 0600", opt, m)
		}
		if got := names(t, dir); !slices.Equal(got, []string{"f"}) {
			t.Errorf("%+v: directory holds %v, want only f", opt, got)
		}
	}
}

func TestKeepMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := write(path, "new", Options{KeepMode: true}); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, path); m != 0o640 {
		t.Errorf("mode %04o after a rewrite with KeepMode, want 0640", m)
	}
	if err := write(path, "newer", Options{}); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, path); m != 0o600 {
		t.Errorf("mode %04o after a rewrite without KeepMode, want 0600", m)
	}
}

// TestFixedTempNotFollowed: a symlink planted at the temporary name is
// removed, never written through.
func TestFixedTempNotFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "f")
	if err := os.Symlink(victim, path+TempSuffix); err != nil {
		t.Fatal(err)
	}
	if err := write(path, "data", Options{FixedTemp: true}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "precious" {
		t.Errorf("the symlink's target was written: %q", got)
	}
	if got, _ := os.ReadFile(path); string(got) != "data" {
		t.Errorf("content %q, want %q", got, "data")
	}
}

// TestFailuresLeaveNothing: a failed fill, a failed fsync (through the
// test seam) and a failed rename leave the old file as it was and no
// temporary file; the fsync error names the file.
func TestFailuresLeaveNothing(t *testing.T) {
	errFill := errors.New("fill failed")
	for _, tc := range []struct {
		name    string
		fill    func(io.Writer) error
		opt     Options
		blocker bool // a non-empty directory at the path: the rename fails
		want    string
	}{
		{name: "fill", fill: func(w io.Writer) error { io.WriteString(w, "part"); return errFill }, want: "fill failed"},
		{name: "fsync", opt: Options{BeforeSync: func(string) error { return syscall.ENOSPC }}, want: "fsync "},
		{name: "fsync fixed", opt: Options{FixedTemp: true, BeforeSync: func(string) error { return syscall.ENOSPC }}, want: "fsync "},
		{name: "rename", blocker: true, want: "rename"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			want := []string{"f"}
			if tc.blocker {
				if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
			fill := tc.fill
			if fill == nil {
				fill = func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }
			}
			err := WriteFile(path, fill, tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
			if tc.name != "fill" && tc.name != "rename" && (!errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), dir)) {
				t.Errorf("error = %v, want ENOSPC naming the temporary file", err)
			}
			if got := names(t, dir); !slices.Equal(got, want) {
				t.Errorf("directory holds %v, want %v", got, want)
			}
			if !tc.blocker {
				if got, _ := os.ReadFile(path); string(got) != "old" {
					t.Errorf("the old file changed: %q", got)
				}
			}
		})
	}
}

// TestSyncDirCalled: the directory fsync is the caller's when given.
func TestSyncDirCalled(t *testing.T) {
	dir := t.TempDir()
	calls := 0
	errDir := errors.New("dir fsync failed")
	err := write(filepath.Join(dir, "f"), "x", Options{SyncDir: func() error { calls++; return errDir }})
	if calls != 1 || !errors.Is(err, errDir) {
		t.Errorf("SyncDir called %d times, error %v; want once, %v", calls, err, errDir)
	}
}

// TestPairSharesOneDirectorySync: two files finished first, then renamed
// one after the other, with one directory fsync (the second Commit) for
// both; the first Rename syncs nothing itself.
func TestPairSharesOneDirectorySync(t *testing.T) {
	dir := t.TempDir()
	syncs := 0
	opt := Options{FixedTemp: true, SyncDir: func() error { syncs++; return nil }}
	a, err := Create(filepath.Join(dir, "x.msg"), opt)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Create(filepath.Join(dir, "x.env"), opt)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(a, "message")
	io.WriteString(b, "envelope")
	if err := a.Finish(); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"x.env.tmp", "x.msg.tmp"}) {
		t.Fatalf("after Finish: %v, want only the two temporary files", got)
	}
	if _, err := a.Write([]byte("more")); err == nil {
		t.Error("Write after Finish succeeded")
	}
	if err := a.Rename(); err != nil {
		t.Fatal(err)
	}
	if syncs != 0 {
		t.Errorf("Rename synced the directory %d times, want 0", syncs)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if syncs != 1 {
		t.Errorf("directory synced %d times for the pair, want 1", syncs)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"x.env", "x.msg"}) {
		t.Fatalf("after Commit: %v", got)
	}
	c, err := Create(filepath.Join(dir, "y.msg"), opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	c.Abort()
	if got := names(t, dir); !slices.Equal(got, []string{"x.env", "x.msg"}) {
		t.Fatalf("Abort after Finish left %v", got)
	}
}
