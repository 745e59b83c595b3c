package secrets

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// fakeSource is a Source whose content and failures the test sets. It
// records every Fetch.
type fakeSource struct {
	mu       sync.Mutex
	creds    map[string]Credential
	versions map[string]string
	err      error
	fetches  [][]string
}

func newFake() *fakeSource {
	return &fakeSource{creds: map[string]Credential{}, versions: map[string]string{}}
}

func (f *fakeSource) set(name, user, pass, version string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creds[name] = NewCredential(name, user, pass, version)
	f.versions[name] = version
}

func (f *fakeSource) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeSource) fetched() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.fetches)
}

func (f *fakeSource) Fetch(ctx context.Context, names []string) (map[string]Credential, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches = append(f.fetches, slices.Clone(names))
	if f.err != nil {
		return nil, f.err
	}
	out := map[string]Credential{}
	for _, n := range names {
		c, ok := f.creds[n]
		if !ok {
			return nil, &NotFoundError{Source: f.String(), Name: n}
		}
		out[n] = c
	}
	return out, nil
}

func (f *fakeSource) String() string { return "fake source" }

// versionSource adds cheap version checks.
type versionSource struct {
	*fakeSource
	versionCalls int
}

func (v *versionSource) Versions(ctx context.Context, names []string) (map[string]string, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.versionCalls++
	if v.err != nil {
		return nil, v.err
	}
	out := map[string]string{}
	for _, n := range names {
		out[n] = v.versions[n]
	}
	return out, nil
}

// watchSource reports a change whenever the test sends on poke.
type watchSource struct {
	*fakeSource
	poke chan struct{}
}

func (w *watchSource) Watch(ctx context.Context, changed chan<- struct{}) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.poke:
			changed <- struct{}{}
		}
	}
}

// logBuffer is a goroutine-safe log sink.
type logBuffer = testlib.LogBuf

func newStore(src Source, names []string, opt StoreOptions) (*Store, *logBuffer) {
	logs := &logBuffer{}
	opt.Logger = slog.New(slog.NewTextHandler(logs, nil))
	return NewStore(src, names, opt), logs
}

func TestStoreGetBeforeLoad(t *testing.T) {
	s, _ := newStore(newFake(), []string{"primary"}, StoreOptions{})
	_, err := s.Get("primary")
	var ue *UnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnavailable) || ue.Err != nil {
		t.Fatalf("Get before Load = %v, want *UnavailableError with no cause", err)
	}
	if err.Error() != `credential "primary" unavailable: not loaded yet` {
		t.Errorf("error = %q", err)
	}
	if s.Ready() {
		t.Error("Ready before any load")
	}
}

func TestStoreGetAfterFailedLoad(t *testing.T) {
	src := newFake()
	cause := errors.New("age file /x: not among the recipients")
	src.fail(cause)
	s, _ := newStore(src, []string{"primary"}, StoreOptions{})
	if err := s.Load(context.Background()); !errors.Is(err, cause) {
		t.Fatalf("Load = %v", err)
	}
	_, err := s.Get("primary")
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, cause) {
		t.Fatalf("Get = %v, want unavailable wrapping the load's error", err)
	}
	if want := `credential "primary" unavailable: age file /x: not among the recipients`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestStoreLoadAndFailureKeepsOld(t *testing.T) {
	src := newFake()
	src.set("primary", "a@example.com", "first", "v1")
	src.set("secondary", "b@example.com", "second", "v1")
	s, _ := newStore(src, []string{"secondary", "primary", "primary"}, StoreOptions{})
	if got := s.Names(); !slices.Equal(got, []string{"primary", "secondary"}) {
		t.Errorf("Names = %v", got)
	}
	if err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !s.Ready() || s.Err() != nil {
		t.Fatalf("Ready %v, Err %v after a good load", s.Ready(), s.Err())
	}
	c, err := s.Get("primary")
	if err != nil || c.Password() != "first" || c.Version != "v1" || c.Name != "primary" {
		t.Fatalf("Get = %v, %v", c, err)
	}

	src.fail(errors.New("file damaged"))
	if err := s.Load(context.Background()); err == nil {
		t.Fatal("Load succeeded while the source fails")
	}
	c, err = s.Get("primary")
	if err != nil || c.Password() != "first" {
		t.Fatalf("after a failed load Get = %v, %v; want the old credential", c, err)
	}
	if s.Err() == nil || s.Err().Error() != "file damaged" {
		t.Errorf("Err = %v", s.Err())
	}
	if st := s.Stats(); st.Loads != 1 || st.LoadFailures != 1 || st.Changes != 0 {
		t.Errorf("Stats = %+v, want 1 load, 1 failure, 0 changes", st)
	}

	src.fail(nil)
	src.set("primary", "a@example.com", "rotated", "v2")
	if err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, _ = s.Get("primary")
	if c.Password() != "rotated" || c.Version != "v2" {
		t.Errorf("after rotation Get = %v", c)
	}
	if st := s.Stats(); st.Loads != 2 || st.Changes != 1 || s.Err() != nil {
		t.Errorf("Stats = %+v, Err %v; want 2 loads, 1 change, no error", st, s.Err())
	}
}

func TestStoreMissingEntryFailsWholeLoad(t *testing.T) {
	src := newFake()
	src.set("primary", "a", "p", "v1")
	s, _ := newStore(src, []string{"primary", "secondary"}, StoreOptions{})
	err := s.Load(context.Background())
	var nf *NotFoundError
	if !errors.As(err, &nf) || nf.Name != "secondary" {
		t.Fatalf("Load = %v, want NotFoundError for secondary", err)
	}
	if _, err := s.Get("primary"); err == nil {
		t.Error("a failed load handed out part of its result")
	}
}

// sourceIgnoringMissing returns what it has without complaining, as a buggy
// backend might: the Store must notice the missing name itself.
type sourceIgnoringMissing struct{ *fakeSource }

func (s sourceIgnoringMissing) Fetch(ctx context.Context, names []string) (map[string]Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.creds), nil
}

func TestStoreChecksSourceAnswer(t *testing.T) {
	src := newFake()
	src.set("primary", "a", "p", "v1")
	s, _ := newStore(sourceIgnoringMissing{src}, []string{"primary", "secondary"}, StoreOptions{})
	err := s.Load(context.Background())
	if err == nil || err.Error() != `fake source has no entry "secondary"` {
		t.Fatalf("Load = %v", err)
	}
}

func TestStoreRefresh(t *testing.T) {
	src := newFake()
	src.set("primary", "u", "old", "v1")
	s, _ := newStore(src, []string{"primary"}, StoreOptions{RefreshInterval: time.Hour})
	ctx := context.Background()
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	stale, _ := s.Get("primary")

	// The relay rejected "old"; the source now has "new": one refetch.
	src.set("primary", "u", "new", "v2")
	c, err := s.Refresh(ctx, "primary", stale)
	if err != nil || c.Password() != "new" {
		t.Fatalf("Refresh = %v, %v; want the new password", c, err)
	}
	if n := len(src.fetched()); n != 2 {
		t.Fatalf("%d fetches, want 2 (load + refresh)", n)
	}

	// A second delivery still holding the stale credential gets the new one
	// without another fetch.
	c, err = s.Refresh(ctx, "primary", stale)
	if err != nil || c.Password() != "new" {
		t.Fatalf("Refresh = %v, %v", c, err)
	}
	if n := len(src.fetched()); n != 2 {
		t.Errorf("%d fetches, want still 2: the Store already held a different credential", n)
	}

	// The new one is rejected too: within RefreshInterval, no refetch.
	src.set("primary", "u", "newer", "v3")
	c, err = s.Refresh(ctx, "primary", c)
	if err != nil || c.Password() != "new" {
		t.Fatalf("Refresh = %v, %v; want what the Store holds", c, err)
	}
	if n := len(src.fetched()); n != 2 {
		t.Errorf("%d fetches, want 2: refresh is limited to one per RefreshInterval", n)
	}
}

func TestStoreRefreshIntervalElapsed(t *testing.T) {
	src := newFake()
	src.set("primary", "u", "old", "v1")
	s, _ := newStore(src, []string{"primary"}, StoreOptions{RefreshInterval: time.Nanosecond})
	ctx := context.Background()
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	c, _ := s.Get("primary")
	for i := range 3 {
		if _, err := s.Refresh(ctx, "primary", c); err != nil {
			t.Fatal(err)
		}
		if got, want := len(src.fetched()), i+2; got != want {
			t.Fatalf("after %d refreshes: %d fetches, want %d", i+1, got, want)
		}
	}
	if got := src.fetched()[1]; !slices.Equal(got, []string{"primary"}) {
		t.Errorf("refresh fetched %v, want only the one entry", got)
	}
}

func TestStoreRefreshFailure(t *testing.T) {
	src := newFake()
	src.fail(errors.New("vault sealed"))
	s, _ := newStore(src, []string{"primary"}, StoreOptions{})
	_, err := s.Refresh(context.Background(), "primary", Credential{})
	if err == nil || err.Error() != "vault sealed" {
		t.Errorf("Refresh = %v", err)
	}
}

func TestStorePollFetchesOnlyChanged(t *testing.T) {
	src := &versionSource{fakeSource: newFake()}
	src.set("primary", "a", "p1", "1")
	src.set("secondary", "b", "s1", "1")
	s, _ := newStore(src, []string{"primary", "secondary"}, StoreOptions{})
	ctx := context.Background()
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}

	s.poll(ctx)
	if n := len(src.fetched()); n != 1 || src.versionCalls != 1 {
		t.Fatalf("unchanged versions: %d fetches, %d version checks; want 1 and 1", n, src.versionCalls)
	}

	src.set("secondary", "b", "s2", "2")
	s.poll(ctx)
	f := src.fetched()
	if len(f) != 2 || !slices.Equal(f[1], []string{"secondary"}) {
		t.Fatalf("fetches = %v, want the second to be only [secondary]", f)
	}
	c, _ := s.Get("secondary")
	if c.Password() != "s2" || c.Version != "2" {
		t.Errorf("secondary = %v after its version changed", c)
	}
	if c, _ := s.Get("primary"); c.Password() != "p1" {
		t.Errorf("primary changed: %v", c)
	}
}

func TestStorePollRetriesFailedLoad(t *testing.T) {
	src := &versionSource{fakeSource: newFake()}
	src.fail(errors.New("down"))
	s, _ := newStore(src, []string{"primary"}, StoreOptions{})
	ctx := context.Background()
	s.Load(ctx) //nolint:errcheck // the failure is the point
	src.fail(nil)
	src.set("primary", "a", "p", "1")
	s.poll(ctx)
	if !s.Ready() || s.Err() != nil {
		t.Fatalf("after poll: Ready %v, Err %v; want a full load", s.Ready(), s.Err())
	}
	if src.versionCalls != 0 {
		t.Errorf("poll checked versions (%d) instead of loading", src.versionCalls)
	}
}

func TestStorePollVersionFailureKeepsCredentials(t *testing.T) {
	src := &versionSource{fakeSource: newFake()}
	src.set("primary", "a", "p", "1")
	s, _ := newStore(src, []string{"primary"}, StoreOptions{})
	ctx := context.Background()
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	src.fail(errors.New("metadata unreadable"))
	s.poll(ctx)
	if c, err := s.Get("primary"); err != nil || c.Password() != "p" {
		t.Errorf("Get = %v, %v; want the loaded credential", c, err)
	}
	if s.Err() == nil || s.Stats().LoadFailures != 1 {
		t.Errorf("Err %v, failures %d", s.Err(), s.Stats().LoadFailures)
	}
}

func TestStoreRunReloadsOnWatch(t *testing.T) {
	src := &watchSource{fakeSource: newFake(), poke: make(chan struct{})}
	src.set("primary", "u", "first", "v1")
	s, _ := newStore(src, []string{"primary"}, StoreOptions{PollInterval: time.Hour, Debounce: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	src.set("primary", "u", "second", "v2")
	src.poke <- struct{}{}
	waitFor(t, "the watch-triggered reload", func() bool {
		c, _ := s.Get("primary")
		return c.Password() == "second"
	})
	if st := s.Stats(); st.Changes != 1 {
		t.Errorf("Stats = %+v, want 1 change", st)
	}
}

// waitFor polls cond until it holds, failing after a generous bound: a
// liveness check, not a timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testlib.WaitFor(t, 10*time.Second, what, cond)
}

func TestStoreLogsStateChangesOnce(t *testing.T) {
	src := newFake()
	s, logs := newStore(src, []string{"primary"}, StoreOptions{})
	ctx := context.Background()

	src.fail(errors.New("age file /etc/x: corrupt"))
	for range 3 {
		s.Load(ctx) //nolint:errcheck // failures are the point
	}
	if n := strings.Count(logs.String(), "credentials unavailable"); n != 1 {
		t.Errorf("3 failed loads logged %d times, want once:\n%s", n, logs)
	}

	src.fail(nil)
	src.set("primary", "u", "p", "v1")
	for range 3 {
		if err := s.Load(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "credentials readable again"); n != 1 {
		t.Errorf("recovery logged %d times, want once:\n%s", n, logs)
	}

	src.fail(errors.New("age file /etc/x: truncated"))
	for range 2 {
		s.Load(ctx) //nolint:errcheck // failures are the point
	}
	if n := strings.Count(logs.String(), "keeping the credentials already loaded"); n != 1 {
		t.Errorf("failures with credentials held logged %d times, want once:\n%s", n, logs)
	}
	if st := s.Stats(); st.LoadFailures != 5 {
		t.Errorf("LoadFailures = %d, want 5: every attempt is counted", st.LoadFailures)
	}

	src.fail(nil)
	src.set("primary", "u", secretPassword, "v2")
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if n := strings.Count(out, "credential changed"); n != 1 {
		t.Errorf("a change logged %d times:\n%s", n, out)
	}
	if leaks(out, []string{secretPassword}) != nil {
		t.Errorf("log shows the password:\n%s", out)
	}
	if !strings.Contains(out, `msg="credential changed" credential=primary username=u version=v2`) {
		t.Errorf("change not logged with name, username and version:\n%s", out)
	}
	// unavailable, readable again, keeping, changed, readable again.
	if n := strings.Count(out, "\n"); n != 5 {
		t.Errorf("%d log lines for 12 loads, want 5, one per change of state:\n%s", n, out)
	}
}

// startSource is a Source with a lifecycle: Start counts its calls and
// returns err.
type startSource struct {
	*fakeSource
	started int
	err     error
}

func (s *startSource) Start(ctx context.Context) error {
	s.started++
	return s.err
}

// TestStoreStartsItsSource: Store.Start starts a Starter once and returns
// its error; a source without a lifecycle needs no start.
func TestStoreStartsItsSource(t *testing.T) {
	errLogin := errors.New("vault: login failed")
	src := &startSource{fakeSource: newFake(), err: errLogin}
	s, _ := newStore(src, []string{"primary"}, StoreOptions{})
	if err := s.Start(t.Context()); !errors.Is(err, errLogin) || src.started != 1 {
		t.Errorf("Start = %v after %d starts, want %v after 1", err, src.started, errLogin)
	}
	plain, _ := newStore(newFake(), []string{"primary"}, StoreOptions{})
	if err := plain.Start(t.Context()); err != nil {
		t.Errorf("Start of a source without a lifecycle = %v, want nil", err)
	}
}
