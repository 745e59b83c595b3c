package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestPutIsDurableAcrossRestart(t *testing.T) {
	h := newHarness(t, Options{})
	id := h.put("alice@example.com", "bob@example.org", "carol@example.org")

	// The process dies right after the acknowledgement: no Close.
	crash(h.q)
	h2 := newHarness(t, Options{Dir: h.dir})
	got := h2.q.List()
	if len(got) != 1 || got[0].ID != id {
		t.Fatalf("after restart the queue holds %+v, want item %s", got, id)
	}
	in := got[0]
	if in.From != "alice@example.com" || in.Size != int64(len(testMessage)) || !in.Received.Equal(t0) {
		t.Errorf("restored item = %+v", in)
	}
	if len(in.Recipients) != 2 || in.Recipients[0].Address != "bob@example.org" ||
		in.Recipients[1].Address != "carol@example.org" || in.Recipients[0].State != StatePending {
		t.Errorf("restored recipients = %+v", in.Recipients)
	}

	d := &fakeDeliverer{respond: all(Delivered, nil)}
	h2.run(d)
	h2.waitProcessed(id)
	calls := d.deliveries()
	if len(calls) != 1 || calls[0].Body != testMessage {
		t.Fatalf("deliveries after restart = %+v, want the message once", calls)
	}
}

func TestPutFileModes(t *testing.T) {
	h := newHarness(t, Options{})
	id := h.put("alice@example.com", "bob@example.org")
	fi, err := os.Stat(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o700 {
		t.Errorf("spool directory mode = %o, want 700", m)
	}
	files := filesIn(t, h.dir)
	want := []string{id + ".env", id + ".msg"}
	if !slices.Equal(files, want) {
		t.Fatalf("spool files = %v, want %v (no temporary files)", files, want)
	}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(h.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s mode = %o, want 600", f, m)
		}
	}
}

func TestPutIDsSortByTimeAndAreUnique(t *testing.T) {
	h := newHarness(t, Options{})
	seen := map[string]bool{}
	var ids []string
	for i := range 50 {
		h.clock.Set(t0.Add(time.Duration(i-1000) * time.Second))
		id := h.put("a@example.com", "b@example.org")
		if !validID(id) || seen[id] {
			t.Fatalf("id %q is malformed or repeated", id)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) {
		t.Errorf("ids of messages received in order do not sort: %v", ids)
	}
	h.clock.Set(t0) // the same instant twice
	if a, b := h.put("a@example.com", "b@example.org"), h.put("a@example.com", "b@example.org"); a == b {
		t.Errorf("two messages in the same nanosecond got the same id %s", a)
	}
}

// TestPutSyncFailure injects ENOSPC at each fsync Put makes: Put fails,
// names what failed, leaves nothing behind, and the next Put succeeds.
func TestPutSyncFailure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target func(dir, path string) bool
	}{
		{"message file", func(dir, p string) bool { return strings.HasSuffix(p, ".msg.tmp") }},
		{"envelope file", func(dir, p string) bool { return strings.HasSuffix(p, ".env.tmp") }},
		{"directory", func(dir, p string) bool { return p == dir }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var failing atomic.Bool
			var dir string
			setBeforeSync(t, func(p string) error {
				if failing.Load() && tc.target(dir, p) {
					return syscall.ENOSPC
				}
				return nil
			})
			h := newHarness(t, Options{})
			dir = h.dir
			failing.Store(true)
			id, err := h.q.Put(context.Background(), "alice@example.com", []string{"bob@example.org"}, strings.NewReader(testMessage))
			if err == nil {
				t.Fatalf("Put succeeded (id %s) although fsync failed", id)
			}
			if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "fsync") || !strings.Contains(err.Error(), dir) {
				t.Errorf("error = %q, want an fsync ENOSPC error naming the file", err)
			}
			if files := filesIn(t, dir); len(files) != 0 {
				t.Errorf("files left behind after a failed Put: %v", files)
			}
			if n := len(h.q.List()); n != 0 {
				t.Errorf("queue holds %d items after a failed Put", n)
			}
			if s := h.q.Stats(); s.PutFailures != 1 || s.Accepted != 0 {
				t.Errorf("stats = %+v, want 1 put failure, 0 accepted", s)
			}

			failing.Store(false) // space is back, without a restart
			id = h.put("alice@example.com", "bob@example.org")
			if files := filesIn(t, dir); len(files) != 2 {
				t.Errorf("after recovery the spool holds %v, want the item %s", files, id)
			}
		})
	}
}

type smugglingError struct{ line int }

func (e *smugglingError) Error() string { return fmt.Sprintf("bare LF on line %d", e.line) }

// failingReader returns some data, then err.
type failingReader struct {
	data string
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestPutBodyErrorIsWrapped(t *testing.T) {
	h := newHarness(t, Options{})
	_, err := h.q.Put(context.Background(), "alice@example.com", []string{"bob@example.org"},
		&failingReader{data: "Subject: x\r\n", err: &smugglingError{line: 2}})
	var se *smugglingError
	if !errors.As(err, &se) || se.line != 2 {
		t.Fatalf("error = %v, want one that errors.As finds as *smugglingError", err)
	}
	if !strings.Contains(err.Error(), "reading message body") {
		t.Errorf("error %q does not say it came from reading the body", err)
	}
	if files := filesIn(t, h.dir); len(files) != 0 {
		t.Errorf("files left behind: %v", files)
	}
}

func TestPutCancelled(t *testing.T) {
	h := newHarness(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.q.Put(ctx, "a@example.com", []string{"b@example.org"}, strings.NewReader(testMessage)); !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	if files := filesIn(t, h.dir); len(files) != 0 {
		t.Errorf("files left behind: %v", files)
	}
}

func TestPutRefusesBadAddresses(t *testing.T) {
	h := newHarness(t, Options{})
	for _, tc := range []struct {
		from string
		to   []string
		want string
	}{
		{"alice@example.com", nil, "no recipients"},
		{"alice@example.com", []string{""}, `recipient 1 "": address not acceptable: empty address`},
		{"alice@example.com", []string{"ok@example.org", "bad\r\nRCPT TO:<x@y>"}, `recipient 2 "bad\r\nRCPT TO:<x@y>": address not acceptable: address contains the character '\r'`},
		{"alice@example.com", []string{"bob\x00@example.org"}, `address contains the character '\x00'`},
		{"al\tice@example.com", []string{"bob@example.org"}, `sender "al\tice@example.com": address not acceptable: address contains the character '\t'`},
		{"alice@example.com", []string{"bob\xff@example.org"}, `address is not valid UTF-8`},
		{"alice@example.com", []string{strings.Repeat("x", 1100) + "@example.org"}, "longer than 1024 bytes"},
	} {
		_, err := h.q.Put(context.Background(), tc.from, tc.to, strings.NewReader(testMessage))
		if !errors.Is(err, ErrBadAddress) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Put(%q, %q) error = %v, want ErrBadAddress with %q", tc.from, tc.to, err, tc.want)
		}
	}
	if files := filesIn(t, h.dir); len(files) != 0 {
		t.Errorf("files left behind: %v", files)
	}
}

// TestPutKeepsQuotedLocalParts: the listener re-quotes local parts with
// spaces or angle brackets; the spool stores them as they are.
func TestPutKeepsQuotedLocalParts(t *testing.T) {
	h := newHarness(t, Options{})
	addrs := []string{`"john doe"@example.org`, `"<odd>"@example.org`}
	id := h.put(`"jane roe"@example.com`, addrs...)
	crash(h.q)
	in := newHarness(t, Options{Dir: h.dir}).info(id)
	if in.From != `"jane roe"@example.com` || in.Recipients[0].Address != addrs[0] || in.Recipients[1].Address != addrs[1] {
		t.Errorf("stored %+v", in)
	}
}

func TestPutAfterClose(t *testing.T) {
	h := newHarness(t, Options{})
	h.q.Close()
	if _, err := h.q.Put(context.Background(), "a@example.com", []string{"b@example.org"}, strings.NewReader("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: error = %v, want ErrClosed", err)
	}
}

func TestOpenRefusesALockedSpool(t *testing.T) {
	h := newHarness(t, Options{})
	_, err := Open(Options{Dir: h.dir})
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("second Open: error = %v, want *LockedError", err)
	}
	if want := "spool directory " + h.dir + " is in use by another sealrelay process"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if !strings.Contains(le.Hint(), "stop the running agent") {
		t.Errorf("hint = %q", le.Hint())
	}
	h.q.Close()
	q, err := Open(Options{Dir: h.dir})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	q.Close()
}

func TestOpenOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		opt  Options
		want string
	}{
		{Options{}, "spool: no directory given"},
		{Options{Dir: t.TempDir(), MinBackoff: 10e9, MaxBackoff: 5e9}, "spool: max backoff 5s is shorter than min backoff 10s"},
		{Options{Dir: t.TempDir(), Workers: -1}, "spool: workers must be positive, not -1"},
		{Options{Dir: t.TempDir(), MaxLifetime: -1}, "spool: negative duration in options"},
		{Options{Dir: t.TempDir(), MemoryBudget: -1}, "spool: memory budget must be positive, not -1"},
		{Options{Dir: "/proc/self/no/such/spool"}, "creating data directory: mkdir /proc/self/no"},
	} {
		_, err := Open(tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%+v) error = %v, want %q", tc.opt, err, tc.want)
		}
	}
}

// TestConcurrentPuts puts many messages at once (the group commit path)
// and finds every one durable after a restart.
func TestConcurrentPuts(t *testing.T) {
	var dirSyncs atomic.Int64
	var dir string
	setBeforeSync(t, func(p string) error {
		if p == dir {
			dirSyncs.Add(1)
		}
		return nil
	})
	h := newHarness(t, Options{})
	dir = h.dir
	const n = 64
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i)
			id, err := h.q.Put(context.Background(), "a@example.com", []string{"b@example.org"}, strings.NewReader(body))
			if err != nil {
				t.Errorf("Put %d: %v", i, err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	t.Logf("%d concurrent Puts made %d directory fsyncs", n, dirSyncs.Load())
	crash(h.q)
	h2 := newHarness(t, Options{Dir: h.dir})
	got := listedIDs(h2.q)
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		t.Fatalf("after restart: %d items, want the %d acknowledged", len(got), n)
	}
	for _, id := range ids[:3] {
		b, err := os.ReadFile(filepath.Join(h.dir, id+".msg"))
		if err != nil || !strings.HasPrefix(string(b), "Subject: ") {
			t.Errorf("message %s: %q, %v", id, b, err)
		}
	}
}

// A reader that is also an io.WriterTo must still go through the body
// reader wrapper (so its errors are attributed to the body).
type writerToReader struct{ io.Reader }

func (w writerToReader) WriteTo(dst io.Writer) (int64, error) {
	return 0, errors.New("WriteTo must not be used")
}

func TestPutDoesNotUseWriterTo(t *testing.T) {
	h := newHarness(t, Options{})
	id, err := h.q.Put(context.Background(), "a@example.com", []string{"b@example.org"}, writerToReader{strings.NewReader(testMessage)})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(h.dir, id+".msg")); string(b) != testMessage {
		t.Errorf("stored message = %q", b)
	}
}
