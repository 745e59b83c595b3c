package spool

import (
	"bytes"
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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

// Options configure a Queue. Zero values take the defaults shown.
type Options struct {
	Dir         string        // the spool directory; created with mode 0700 if missing (required)
	Hostname    string        // names this host in DSNs (MAILER-DAEMON@Hostname, Reporting-MTA); default os.Hostname()
	MinBackoff  time.Duration // delay before the first retry; default 30s
	MaxBackoff  time.Duration // longest delay between retries; default 30m
	MaxLifetime time.Duration // a recipient still pending after this long fails; default 120h
	Workers     int           // concurrent deliveries; default 20
	// DrainTimeout is how long Run waits, after its context ends, for
	// in-flight deliveries to finish before cancelling them; default 30s.
	DrainTimeout time.Duration
	Logger       *slog.Logger // default: discard

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
	switch {
	case o.MinBackoff < 0 || o.MaxBackoff < 0 || o.MaxLifetime < 0 || o.DrainTimeout < 0:
		return o, errors.New("spool: negative duration in options")
	case o.MaxBackoff < o.MinBackoff:
		return o, fmt.Errorf("spool: max backoff %s is shorter than min backoff %s", o.MaxBackoff, o.MinBackoff)
	case o.Workers < 0:
		return o, fmt.Errorf("spool: workers must be positive, not %d", o.Workers)
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
	closed   bool

	stats counters

	probe chan chan struct{} // liveness probes Run answers (Alive)
}

// item is one queued message.
type item struct {
	env      envelope // guarded by Queue.mu
	jl       *jloc    // where its message is in the journal; nil once it has its own files; guarded by Queue.mu
	index    int      // position in Queue.sched; -1 when not in it
	running  bool     // a delivery attempt owns it
	deleted  bool     // removed by Delete
	retryNow bool     // Retry was called while it was running

	// fileMu orders writes of the envelope with the removal of the files.
	fileMu sync.Mutex
}

type counters struct {
	accepted, delivered, deferred, failed, bounced, expired, quarantined, putFailures atomic.Uint64
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
	Queued      int    // items in the queue now (a gauge)
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
		Attempts: e.Attempts, NextAttempt: e.NextAttempt, LastError: e.LastError,
	}
	for _, r := range e.Recipients {
		in.Recipients = append(in.Recipients, RcptInfo{Address: r.Address, State: r.State, LastError: r.LastError})
	}
	return in
}

// Open opens the spool in opt.Dir, creating it (mode 0700) if needed, and
// locks it against other agents. It loads every complete item and schedules
// it, removes leftover temporary files, and moves incomplete or damaged items
// to the quarantine subdirectory, logging one line for each. Call Close when
// done.
func Open(opt Options) (*Queue, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	created := false
	if _, err := os.Stat(opt.Dir); errors.Is(err, fs.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(opt.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating spool directory: %w", err)
	}
	dirf, err := os.Open(opt.Dir)
	if err != nil {
		return nil, fmt.Errorf("opening spool directory: %w", err)
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
		probe: make(chan chan struct{}),
		items: make(map[string]*item),
	}
	if created {
		if err := q.st.syncDirPath(filepath.Dir(filepath.Clean(opt.Dir))); err != nil {
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

// addLoaded schedules an item found on disk, unless it is already there.
func (q *Queue) addLoaded(it *item) {
	q.mu.Lock()
	if _, dup := q.items[it.env.ID]; !dup {
		q.items[it.env.ID] = it
		heap.Push(&q.sched, it)
	}
	q.mu.Unlock()
	q.kick()
}

// itemFile splits a spool file name into an item ID and suffix (msgSuffix or
// envSuffix).
func itemFile(name string) (id, suffix string, ok bool) {
	for _, s := range []string{msgSuffix, envSuffix} {
		if id, found := strings.CutSuffix(name, s); found && validID(id) {
			return id, s, true
		}
	}
	return "", "", false
}

// load scans the spool directory and then the journal segments old that
// were there at Open, scheduling what it finds.
func (q *Queue) load(old []*segment) error {
	entries, err := os.ReadDir(q.opt.Dir)
	if err != nil {
		return fmt.Errorf("reading spool directory: %w", err)
	}
	type files struct{ msg, env bool }
	found := make(map[string]*files)
	fileItems := make(map[string]bool)
	var ids []string
	changed := false
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(q.opt.Dir, name)
		if (name == quarantineDir || name == journalDir) && e.IsDir() {
			continue
		}
		if base, ok := strings.CutSuffix(name, tmpSuffix); ok {
			if _, _, ok := itemFile(base); ok {
				// A Put or envelope rewrite that never finished: not
				// acknowledged (or superseded by the committed envelope).
				if err := os.Remove(path); err != nil {
					q.log.Error("spool: cannot remove leftover temporary file", "file", path, "err", err)
				} else {
					q.log.Info("spool: removed leftover temporary file", "file", path)
					changed = true
				}
				continue
			}
		}
		id, suffix, ok := itemFile(name)
		if !ok {
			q.log.Warn("spool: ignoring unknown file in spool directory", "file", path)
			continue
		}
		f := found[id]
		if f == nil {
			f = &files{}
			found[id] = f
			ids = append(ids, id)
		}
		if suffix == msgSuffix {
			f.msg = true
		} else {
			f.env = true
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		if q.loadQuit.Load() {
			return errors.New("stopped by Close")
		}
		f := found[id]
		msgPath, envPath := q.st.path(id, msgSuffix), q.st.path(id, envSuffix)
		var reason error
		var env *envelope
		switch {
		case !f.env:
			reason = errors.New("message file without an envelope (a Put that never completed, so never acknowledged)")
		case !f.msg:
			reason = fmt.Errorf("message file %s is missing", msgPath)
		default:
			env, reason = readEnvelopeFile(envPath)
			if reason == nil {
				reason = checkMessageFile(msgPath, id, env)
			}
		}
		if reason != nil {
			var paths []string
			if f.msg {
				paths = append(paths, msgPath)
			}
			if f.env {
				paths = append(paths, envPath)
			}
			q.quarantine(id, paths, reason)
			changed = true
			continue
		}
		fileItems[id] = true
		q.addLoaded(&item{env: *env, index: -1})
	}
	if changed {
		if err := q.st.dirSync.sync(); err != nil {
			return err
		}
	}
	return q.loadJournal(old, fileItems)
}

// loadJournal schedules the items the segments old hold. An item that
// also has its own files was moved out of the journal: its files win.
func (q *Queue) loadJournal(old []*segment, fileItems map[string]bool) error {
	defer q.j.adopted(old)
	scan := scanSegments(old)
	for seg := range scan.damagedSegments() {
		q.quarantineCopy(seg)
	}
	for _, d := range scan.damage {
		q.stats.quarantined.Add(1)
		q.log.Warn("spool: damaged journal record skipped; a copy of its segment is in quarantine",
			"file", d.seg, "offset", d.off, "id", d.id, "reason", d.reason)
	}
	for id, e := range scan.entries {
		if fileItems[id] {
			continue
		}
		q.j.mu.Lock()
		e.loc.seg.live++
		q.j.mu.Unlock()
		loc := e.loc
		q.addLoaded(&item{env: *e.env, jl: &loc, index: -1})
	}
	return nil
}

// quarantineCopy keeps a copy of a damaged journal segment in the
// quarantine directory (the segment itself stays: its other records are
// good).
func (q *Queue) quarantineCopy(path string) {
	qdir := filepath.Join(q.opt.Dir, quarantineDir)
	dst := filepath.Join(qdir, "journal-"+filepath.Base(path))
	for n := 1; ; n++ {
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = filepath.Join(qdir, fmt.Sprintf("journal-%s.%d", filepath.Base(path), n))
	}
	err := os.MkdirAll(qdir, 0o700)
	if err == nil {
		err = copyFile(path, dst)
	}
	if err == nil {
		err = q.st.syncDirPath(qdir)
	}
	if err != nil {
		q.log.Error("spool: cannot copy a damaged journal segment to quarantine", "file", path, "err", err)
		return
	}
	q.log.Info("spool: copied damaged journal segment to quarantine", "file", path, "copy", dst)
}

// copyFile copies src to a new file dst (mode 0600) and fsyncs it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkMessageFile checks that the message file of env is there with the
// size and, if the envelope records one, the SHA-256 the envelope records.
func checkMessageFile(path, id string, env *envelope) error {
	if env.ID != id {
		return fmt.Errorf("envelope id %s does not match its file name", env.ID)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("message file %s is not a regular file", path)
	}
	if fi.Size() != env.Size {
		return fmt.Errorf("message file %s has %d bytes, the envelope says %d", path, fi.Size(), env.Size)
	}
	if env.SHA256 == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sum := sha256.New()
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	if _, err := io.CopyBuffer(sum, f, *buf); err != nil {
		return fmt.Errorf("reading message file %s: %w", path, err)
	}
	if hex.EncodeToString(sum.Sum(nil)) != env.SHA256 {
		return fmt.Errorf("message file %s does not match the SHA-256 in its envelope (damaged on disk)", path)
	}
	return nil
}

// checkSum checks msg against the SHA-256 env records, if it records one.
func checkSum(msg []byte, env *envelope) error {
	if env.SHA256 == "" {
		return nil
	}
	sum := sha256.Sum256(msg)
	if hex.EncodeToString(sum[:]) != env.SHA256 {
		return fmt.Errorf("message of %s does not match the SHA-256 in its envelope (damaged on disk)", env.ID)
	}
	return nil
}

// quarantine moves an item's files to the quarantine directory and logs
// one line naming them. Nothing is deleted.
func (q *Queue) quarantine(id string, paths []string, reason error) {
	qdir := filepath.Join(q.opt.Dir, quarantineDir)
	fail := func(err error) {
		q.log.Error("spool: damaged item left in place: cannot quarantine it", "id", id, "files", paths, "reason", reason.Error(), "err", err)
	}
	if err := os.MkdirAll(qdir, 0o700); err != nil {
		fail(err)
		return
	}
	var moved []string
	for _, p := range paths {
		dst := filepath.Join(qdir, filepath.Base(p))
		for n := 1; ; n++ {
			if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
				break
			}
			dst = filepath.Join(qdir, fmt.Sprintf("%s.%d", filepath.Base(p), n))
		}
		if err := os.Rename(p, dst); err != nil {
			fail(err)
			return
		}
		moved = append(moved, dst)
	}
	if err := q.st.syncDirPath(qdir); err != nil {
		q.log.Error("spool: fsync of quarantine directory failed", "dir", qdir, "err", err)
	}
	q.stats.quarantined.Add(1)
	q.log.Warn("spool: quarantined damaged item", "id", id, "files", paths, "moved_to", moved, "reason", reason.Error())
}

// Put stores a message for delivery from from ("" for the null sender) to
// the recipients to, reading its body (header and body, CRLF line endings)
// from body as a stream. It returns the item's ID only once the message and
// its envelope are durable. On any failure it removes what it wrote and
// returns an error; an error from body is wrapped, so errors.Is and
// errors.As find it.
func (q *Queue) Put(ctx context.Context, from string, to []string, body io.Reader) (string, error) {
	id, size, err := q.put(ctx, from, to, body)
	if err != nil {
		q.stats.putFailures.Add(1)
		return "", err
	}
	q.stats.accepted.Add(1)
	q.log.Debug("spool: queued", "id", id, "from", from, "rcpts", len(to), "size", size) // the listener logs the acceptance
	return id, nil
}

// bodyReader remembers the error of the reader it wraps, so that Put can
// tell the sender's error from its own. It also hides io.WriterTo.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// copyBufs are the buffers bodies are copied to disk through.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (q *Queue) put(ctx context.Context, from string, to []string, body io.Reader) (id string, size int64, err error) {
	if err := checkAddress(from, true); err != nil {
		return "", 0, fmt.Errorf("sender %q: %w: %v", from, ErrBadAddress, err)
	}
	switch {
	case len(to) == 0:
		return "", 0, fmt.Errorf("no recipients: %w", ErrBadAddress)
	case len(to) > maxRecipients:
		return "", 0, fmt.Errorf("%d recipients, more than %d: %w", len(to), maxRecipients, ErrBadAddress)
	}
	for i, a := range to {
		if err := checkAddress(a, false); err != nil {
			return "", 0, fmt.Errorf("recipient %d %q: %w: %v", i+1, a, ErrBadAddress, err)
		}
	}
	q.mu.Lock()
	closed := q.closed
	q.mu.Unlock()
	if closed {
		return "", 0, ErrClosed
	}

	now := q.opt.testNow().UTC()
	id = newID(now)
	src := &bodyReader{r: body}

	// A message that fits in journalMaxMessage goes through the journal,
	// one record in a group commit; a bigger one is streamed to files of
	// its own.
	bb := bodyBufs.Get().(*bytes.Buffer)
	bb.Reset()
	defer func() {
		if bb.Cap() <= 2*journalMaxMessage {
			bodyBufs.Put(bb)
		}
	}()
	n, cerr := io.CopyN(bb, src, journalMaxMessage+1)
	switch {
	case src.err != nil:
		return "", 0, fmt.Errorf("reading message body: %w", src.err)
	case cerr != nil && cerr != io.EOF:
		return "", 0, fmt.Errorf("reading message body: %w", cerr)
	case ctx.Err() != nil:
		return "", 0, ctx.Err()
	}
	var it *item
	if n <= journalMaxMessage && !q.opt.testNoJournal {
		it, err = q.putJournal(id, now, from, to, bb.Bytes())
	} else {
		it, err = q.putFiles(ctx, id, now, from, to, io.MultiReader(bytes.NewReader(bb.Bytes()), src), src)
	}
	if err != nil {
		return "", 0, err
	}
	q.mu.Lock()
	q.items[id] = it
	heap.Push(&q.sched, it)
	q.mu.Unlock()
	q.kick()
	return id, it.env.Size, nil
}

// bodyBufs hold message bodies on their way into the journal.
var bodyBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// newEnvelope is the envelope of a message just received.
func newEnvelope(id string, now time.Time, from string, to []string, size int64, sum []byte) envelope {
	env := envelope{
		Version: envelopeVersion, ID: id, Received: now, From: from, Size: size,
		SHA256: hex.EncodeToString(sum), NextAttempt: now,
		Recipients: make([]recipient, len(to)),
	}
	for i, a := range to {
		env.Recipients[i] = recipient{Address: a, State: StatePending}
	}
	return env
}

// putJournal appends the message to the journal and returns once the
// group commit that carries it is durable.
func (q *Queue) putJournal(id string, now time.Time, from string, to []string, msg []byte) (*item, error) {
	sum := sha256.Sum256(msg)
	env := newEnvelope(id, now, from, to, int64(len(msg)), sum[:])
	// Compact JSON in the journal: it is read by sealrelay, not edited.
	data, err := json.Marshal(&env)
	if err != nil {
		return nil, fmt.Errorf("encoding envelope of %s: %w", id, err)
	}
	seg, off, err := q.j.append(messageRecord(data, msg), true)
	if err != nil {
		return nil, err
	}
	return &item{env: env, jl: &jloc{seg: seg, off: off + recHeaderLen + 4 + int64(len(data))}, index: -1}, nil
}

// putFiles streams the message to its own file and writes its envelope:
// each a temporary file, written, fsynced and renamed, then the directory
// fsynced. src is the body's reader, to tell its errors from the disk's.
func (q *Queue) putFiles(ctx context.Context, id string, now time.Time, from string, to []string, r io.Reader, src *bodyReader) (it *item, err error) {
	msgPath, envPath := q.st.path(id, msgSuffix), q.st.path(id, envSuffix)
	msgTmp, envTmp := msgPath+tmpSuffix, envPath+tmpSuffix
	defer func() {
		if err != nil {
			for _, p := range []string{envPath, msgPath, envTmp, msgTmp} {
				os.Remove(p)
			}
		}
	}()
	sum := sha256.New()
	var size int64
	err = q.st.writeFile(msgTmp, true, func(w io.Writer) error {
		buf := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(buf)
		// io.MultiWriter hides *os.File's ReadFrom, so buf is used.
		n, err := io.CopyBuffer(io.MultiWriter(w, sum), r, *buf)
		size = n
		switch {
		case src.err != nil:
			return fmt.Errorf("reading message body: %w", src.err)
		case err != nil:
			return fmt.Errorf("write %s: %w", msgTmp, err)
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	env := newEnvelope(id, now, from, to, size, sum.Sum(nil))
	data, err := env.marshal()
	if err != nil {
		return nil, err
	}
	err = q.st.writeFile(envTmp, true, func(w io.Writer) error {
		if _, err := w.Write(data); err != nil {
			return fmt.Errorf("write %s: %w", envTmp, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err = ctx.Err(); err != nil {
		return nil, err
	}
	if err = os.Rename(msgTmp, msgPath); err != nil {
		return nil, err
	}
	if err = os.Rename(envTmp, envPath); err != nil { // the commit point
		return nil, err
	}
	if err = q.st.dirSync.sync(); err != nil {
		return nil, err
	}
	return &item{env: env, index: -1}, nil
}

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
	msgTmp, envTmp := msgPath+tmpSuffix, envPath+tmpSuffix
	rc, err := jl.open(env.Size)
	if err != nil {
		return fmt.Errorf("moving %s out of the journal: %w", env.ID, err)
	}
	defer rc.Close()
	err = q.st.writeFile(msgTmp, false, func(w io.Writer) error {
		_, err := io.Copy(w, rc)
		return err
	})
	if err == nil {
		err = q.st.writeFile(envTmp, false, func(w io.Writer) error {
			_, err := w.Write(envData)
			return err
		})
	}
	if err == nil {
		err = os.Rename(msgTmp, msgPath)
	}
	if err == nil {
		err = os.Rename(envTmp, envPath)
	}
	if err == nil {
		err = q.st.dirSync.sync()
	}
	if err != nil {
		// The item stays in the journal, as it was; no half-moved files.
		for _, p := range []string{envPath, msgPath, envTmp, msgTmp} {
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
// that in its envelope.
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
	queued := len(q.items)
	q.mu.Unlock()
	c := &q.stats
	return Stats{
		Accepted: c.accepted.Load(), Delivered: c.delivered.Load(), Deferred: c.deferred.Load(),
		Failed: c.failed.Load(), Bounced: c.bounced.Load(), Expired: c.expired.Load(),
		Quarantined: c.quarantined.Load(), PutFailures: c.putFailures.Load(), Queued: queued,
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
