package maildrop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Queue is where taken messages go. agent/spool implements it.
type Queue interface {
	// Put stores the message durably and returns its id; it returns only
	// after the message is on stable storage.
	Put(ctx context.Context, from string, to []string, body io.Reader) (string, error)
}

// CheckAddress checks and normalizes an address as the listener does
// (smtpd.NormalizeAddress with SMTPUTF8 allowed); rcpt says which kind.
type CheckAddress func(addr string, rcpt bool) (string, error)

// Defaults for the zero fields of Options.
const (
	DefaultRescan    = 30 * time.Second
	DefaultStaleTemp = time.Hour
	workers          = 4
)

// Options configure a Pickup.
type Options struct {
	Dir      string
	Hostname string
	Policy   *Policy
	Queue    Queue
	Check    CheckAddress
	// MaxMessageBytes and MaxRecipients are the listener's limits, which
	// the maildrop keeps too.
	MaxMessageBytes int64
	MaxRecipients   int
	// Rescan is how often the whole maildrop is read again, besides the
	// file system events; default DefaultRescan.
	Rescan time.Duration
	// StaleTemp is the age at which a temporary file a sendmail left
	// behind (it died before renaming it) is removed; default
	// DefaultStaleTemp.
	StaleTemp time.Duration
	Logger    *slog.Logger
}

// Stats count what a Pickup did.
type Stats struct {
	Taken    uint64 // messages put into the spool
	Rejected uint64 // files renamed bad.NAME
	Rewrote  uint64 // messages whose -f sender the policy did not allow
}

// Pickup takes messages from the maildrop into the spool.
type Pickup struct {
	opt Options
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]bool // names queued for a worker or being taken
	skip    map[string]bool // names that could be neither removed nor renamed
	work    chan string

	taken, rejected, rewrote atomic.Uint64
}

// NewPickup returns a Pickup; Run starts it.
func NewPickup(opt Options) *Pickup {
	if opt.Rescan <= 0 {
		opt.Rescan = DefaultRescan
	}
	if opt.StaleTemp <= 0 {
		opt.StaleTemp = DefaultStaleTemp
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	return &Pickup{opt: opt, log: opt.Logger, pending: map[string]bool{}, skip: map[string]bool{}, work: make(chan string, 1024)}
}

// Stats returns the counters.
func (p *Pickup) Stats() Stats {
	return Stats{Taken: p.taken.Load(), Rejected: p.rejected.Load(), Rewrote: p.rewrote.Load()}
}

// Run takes in what the maildrop holds, then what arrives, until ctx
// ends; it returns once no message is being taken.
func (p *Pickup) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case name := <-p.work:
					p.take(ctx, name)
					p.mu.Lock()
					delete(p.pending, name)
					p.mu.Unlock()
				}
			}
		})
	}
	defer wg.Wait()

	var events chan fsnotify.Event
	var errs chan error
	w, err := fsnotify.NewWatcher()
	if err == nil {
		if err = w.Add(p.opt.Dir); err != nil {
			w.Close()
		}
	}
	rescan := p.opt.Rescan
	if err != nil {
		rescan = min(rescan, 2*time.Second)
		p.log.Warn("maildrop: cannot watch the directory; reading it every few seconds instead", "dir", p.opt.Dir, "err", err)
	} else {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	p.scan(ctx)
	tick := time.NewTicker(rescan)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.scan(ctx)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Events may have been lost (the kernel's queue overflowed):
			// read the whole directory.
			p.log.Warn("maildrop: watching the directory", "err", err)
			p.scan(ctx)
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Write) {
				p.offer(ctx, filepath.Base(ev.Name))
			}
		}
	}
}

// scan offers every message file of the maildrop, oldest first, and
// removes stale temporary files.
func (p *Pickup) scan(ctx context.Context) {
	ents, err := os.ReadDir(p.opt.Dir)
	if err != nil {
		p.log.Error("maildrop: cannot read the directory", "dir", p.opt.Dir, "err", err)
		return
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	for _, name := range names {
		if strings.HasPrefix(name, ".") {
			p.removeStale(name)
			continue
		}
		p.offer(ctx, name)
	}
}

// offer queues name for a worker unless it is not a message file or is
// queued already.
func (p *Pickup) offer(ctx context.Context, name string) {
	if strings.HasPrefix(name, ".") || strings.HasPrefix(name, badPrefix) {
		return
	}
	p.mu.Lock()
	if p.pending[name] || p.skip[name] {
		p.mu.Unlock()
		return
	}
	p.pending[name] = true
	p.mu.Unlock()
	select {
	case p.work <- name:
	case <-ctx.Done():
	}
}

// removeStale removes a temporary file older than StaleTemp: its sendmail
// died before finishing it, and nothing in it was acknowledged.
func (p *Pickup) removeStale(name string) {
	path := filepath.Join(p.opt.Dir, name)
	fi, err := os.Lstat(path)
	if err != nil || time.Since(fi.ModTime()) < p.opt.StaleTemp {
		return
	}
	if err := os.Remove(path); err == nil {
		p.log.Info("maildrop: removed a temporary file a sendmail left behind", "file", name, "age", time.Since(fi.ModTime()).Round(time.Second))
	}
}

// rejection is why a file cannot be taken: it is renamed bad.NAME.
type rejection struct{ reason string }

func (r *rejection) Error() string { return r.reason }

func reject(format string, args ...any) error { return &rejection{fmt.Sprintf(format, args...)} }

// take takes one file: reads and checks it, puts its message into the
// spool, and removes it; or renames it bad.NAME.
func (p *Pickup) take(ctx context.Context, name string) {
	path := filepath.Join(p.opt.Dir, name)
	uid, id, err := p.put(ctx, name, path)
	var rj *rejection
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return // gone: taken by an earlier event, or removed by its owner
	case errors.As(err, &rj):
		p.rejected.Add(1)
		bad := filepath.Join(p.opt.Dir, badPrefix+name)
		p.log.Warn("maildrop: file refused, renamed", "file", name, "to", badPrefix+name, "uid", uid, "reason", rj.reason)
		if rerr := os.Rename(path, bad); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			p.log.Error("maildrop: cannot rename a refused file; ignoring it until the agent restarts", "file", name, "err", rerr)
			p.noteSkip(name)
		}
		return
	case err != nil:
		// The spool could not take it (disk full?): the file stays, and
		// the next rescan tries again.
		p.log.Error("maildrop: cannot queue a message; will try again", "file", name, "uid", uid, "err", err)
		return
	}
	p.taken.Add(1)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		p.log.Error("maildrop: queued a message but cannot remove its file; ignoring it until the agent restarts, which may send it again", "file", name, "id", id, "err", err)
		p.noteSkip(name)
	}
}

func (p *Pickup) noteSkip(name string) {
	p.mu.Lock()
	p.skip[name] = true
	p.mu.Unlock()
}

// put reads, checks and queues the file at path. A *rejection says the
// file will never do.
func (p *Pickup) put(ctx context.Context, name, path string) (uid int, id string, err error) {
	uid = -1
	// O_NONBLOCK: a FIFO must not block the open; O_NOFOLLOW: a symlink
	// is refused, never followed.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return uid, "", err
	case errors.Is(err, unix.ELOOP):
		return uid, "", reject("a symlink")
	case err != nil:
		return uid, "", reject("cannot open it: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return uid, "", reject("cannot stat it: %v", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	uid = int(st.Uid)
	limit := p.opt.MaxMessageBytes + maxEnvelope + int64(len(magic)) + 1
	switch {
	case !fi.Mode().IsRegular():
		return uid, "", reject("not a regular file (%s)", fi.Mode().Type())
	case st.Nlink != 1:
		return uid, "", reject("has %d links", st.Nlink)
	case fi.Size() > limit:
		return uid, "", reject("%d bytes, more than the largest message (listen.max_message_bytes) allows", fi.Size())
	}
	data, err := readLimited(f, limit)
	if err != nil {
		return uid, "", reject("reading it: %v", err)
	}
	env, msg, err := parse(data)
	if err != nil {
		return uid, "", reject("%v", err)
	}
	sender, rcpts, u, err := p.envelope(uid, env)
	if err != nil {
		return uid, "", err
	}
	if int64(len(msg)) > p.opt.MaxMessageBytes {
		return uid, "", reject("the message has %d bytes, more than listen.max_message_bytes", len(msg))
	}
	if err := checkMessage(msg); err != nil {
		return uid, "", reject("%v", err)
	}
	hdr := stamp{hostname: p.opt.Hostname, uid: uid, login: u.Name, sender: sender, fullName: env.FullName,
		id: strings.TrimPrefix(name, msgPrefix), now: time.Now()}.headers(msg)
	id, err = p.opt.Queue.Put(ctx, sender, rcpts, io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(msg)))
	if err != nil {
		return uid, "", fmt.Errorf("spool: %w", err)
	}
	p.log.Info("message queued", "maildrop", name, "id", id, "uid", uid, "user", u.Name, "from", sender, "recipients", len(rcpts))
	return uid, id, nil
}

// envelope checks env from uid and returns the envelope sender the policy
// gives, the recipients, qualified and checked, and the user.
func (p *Pickup) envelope(uid int, env Envelope) (string, []string, *User, error) {
	u, err := LookupUser(uid)
	if err != nil {
		return "", nil, nil, reject("%v", err)
	}
	if len(env.FullName) > 256 || strings.ContainsFunc(env.FullName, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", nil, nil, reject("full name longer than 256 bytes or with a control character")
	}
	if len(env.Recipients) == 0 {
		return "", nil, nil, reject("no recipients")
	}
	if len(env.Recipients) > p.opt.MaxRecipients {
		return "", nil, nil, reject("%d recipients, more than listen.max_recipients (%d)", len(env.Recipients), p.opt.MaxRecipients)
	}
	sender, ok := p.opt.Policy.Sender(u, env.Sender)
	if !ok {
		p.rewrote.Add(1)
		p.log.Warn("maildrop: sender not allowed for this user; sending as the user's own address ([[sendmail.allow]] allows others)",
			"uid", uid, "user", u.Name, "asked", *env.Sender, "from", sender)
	}
	if sender != "" {
		if sender, err = p.opt.Check(sender, false); err != nil {
			return "", nil, nil, reject("sender: %v", err)
		}
	}
	var rcpts []string
	for _, r := range env.Recipients {
		a, err := p.opt.Check(p.opt.Policy.Qualify(r), true)
		if err != nil {
			return "", nil, nil, reject("recipient %q: %v", r, err)
		}
		if !slices.Contains(rcpts, a) {
			rcpts = append(rcpts, a)
		}
	}
	return sender, rcpts, u, nil
}
