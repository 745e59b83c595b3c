// Package safeio writes files that must survive a crash, or that replace
// another file, so that a reader only ever sees the old content or the whole
// new content.
//
// What it promises: the content goes to a temporary file in the same
// directory, opened with O_EXCL (and O_NOFOLLOW) and mode 0600 (or the
// mode Options asks for), so nothing
// planted under that name, a symlink included, is ever written through; the
// file is fsynced and closed, renamed over the path, and then the directory
// is fsynced, so the rename itself is durable when Commit returns. On any
// failure before the rename the temporary file is removed and the path is
// untouched.
package safeio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// TempSuffix ends the name of a temporary file made with Options.FixedTemp.
const TempSuffix = ".tmp"

// Options say how a file is written. The zero value writes a new file with
// mode 0600 under a temporary name of its own and fsyncs the directory.
type Options struct {
	// KeepMode gives the file the permission bits of the file it replaces,
	// or 0600 when there is none, set on the open file (the umask does not
	// narrow them).
	KeepMode bool
	// Mode, if not zero, gives the file these permission bits instead,
	// set on the open file (the umask does not narrow them): 0640 for a
	// file another user's group must read.
	Mode fs.FileMode
	// FixedTemp names the temporary file path+TempSuffix, a name a loader
	// can recognise after a crash, and removes a leftover of that name
	// first. Only one writer at a time may write path. Without it the
	// temporary file is ".BASE.tmp-RANDOM" in path's directory, a name no
	// other writer uses.
	FixedTemp bool
	// SyncDir makes the rename durable. Default: an fsync of path's
	// directory. A caller that renames many files into one directory can
	// share one directory fsync between them (a group commit).
	SyncDir func() error
	// BeforeSync is a test seam, not a feature: if set, it is called with
	// the temporary file's name before its fsync, and an error it returns is
	// taken as that fsync's failure (a disk-full test returns
	// syscall.ENOSPC).
	BeforeSync func(name string) error
}

// File is a file being written under a temporary name; Commit puts it in
// place once it is durable, Abort gives it up.
type File struct {
	f         *os.File
	path, tmp string
	opt       Options
	closed    bool // fsynced and closed: only the rename is left
}

// Create starts writing path.
func Create(path string, opt Options) (*File, error) {
	mode := fs.FileMode(0o600)
	if opt.KeepMode {
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	var f *os.File
	var err error
	if opt.FixedTemp {
		tmp := path + TempSuffix
		if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("removing leftover %s: %w", tmp, err)
		}
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	} else {
		dir, base := filepath.Split(path)
		if dir == "" {
			dir = "."
		}
		f, err = os.CreateTemp(dir, "."+base+TempSuffix+"-*")
	}
	if err != nil {
		return nil, err
	}
	a := &File{f: f, path: path, tmp: f.Name(), opt: opt}
	if opt.Mode != 0 {
		mode = opt.Mode.Perm()
	}
	if opt.KeepMode || opt.Mode != 0 {
		if err := f.Chmod(mode); err != nil {
			a.Abort()
			return nil, err
		}
	}
	return a, nil
}

// WriteFile writes what fill writes to path through a File: all of it, or,
// on any error, nothing.
func WriteFile(path string, fill func(w io.Writer) error, opt Options) error {
	a, err := Create(path, opt)
	if err != nil {
		return err
	}
	if err := fill(a); err != nil {
		a.Abort()
		return err
	}
	return a.Commit()
}

// TempName is the temporary file's path, until Commit renames it.
func (a *File) TempName() string { return a.tmp }

// Write writes to the temporary file; errors name it.
func (a *File) Write(p []byte) (int, error) {
	n, err := a.f.Write(p)
	if err != nil {
		err = fmt.Errorf("write %s: %w", a.tmp, err)
	}
	return n, err
}

// Commit makes the file durable and puts it in place: fsync, close, rename
// over path, fsync of the directory. On error nothing is left at the
// temporary name (what was renamed stays: the caller decides).
func (a *File) Commit() error {
	if err := a.Rename(); err != nil {
		return err
	}
	if a.opt.SyncDir != nil {
		return a.opt.SyncDir()
	}
	return SyncDir(filepath.Dir(a.path))
}

// Finish makes the temporary file durable (fsync) and closes it, without
// putting it in place. Files that commit together are finished first and
// renamed after, so the renames follow each other with no fsync between
// them, and one directory fsync (the last Commit) covers them all. On
// error the temporary file is removed.
func (a *File) Finish() error {
	if a.closed {
		return nil
	}
	a.closed = true
	err := a.sync()
	if cerr := a.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", a.tmp, cerr)
	}
	if err != nil {
		os.Remove(a.tmp)
	}
	return err
}

// Rename finishes the file as Finish does, if it is not yet, and renames it
// over path, without the directory fsync: a later Commit of another file
// in the same directory (or SyncDir) makes the rename durable.
func (a *File) Rename() error {
	if err := a.Finish(); err != nil {
		return err
	}
	if err := os.Rename(a.tmp, a.path); err != nil {
		os.Remove(a.tmp)
		return err
	}
	return nil
}

// sync fsyncs the temporary file, after the test seam.
func (a *File) sync() error {
	if a.opt.BeforeSync != nil {
		if err := a.opt.BeforeSync(a.tmp); err != nil {
			return fmt.Errorf("fsync %s: %w", a.tmp, err)
		}
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", a.tmp, err)
	}
	return nil
}

// Abort gives up: the temporary file is closed and removed.
func (a *File) Abort() {
	if !a.closed {
		a.f.Close()
	}
	os.Remove(a.tmp)
}

// SyncDir fsyncs the directory at path, making the renames and removals
// done in it durable.
func SyncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}
