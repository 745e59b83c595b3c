package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/sealrelay/sealrelay/internal/safeio"
	"github.com/sealrelay/sealrelay/internal/testseam"
)

// File names inside the spool directory.
const (
	msgSuffix     = ".msg"
	envSuffix     = ".env"
	tmpSuffix     = safeio.TempSuffix
	quarantineDir = "quarantine"
)

// store is the spool's durable write path: every file that must survive a
// crash is written through it.
type store struct {
	dir  string
	dirf *os.File // the spool directory, open for fsync (and locked, see lockDir)
	// testHookBeforeSync is testseam.SpoolBeforeSync as it was at Open:
	// nil in the product.
	testHookBeforeSync func(path string) error
	dirSync            groupSync
}

// testHookBeforeSync returns the test seam testseam.SpoolBeforeSync, nil
// unless a test set it.
func testHookBeforeSync() func(path string) error {
	if h := testseam.SpoolBeforeSync.Load(); h != nil {
		return *h
	}
	return nil
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

// fileOptions are how the spool writes a file through safeio: under the
// temporary name ID.SUFFIX.tmp (which load recognises as a leftover after a
// crash), with the store's test seam before the file's fsync and the
// store's group commit as the directory fsync.
func (s *store) fileOptions() safeio.Options {
	return safeio.Options{FixedTemp: true, BeforeSync: s.testHookBeforeSync, SyncDir: s.dirSync.sync}
}

// create starts writing path in the spool directory.
func (s *store) create(path string) (*safeio.File, error) {
	return safeio.Create(path, s.fileOptions())
}

// write atomically puts what fill writes at path in the spool directory.
func (s *store) write(path string, fill func(w io.Writer) error) error {
	return safeio.WriteFile(path, fill, s.fileOptions())
}

// commitPair puts an item's message file msg and then its envelope, data
// at envPath, in place: both are made durable first, then renamed one
// right after the other, and one directory fsync covers both renames. The
// envelope's rename is the commit point; a crash between the two renames
// leaves a message without an envelope, which was never acknowledged. On
// error msg is given up and nothing new is left at envPath.
func (s *store) commitPair(msg *safeio.File, envPath string, data []byte) error {
	env, err := s.create(envPath)
	if err != nil {
		msg.Abort()
		return err
	}
	_, err = env.Write(data)
	if err == nil {
		err = msg.Finish()
	}
	if err == nil {
		err = env.Finish()
	}
	if err == nil {
		err = msg.Rename()
	}
	if err != nil {
		msg.Abort()
		env.Abort()
		return err
	}
	return env.Commit()
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
