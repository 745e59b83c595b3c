package spool

import (
	"container/heap"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Queue. Zero values take the defaults named.
type Options struct {
	// Dir is the spool directory, created with mode 0700 if missing
	// (required). It and the directory holding it (the agent's data_dir)
	// must belong to the user the process runs as and be writable by no
	// one else; Open refuses them otherwise.
	Dir         string
	Hostname    string        // names this host in DSNs (MAILER-DAEMON@Hostname, Reporting-MTA); default os.Hostname()
	MinBackoff  time.Duration // delay before the first retry; default DefaultMinBackoff
	MaxBackoff  time.Duration // longest delay between retries; default DefaultMaxBackoff
	MaxLifetime time.Duration // a recipient still pending after this long fails; default DefaultMaxLifetime
	Workers     int           // concurrent deliveries; default DefaultWorkers
	// DrainTimeout is how long Run waits, after its context ends, for
	// in-flight deliveries to finish before cancelling them; default
	// DefaultDrainTimeout.
	DrainTimeout time.Duration
	Logger       *slog.Logger // default: discard
	// MemoryBudget bounds the bytes of message bodies held in memory at
	// once by the Puts in progress; a message that does not fit streams to
	// a file of its own instead (see membuf.go). Default
	// DefaultMemoryBudget.
	MemoryBudget int64

	// TestHookBeforeSync is a test seam, not a feature: if set, it is called
	// before every fsync the spool makes, with the path of the file or
	// directory, and an error it returns is taken as that fsync's failure
	// (a disk-full test returns syscall.ENOSPC). Leave it nil.
	TestHookBeforeSync func(path string) error

	// Test seams for this package's tests: the clock and the jitter source
	// (a value in [0, 1)), nil meaning time.Now and math/rand; and a
	// function called after each delivery attempt has been recorded.
	testNow       func() time.Time
	testRand      func() float64
	testProcessed func(id string)
	// testNoJournal sends every message to files of its own, for tests of
	// that path.
	testNoJournal bool
}

// Defaults for Options.
const (
	DefaultMinBackoff   = 30 * time.Second
	DefaultMaxBackoff   = 30 * time.Minute
	DefaultMaxLifetime  = 120 * time.Hour
	DefaultWorkers      = 20
	DefaultDrainTimeout = 30 * time.Second
	DefaultMemoryBudget = 32 << 20
)

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, errors.New("spool: no directory given")
	}
	if o.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		o.Hostname = h
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.MinBackoff, DefaultMinBackoff)
	def(&o.MaxBackoff, DefaultMaxBackoff)
	def(&o.MaxLifetime, DefaultMaxLifetime)
	def(&o.DrainTimeout, DefaultDrainTimeout)
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.MemoryBudget == 0 {
		o.MemoryBudget = DefaultMemoryBudget
	}
	switch {
	case o.MinBackoff < 0 || o.MaxBackoff < 0 || o.MaxLifetime < 0 || o.DrainTimeout < 0:
		return o, errors.New("spool: negative duration in options")
	case o.MaxBackoff < o.MinBackoff:
		return o, fmt.Errorf("spool: max backoff %s is shorter than min backoff %s", o.MaxBackoff, o.MinBackoff)
	case o.Workers < 0:
		return o, fmt.Errorf("spool: workers must be positive, not %d", o.Workers)
	case o.MemoryBudget < 0:
		return o, fmt.Errorf("spool: memory budget must be positive, not %d", o.MemoryBudget)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.testNow == nil {
		o.testNow = time.Now
	}
	if o.testRand == nil {
		o.testRand = rand.Float64
	}
	return o, nil
}

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
}

// item is one queued message.
type item struct {
	env      envelope // guarded by Queue.mu
	jl       *jloc    // where its message is in the journal; nil once it has its own files; guarded by Queue.mu
	index    int      // position in Queue.sched; -1 when not in it
	running  bool     // a delivery attempt owns it
	deleted  bool     // removed by Delete
	retryNow bool     // Retry was called while it was running
	// held: it failed and no DSN can be sent for it (see envelope.held);
	// it stays, out of the schedule, until deleted or retried by ID.
	held bool

	// fileMu orders writes of the envelope with the removal of the files.
	fileMu sync.Mutex
}

type counters struct {
	accepted, delivered, deferred, failed, bounced, expired, quarantined, putFailures, spilled atomic.Uint64
}

// Stats are the queue's counters since Open, and the number of items queued.
type Stats struct {
	Accepted    uint64 // messages accepted by Put
	Delivered   uint64 // recipients delivered
	Deferred    uint64 // recipient attempts that failed temporarily
	Failed      uint64 // recipients that failed: permanently or by expiry
	Bounced     uint64 // DSNs generated
	Expired     uint64 // recipients that expired at MaxLifetime (also in Failed)
	Quarantined uint64 // damaged items moved to quarantine at Open
	PutFailures uint64 // Puts that returned an error
	Spilled     uint64 // messages streamed to their own file as they arrived: too big for the journal or the memory budget
	Queued      int    // items in the queue now, Held included (a gauge)
	Held        int    // items kept in the failed state, no DSN possible (a gauge)
	Buffered    int64  // bytes of memory held for messages being received (a gauge; at most Options.MemoryBudget)
}

// Info describes a queued item.
type Info struct {
	ID          string
	Received    time.Time
	Size        int64
	From        string // "" is the null sender
	Recipients  []RcptInfo
	Attempts    int
	NextAttempt time.Time
	LastError   string
	// Held: the item failed and no DSN can be sent for it (its sender is
	// the null sender, as a DSN's is). It stays in the queue, never tried
	// again, until it is deleted (or retried by its ID).
	Held bool
}

// RcptInfo is one recipient of an item.
type RcptInfo struct {
	Address   string
	State     State
	LastError string
}

func infoOf(e *envelope) Info {
	in := Info{
		ID: e.ID, Received: e.Received, Size: e.Size, From: e.From,
		Attempts: e.Attempts, NextAttempt: e.NextAttempt, LastError: e.LastError, Held: e.held(),
	}
	for _, r := range e.Recipients {
		in.Recipients = append(in.Recipients, RcptInfo{Address: r.Address, State: r.State, LastError: r.LastError})
	}
	return in
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
		st:    newStore(opt.Dir, dirf, opt.TestHookBeforeSync),
		wake:  make(chan struct{}, 1),
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

// opener returns how to read it's message. Call with q.mu held.
func (q *Queue) opener(it *item) func() (io.ReadCloser, error) {
	if it.jl != nil {
		loc, size := *it.jl, it.env.Size
		return func() (io.ReadCloser, error) { return loc.open(size) }
	}
	path := q.st.path(it.env.ID, msgSuffix)
	return func() (io.ReadCloser, error) { return os.Open(path) }
}

// kick wakes Run to look at the schedule again.
func (q *Queue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// writeEnvelope atomically rewrites the envelope file of it from its state
// in memory, unless the item was deleted.
func (q *Queue) writeEnvelope(it *item) error {
	it.fileMu.Lock()
	defer it.fileMu.Unlock()
	q.mu.Lock()
	if it.deleted {
		q.mu.Unlock()
		return nil
	}
	env := it.env.clone()
	jl := it.jl
	q.mu.Unlock()
	data, err := env.marshal()
	if err != nil {
		return err
	}
	if jl != nil {
		return q.moveOut(it, jl, &env, data)
	}
	if err := q.st.replace(q.st.path(env.ID, envSuffix), data); err != nil {
		return fmt.Errorf("rewriting envelope of %s: %w", env.ID, err)
	}
	return nil
}

// moveOut gives a journaled item files of its own (its message, then its
// new envelope, each durable) before its envelope changes, and then lets
// the journal forget it. Call with it.fileMu held.
func (q *Queue) moveOut(it *item, jl *jloc, env *envelope, envData []byte) error {
	msgPath, envPath := q.st.path(env.ID, msgSuffix), q.st.path(env.ID, envSuffix)
	rc, err := jl.open(env.Size)
	if err != nil {
		return fmt.Errorf("moving %s out of the journal: %w", env.ID, err)
	}
	defer rc.Close()
	err = q.st.write(msgPath, func(w io.Writer) error {
		buf := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(buf)
		_, err := io.CopyBuffer(w, rc, *buf)
		return err
	})
	if err == nil {
		err = q.st.replace(envPath, envData)
	}
	if err != nil {
		// The item stays in the journal, as it was; no half-moved files.
		for _, p := range []string{envPath, msgPath} {
			os.Remove(p)
		}
		return fmt.Errorf("moving %s out of the journal: %w", env.ID, err)
	}
	q.mu.Lock()
	it.jl = nil
	q.mu.Unlock()
	q.j.note(encodeRecord(kindMoved, []byte(env.ID)))
	q.j.release(jl.seg)
	return nil
}

// removeFiles deletes an item's files, the envelope first: once it is gone
// the item no longer exists.
func (q *Queue) removeFiles(it *item, id string) error {
	it.fileMu.Lock()
	defer it.fileMu.Unlock()
	q.mu.Lock()
	jl := it.jl
	it.jl = nil
	q.mu.Unlock()
	if jl != nil {
		// Not fsynced: if the D record is lost, the item is delivered
		// again after a crash, never lost.
		q.j.note(encodeRecord(kindDone, []byte(id)))
		q.j.release(jl.seg)
		return nil
	}
	return q.st.remove(q.st.path(id, envSuffix), q.st.path(id, msgSuffix))
}

// List returns every queued item, oldest first. It waits until the items
// found at Open are loaded.
func (q *Queue) List() []Info {
	<-q.loaded
	q.mu.Lock()
	out := make([]Info, 0, len(q.items))
	for _, it := range q.items {
		out = append(out, infoOf(&it.env))
	}
	q.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Retry makes the item id, or every item if id is "", due now, and records
// that in its envelope. A held item (Info.Held) is retried only when named
// by its ID: its failed recipients become pending again.
func (q *Queue) Retry(id string) error {
	<-q.loaded
	now := q.opt.testNow().UTC()
	var write []*item
	q.mu.Lock()
	var targets []*item
	if id == "" {
		for _, it := range q.items {
			targets = append(targets, it)
		}
	} else {
		it, ok := q.items[id]
		if !ok {
			q.mu.Unlock()
			return fmt.Errorf("retry %s: %w", id, ErrNotFound)
		}
		targets = append(targets, it)
	}
	for _, it := range targets {
		if it.running {
			it.retryNow = true
			continue
		}
		if it.held {
			if id == "" {
				continue // a held item is retried only by its ID
			}
			q.release(it)
			write = append(write, it)
			continue
		}
		it.env.NextAttempt = now
		if it.index >= 0 {
			heap.Fix(&q.sched, it.index)
		}
		if it.jl == nil { // a journaled item has never been tried: nothing to record
			write = append(write, it)
		}
	}
	q.mu.Unlock()
	q.kick()
	var errs []error
	for _, it := range write {
		if err := q.writeEnvelope(it); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// release makes the held item it's failed recipients pending again and
// schedules it now. Call with q.mu held.
func (q *Queue) release(it *item) {
	for i := range it.env.Recipients {
		if r := &it.env.Recipients[i]; r.State == StateFailed {
			r.State, r.Status = StatePending, ""
		}
	}
	it.held = false
	q.held--
	it.env.NextAttempt = q.opt.testNow().UTC()
	heap.Push(&q.sched, it)
	q.log.Info("spool: held item released by operator", "id", it.env.ID)
}

// Delete removes the item id from the queue and the disk. A delivery in
// progress for it finishes, but its result is dropped.
func (q *Queue) Delete(id string) error {
	<-q.loaded
	q.mu.Lock()
	it, ok := q.items[id]
	if !ok {
		q.mu.Unlock()
		return fmt.Errorf("delete %s: %w", id, ErrNotFound)
	}
	it.deleted = true
	delete(q.items, id)
	if it.index >= 0 {
		heap.Remove(&q.sched, it.index)
	}
	if it.held {
		it.held = false
		q.held--
	}
	q.mu.Unlock()
	if err := q.removeFiles(it, id); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	q.log.Info("spool: deleted by operator", "id", id)
	return nil
}

// Stats returns the counters and the number of queued items.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	queued, held := len(q.items), q.held
	q.mu.Unlock()
	c := &q.stats
	return Stats{
		Accepted: c.accepted.Load(), Delivered: c.delivered.Load(), Deferred: c.deferred.Load(),
		Failed: c.failed.Load(), Bounced: c.bounced.Load(), Expired: c.expired.Load(),
		Quarantined: c.quarantined.Load(), PutFailures: c.putFailures.Load(), Spilled: c.spilled.Load(),
		Queued: queued, Held: held, Buffered: q.mem.used.Load(),
	}
}

// ReadDir lists the items of the spool in dir without opening it as a
// queue: it takes no lock, changes nothing and is safe while an agent runs.
// It returns the items it could read, oldest first, and an error naming
// each envelope it could not.
func ReadDir(dir string) ([]Info, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading spool directory: %w", err)
	}
	var out []Info
	var errs []error
	for _, e := range entries {
		id, suffix, ok := itemFile(e.Name())
		if !ok || suffix != envSuffix {
			continue
		}
		env, err := readEnvelopeFile(filepath.Join(dir, e.Name()))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // delivered and removed since the listing
		case err != nil:
			errs = append(errs, err)
			continue
		case env.ID != id:
			errs = append(errs, &EnvelopeError{File: filepath.Join(dir, e.Name()), Field: "id",
				Err: fmt.Errorf("%s does not match the file name", env.ID)})
			continue
		}
		out = append(out, infoOf(env))
	}
	if scan, err := scanJournal(filepath.Join(dir, journalDir)); err != nil {
		errs = append(errs, err)
	} else {
		have := map[string]bool{}
		for _, in := range out {
			have[in.ID] = true
		}
		for id, e := range scan.entries {
			if !have[id] {
				out = append(out, infoOf(e.env))
			}
		}
		for _, d := range scan.damage {
			errs = append(errs, fmt.Errorf("journal segment %s: record at offset %d: %s", d.seg, d.off, d.reason))
		}
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.ID, b.ID) })
	return out, errors.Join(errs...)
}
