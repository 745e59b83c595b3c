package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// File names inside the spool directory.
const (
	msgSuffix     = ".msg"
	envSuffix     = ".env"
	tmpSuffix     = ".tmp"
	quarantineDir = "quarantine"
)

// store is the spool's durable write path: every file that must survive a
// crash is written through it.
type store struct {
	dir  string
	dirf *os.File // the spool directory, open for fsync (and locked, see lockDir)
	// testHookBeforeSync is Options.TestHookBeforeSync.
	testHookBeforeSync func(path string) error
	dirSync            groupSync
}

func newStore(dir string, dirf *os.File, hook func(string) error) *store {
	s := &store{dir: dir, dirf: dirf, testHookBeforeSync: hook}
	s.dirSync.fn = func() error { return s.fsync(s.dirf, s.dir) }
	s.dirSync.cond.L = &s.dirSync.mu
	return s
}

func (s *store) path(id, suffix string) string {
	return filepath.Join(s.dir, id+suffix)
}

// beforeSync runs the test hook, if any, before a sync of path.
func (s *store) beforeSync(path string) error {
	if s.testHookBeforeSync != nil {
		if err := s.testHookBeforeSync(path); err != nil {
			return fmt.Errorf("fsync %s: %w", path, err)
		}
	}
	return nil
}

// fsync flushes f, named path, to stable storage.
func (s *store) fsync(f *os.File, path string) error {
	if err := s.beforeSync(path); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// atomicFile is a file written under a temporary name and put in place
// only once it is durable. It is the one way the spool writes a file that
// must survive a crash or that replaces another.
//
// The temporary file is path+".tmp", opened with
// O_WRONLY|O_CREATE|O_EXCL|O_NOFOLLOW and mode 0600 after any leftover of
// that name (from a crash) is removed: whatever was planted under the name,
// a symlink to a file elsewhere included, is never opened or written
// through. Commit fsyncs it, renames it over path and fsyncs the directory.
type atomicFile struct {
	f         *os.File
	path, tmp string
	// sync fsyncs a file (f, named name); syncDir makes the rename durable.
	sync    func(f *os.File, name string) error
	syncDir func() error
}

// createAtomic starts writing path. sync and syncDir are the fsyncs Commit
// makes (nil: (*os.File).Sync, and an fsync of path's directory).
func createAtomic(path string, sync func(*os.File, string) error, syncDir func() error) (*atomicFile, error) {
	tmp := path + tmpSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing leftover %s: %w", tmp, err)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if sync == nil {
		sync = func(f *os.File, _ string) error { return f.Sync() }
	}
	if syncDir == nil {
		syncDir = func() error { return syncDirAt(filepath.Dir(path)) }
	}
	return &atomicFile{f: f, path: path, tmp: tmp, sync: sync, syncDir: syncDir}, nil
}

// Write writes to the temporary file; errors name it.
func (a *atomicFile) Write(p []byte) (int, error) {
	n, err := a.f.Write(p)
	if err != nil {
		err = fmt.Errorf("write %s: %w", a.tmp, err)
	}
	return n, err
}

// Commit makes the file durable and puts it in place: fsync, close, rename
// over path, fsync of the directory. On error nothing is left at the
// temporary name (what was renamed stays: the caller decides).
func (a *atomicFile) Commit() error {
	err := a.sync(a.f, a.tmp)
	if cerr := a.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", a.tmp, cerr)
	}
	if err == nil {
		err = os.Rename(a.tmp, a.path)
	}
	if err != nil {
		os.Remove(a.tmp)
		return err
	}
	return a.syncDir()
}

// Abort gives up: the temporary file is closed and removed.
func (a *atomicFile) Abort() {
	a.f.Close()
	os.Remove(a.tmp)
}

// writeAtomic writes path through an atomicFile whose content fill writes.
func writeAtomic(path string, sync func(*os.File, string) error, syncDir func() error, fill func(w io.Writer) error) error {
	a, err := createAtomic(path, sync, syncDir)
	if err != nil {
		return err
	}
	if err := fill(a); err != nil {
		a.Abort()
		return err
	}
	return a.Commit()
}

// syncDirAt fsyncs the directory at path.
func syncDirAt(path string) error {
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

// create starts writing path in the spool directory, with the store's
// fsyncs (and their test hook).
func (s *store) create(path string) (*atomicFile, error) {
	return createAtomic(path, s.fsync, s.dirSync.sync)
}

// write atomically puts what fill writes at path in the spool directory.
func (s *store) write(path string, fill func(w io.Writer) error) error {
	return writeAtomic(path, s.fsync, s.dirSync.sync, fill)
}

// replace atomically puts data at path in the spool directory.
func (s *store) replace(path string, data []byte) error {
	return s.write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// remove deletes the named files in order and makes the removal durable.
// Missing files are not an error.
func (s *store) remove(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := s.dirSync.sync(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// syncDirPath fsyncs the directory at path (one not held open).
func (s *store) syncDirPath(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return s.fsync(d, path)
}

// groupSync runs fn (a directory fsync) on behalf of many concurrent
// callers: a caller returns once a run of fn that started after its call
// has finished, so its earlier renames are covered, and several callers
// arriving while a run is in progress share the next one. This is the group
// commit: one directory fsync per batch of Puts, never an acknowledgement
// before the caller's own rename is durable.
type groupSync struct {
	fn func() error

	mu        sync.Mutex
	cond      sync.Cond
	running   bool
	started   uint64 // runs started
	done      uint64 // the last run finished
	failedGen uint64 // the last run that failed
	failErr   error
}

func (g *groupSync) sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := g.started + 1 // the first run that starts after this call
	for g.done < want {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		gen := g.started
		g.mu.Unlock()
		err := g.fn()
		g.mu.Lock()
		g.running = false
		g.done = gen
		if err != nil {
			g.failedGen, g.failErr = gen, err
		}
		g.cond.Broadcast()
	}
	// A failure of any run from ours on counts as ours: a later success
	// does not prove that a failed fsync's changes reached the disk.
	if g.failedGen >= want {
		return g.failErr
	}
	return nil
}
