package secrets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUnavailable is wrapped by Get errors when a credential has never been
// read successfully.
var ErrUnavailable = errors.New("credential unavailable")

// UnavailableError says why a credential cannot be handed out.
type UnavailableError struct {
	Name string
	Err  error // the last error from the source, or nil if no load was tried
}

func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("credential %q unavailable: not loaded yet", e.Name)
	}
	return fmt.Sprintf("credential %q unavailable: %v", e.Name, e.Err)
}

// Unwrap returns ErrUnavailable and the source's error.
func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// StoreOptions tunes a Store. The zero value gives the defaults.
type StoreOptions struct {
	// PollInterval is how often a VersionSource is polled, and how often a
	// Store with no credentials retries its source. Default 30s.
	PollInterval time.Duration
	// RefreshInterval is the least time between two refreshes of one entry
	// triggered by Refresh (a 535 from the relay). Default 1s.
	RefreshInterval time.Duration
	// Debounce is how long a WatchSource change is let settle before the
	// Store reloads. Default 100ms.
	Debounce time.Duration
	// Logger receives state changes; default slog.Default().
	Logger *slog.Logger
}

// Stats counts what a Store did.
type Stats struct {
	Loads        uint64 // successful fetches (full or partial)
	LoadFailures uint64 // failed fetches; the old credentials were kept
	Changes      uint64 // entries whose username or password changed
}

// Store holds the current credentials for a fixed set of entry names.
//
// Readers never block on the source: Get reads an atomically swapped map.
// A failed load keeps the credentials that were there, logs why once per
// change of state, and counts the failure.
type Store struct {
	src   Source
	names []string
	opt   StoreOptions
	log   *slog.Logger

	cur atomic.Pointer[map[string]Credential]
	// since is when each entry of cur got its generation and secret;
	// swapped with cur, under mu.
	since atomic.Pointer[map[string]time.Time]

	mu          sync.Mutex // serializes fetches and swaps
	lastErr     error
	lastErrText string
	lastRefresh map[string]time.Time

	loads, failures, changes atomic.Uint64
}

// NewStore returns a Store for the named entries of src. It holds nothing
// until Load succeeds.
func NewStore(src Source, names []string, opt StoreOptions) *Store {
	if opt.PollInterval <= 0 {
		opt.PollInterval = 30 * time.Second
	}
	if opt.RefreshInterval <= 0 {
		opt.RefreshInterval = time.Second
	}
	if opt.Debounce <= 0 {
		opt.Debounce = 100 * time.Millisecond
	}
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	s := &Store{src: src, names: names, opt: opt, log: log, lastRefresh: map[string]time.Time{}}
	empty := map[string]Credential{}
	s.cur.Store(&empty)
	noTimes := map[string]time.Time{}
	s.since.Store(&noTimes)
	return s
}

// Names returns the entry names the Store holds.
func (s *Store) Names() []string { return slices.Clone(s.names) }

// Source returns the Store's source.
func (s *Store) Source() Source { return s.src }

// Get returns the current credential for name, or an *UnavailableError.
func (s *Store) Get(name string) (Credential, error) {
	if c, ok := (*s.cur.Load())[name]; ok {
		return c, nil
	}
	s.mu.Lock()
	err := s.lastErr
	s.mu.Unlock()
	return Credential{}, &UnavailableError{Name: name, Err: err}
}

// Ready reports whether every entry has been loaded.
func (s *Store) Ready() bool { return len(*s.cur.Load()) == len(s.names) }

// Err returns the error of the last failed load, or nil if the last load
// succeeded.
func (s *Store) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Stats returns the Store's counters.
func (s *Store) Stats() Stats {
	return Stats{Loads: s.loads.Load(), LoadFailures: s.failures.Load(), Changes: s.changes.Load()}
}

// Load fetches every entry and swaps them in. On failure the Store keeps
// what it had and Load returns the error.
func (s *Store) Load(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetchLocked(ctx, s.names, "reload")
}

// Refresh re-reads one entry after the relay rejected stale (a 535). If the
// Store already holds a different version than stale, or refreshed name
// within the last RefreshInterval, it returns what it holds without asking
// the source again.
func (s *Store) Refresh(ctx context.Context, name string, stale Credential) (Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := (*s.cur.Load())[name]; ok && !c.SameSecret(stale) {
		return c, nil
	}
	if t, ok := s.lastRefresh[name]; !ok || time.Since(t) >= s.opt.RefreshInterval {
		s.lastRefresh[name] = time.Now()
		if err := s.fetchLocked(ctx, []string{name}, "refresh"); err != nil {
			return Credential{}, err
		}
	}
	if c, ok := (*s.cur.Load())[name]; ok {
		return c, nil
	}
	return Credential{}, &UnavailableError{Name: name, Err: s.lastErr}
}

// fetchLocked fetches names and merges them into the current map.
func (s *Store) fetchLocked(ctx context.Context, names []string, why string) error {
	got, err := s.src.Fetch(ctx, names)
	if err == nil {
		for _, n := range names {
			if _, ok := got[n]; !ok {
				err = &NotFoundError{Source: s.src.String(), Name: n}
				break
			}
		}
	}
	if err != nil {
		s.failures.Add(1)
		s.setErrLocked(err, why)
		return err
	}
	s.loads.Add(1)
	old := *s.cur.Load()
	next := maps.Clone(old)
	since := maps.Clone(*s.since.Load())
	now := time.Now()
	for _, n := range names {
		c := got[n]
		c.Name = n
		prev, ok := old[n]
		if ok && !prev.SameSecret(c) {
			s.changes.Add(1)
			s.log.Info("credential changed", "credential", n, "username", c.Username, "version", c.Version,
				"generation", c.Generation, "source", s.src.String())
		}
		if !ok || !prev.SameSecret(c) || prev.Generation != c.Generation {
			since[n] = now
		}
		next[n] = c
	}
	s.since.Store(&since)
	s.cur.Store(&next)
	s.setErrLocked(nil, why)
	return nil
}

// setErrLocked records the outcome of a load and logs it when the state
// changes, not on every attempt.
func (s *Store) setErrLocked(err error, why string) {
	text := ""
	if err != nil {
		text = err.Error()
	}
	if text != s.lastErrText {
		switch {
		case err != nil && len(*s.cur.Load()) > 0:
			s.log.Warn("credential "+why+" failed; keeping the credentials already loaded", "source", s.src.String(), "err", text)
		case err != nil:
			s.log.Error("credentials unavailable; deliveries that need them are deferred", "source", s.src.String(), "err", text)
		default:
			s.log.Info("credentials readable again", "source", s.src.String())
		}
	}
	s.lastErr, s.lastErrText = err, text
}

// Start starts the source, if it has a lifecycle of its own (a Starter),
// for as long as ctx lasts, and returns the error of its first attempt
// (Vault: the first login). The source keeps trying in the background
// either way; until it succeeds, Load fails. Call it once, before Load and
// Run.
func (s *Store) Start(ctx context.Context) error {
	if st, ok := s.src.(Starter); ok {
		return st.Start(ctx)
	}
	return nil
}

// Run keeps the Store current until ctx ends: it reloads when a
// WatchSource reports a change, polls a VersionSource every PollInterval,
// and retries the source every PollInterval while the last load failed.
func (s *Store) Run(ctx context.Context) {
	var changed chan struct{}
	if w, ok := s.src.(WatchSource); ok {
		changed = make(chan struct{}, 1)
		go func() {
			for ctx.Err() == nil {
				if err := w.Watch(ctx, changed); err != nil && ctx.Err() == nil {
					s.log.Warn("watching credential source failed; retrying", "source", s.src.String(), "err", err)
					select {
					case <-ctx.Done():
					case <-time.After(s.opt.PollInterval):
					}
				}
			}
		}()
	}
	tick := time.NewTicker(s.opt.PollInterval)
	defer tick.Stop()
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			debounce = time.After(s.opt.Debounce)
		case <-debounce:
			debounce = nil
			s.Load(ctx) //nolint:errcheck // logged and counted by Load
		case <-tick.C:
			s.poll(ctx)
		}
	}
}

// poll checks versions where the source can, and retries a failed load.
func (s *Store) poll(ctx context.Context) {
	if s.Err() != nil || !s.Ready() {
		s.Load(ctx) //nolint:errcheck // logged and counted by Load
		return
	}
	vs, ok := s.src.(VersionSource)
	if !ok {
		return
	}
	versions, err := vs.Versions(ctx, s.names)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failures.Add(1)
		s.setErrLocked(err, "version check")
		return
	}
	cur := *s.cur.Load()
	var stale []string
	for _, n := range s.names {
		if c, ok := cur[n]; !ok || c.Version != versions[n] {
			stale = append(stale, n)
		}
	}
	if len(stale) > 0 {
		s.fetchLocked(ctx, stale, "reload") //nolint:errcheck // logged and counted
	} else {
		s.setErrLocked(nil, "version check")
	}
}
