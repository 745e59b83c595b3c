package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotFound is wrapped by Retry and Delete for an ID not in the queue.
var ErrNotFound = errors.New("no such item in the queue")

// ErrClosed is returned by Put after Close.
var ErrClosed = errors.New("spool is closed")

// ErrBadAddress is wrapped by Put for an address the spool cannot store
// (an empty recipient, control characters, invalid UTF-8, too long).
var ErrBadAddress = errors.New("address not acceptable")

// LockedError reports a spool directory that another process holds.
type LockedError struct{ Dir string }

func (e *LockedError) Error() string {
	return fmt.Sprintf("spool directory %s is in use by another sealrelay process", e.Dir)
}

// Hint tells the operator what to do.
func (e *LockedError) Hint() string {
	return "stop the running agent first: two agents must not share a spool (`sealrelay queue list` can read it while the agent runs)"
}

// Queue is the durable queue. Its methods are safe for concurrent use.
type Queue struct {
	opt  Options
	log  *slog.Logger
	st   *store
	j    *journal      // the group-committed fast path for small messages
	wake chan struct{} // tells Run that something changed

	loaded   chan struct{} // closed when the items found at Open are all loaded
	loadQuit atomic.Bool   // Close asks the loader to stop

	mu       sync.Mutex
	items    map[string]*item
	sched    schedule // items waiting for their next attempt
	inflight int      // deliveries running
	held     int      // items in the failed state (item.held)
	closed   bool

	mem   budget // for the bodies of messages being received
	stats counters

	probe   chan chan struct{} // liveness probes Run answers (Alive)
	probeMu sync.Mutex         // one ProbeWrite at a time
}

// Open opens the spool in opt.Dir, creating it (mode 0700) if needed, and
// locks it against other agents. It refuses, with a *DirError, a spool
// directory, or a directory holding it, that belongs to another user or
// that group or others may write. It loads every complete item and schedules
// it, removes leftover temporary files, and moves incomplete or damaged items
// to the quarantine subdirectory, logging one line for each. Call Close when
// done.
func Open(opt Options) (*Queue, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	// The spool and the directory that holds it (the agent's data_dir) must
	// be the agent's alone: whoever else can write either could swap files
	// under it.
	parent := filepath.Dir(filepath.Clean(opt.Dir))
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	if err := checkDir("data directory", parent); err != nil {
		return nil, err
	}
	created := false
	if err := os.Mkdir(opt.Dir, 0o700); err == nil {
		created = true
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("creating spool directory: %w", err)
	}
	dirf, err := os.Open(opt.Dir)
	if err != nil {
		return nil, fmt.Errorf("opening spool directory: %w", err)
	}
	fi, err := dirf.Stat()
	if err == nil {
		err = checkDirInfo(fi, "spool directory", opt.Dir)
	}
	if err != nil {
		dirf.Close()
		return nil, err
	}
	if err := lockDir(dirf); err != nil {
		dirf.Close()
		return nil, err
	}
	q := &Queue{
		opt:   opt,
		log:   opt.Logger,
		st:    newStore(opt.Dir, dirf, testHookBeforeSync()),
		wake:  make(chan struct{}, 1),
		probe: make(chan chan struct{}),
		items: make(map[string]*item),
		mem:   budget{limit: opt.MemoryBudget},
	}
	if created {
		if err := q.st.syncDirPath(parent); err != nil {
			dirf.Close()
			return nil, fmt.Errorf("creating spool directory: %w", err)
		}
	}
	if q.j, err = openJournal(opt.Dir, q.st); err != nil {
		dirf.Close()
		return nil, err
	}
	old, err := q.j.adopt()
	if err != nil {
		dirf.Close()
		return nil, err
	}
	// New mail is taken at once; what was queued loads in the background
	// and is scheduled as it is found.
	q.loaded = make(chan struct{})
	q.j.start()
	go func() {
		defer close(q.loaded)
		start := time.Now()
		if err := q.load(old); err != nil {
			q.log.Error("spool: loading the queue failed; items not loaded stay on disk for the next start", "err", err)
			return
		}
		q.log.Info("spool: loaded", "dir", q.opt.Dir, "items", q.Stats().Queued, "quarantined", q.stats.quarantined.Load(),
			"duration", time.Since(start).Round(time.Millisecond))
	}()
	return q, nil
}

// Close releases the spool directory. Put fails with ErrClosed afterwards.
// Call it after Run has returned and the listener has stopped.
func (q *Queue) Close() error {
	q.loadQuit.Store(true)
	<-q.loaded
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	q.j.stop()
	return q.st.dirf.Close()
}

// WaitLoaded returns once the items queued before Open are loaded (or the
// loading stopped).
func (q *Queue) WaitLoaded() { <-q.loaded }

// kick wakes Run to look at the schedule again.
func (q *Queue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
