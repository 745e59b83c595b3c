package spool

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testseam"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// t0 is the fake clock's start.
var t0 = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

// fakeClock is the clock seam's value in tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// syncBuffer is a log sink the test reads while the code writes to it.
type syncBuffer = testlib.LogBuf

// harness is a queue on a fresh directory with a fake clock, a fixed jitter
// (factor 1.0), captured logs, and a channel that receives the ID of each
// item after its delivery attempt is recorded.
type harness struct {
	t         *testing.T
	q         *Queue
	dir       string
	clock     *fakeClock
	logs      *syncBuffer
	processed chan string
}

// harnessJournal makes newHarness use the journal (journal_test.go sets it
// for the tests that rerun the suite's scenarios through the journal).
var harnessJournal = false

func newHarness(t *testing.T, opt Options) *harness {
	t.Helper()
	h := &harness{
		t:         t,
		dir:       opt.Dir,
		clock:     &fakeClock{t: t0},
		logs:      &syncBuffer{},
		processed: make(chan string, 100),
	}
	if h.dir == "" {
		h.dir = filepath.Join(t.TempDir(), "spool")
	}
	opt.Dir = h.dir
	if opt.Hostname == "" {
		opt.Hostname = "relay1.example.com"
	}
	opt.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opt.testNow = h.clock.Now
	if opt.testRand == nil {
		opt.testRand = func() float64 { return 0.5 }
	}
	opt.testProcessed = func(id string) { h.processed <- id }
	// Most tests here look at an item's own files; journal_test.go covers
	// the journal.
	opt.testNoJournal = !harnessJournal
	q, err := Open(opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	q.WaitLoaded()
	h.q = q
	return h
}

// run starts the scheduler until the test ends.
func (h *harness) run(d Deliverer) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.q.Run(ctx, d); close(done) }()
	h.t.Cleanup(func() { cancel(); <-done })
}

// put queues a small message and returns its ID.
func (h *harness) put(from string, to ...string) string {
	h.t.Helper()
	id, err := h.q.Put(context.Background(), from, to, strings.NewReader(testMessage))
	if err != nil {
		h.t.Fatalf("Put: %v", err)
	}
	return id
}

// waitProcessed waits until len(ids) delivery attempts have been recorded,
// in any order, and checks that each non-empty id is among them ("" stands
// for an item whose ID the test does not know, such as a DSN).
func (h *harness) waitProcessed(ids ...string) {
	h.t.Helper()
	var got []string
	for range ids {
		select {
		case id := <-h.processed:
			got = append(got, id)
		case <-time.After(10 * time.Second):
			h.t.Fatalf("only %d of %d delivery attempts (%q) recorded within 10s", len(got), len(ids), ids)
		}
	}
	for _, id := range ids {
		if id != "" && !slices.Contains(got, id) {
			h.t.Fatalf("attempts recorded for %q, want %q among them", got, id)
		}
	}
}

// advance sets the fake clock and wakes the scheduler.
func (h *harness) advance(to time.Time) {
	h.clock.Set(to)
	h.q.kick()
}

// listedIDs returns the IDs of the items q lists, in its order (by ID).
func listedIDs(q *Queue) []string {
	var ids []string
	for _, in := range q.List() {
		ids = append(ids, in.ID)
	}
	return ids
}

// info returns the queue's view of id.
func (h *harness) info(id string) Info {
	h.t.Helper()
	for _, in := range h.q.List() {
		if in.ID == id {
			return in
		}
	}
	h.t.Fatalf("item %s is not in the queue", id)
	return Info{}
}

// crash releases the queue's directory the way the death of its process
// would, without any of Close's orderly steps.
func crash(q *Queue) { q.st.dirf.Close() }

const testMessage = "From: alice@example.com\r\n" +
	"To: bob@example.org\r\n" +
	"Subject: quarterly report\r\n" +
	"Message-ID: <m1@example.com>\r\n" +
	"\r\n" +
	"Hello Bob,\r\n" +
	"the numbers are attached.\r\n"

// delivery is what the fake deliverer saw.
type delivery struct {
	Delivery
	Body string
}

// fakeDeliverer records each delivery with its body and answers with
// respond, which gets the delivery and returns one status and error per
// recipient.
type fakeDeliverer struct {
	respond func(d *Delivery) []RcptResult

	mu    sync.Mutex
	calls []delivery
}

func (f *fakeDeliverer) Deliver(ctx context.Context, d *Delivery) []RcptResult {
	rc, err := d.Open()
	var body []byte
	if err == nil {
		body, err = io.ReadAll(rc)
		rc.Close()
	}
	if err != nil {
		body = []byte("<cannot read the message: " + err.Error() + ">")
	}
	f.mu.Lock()
	f.calls = append(f.calls, delivery{Delivery: *d, Body: string(body)})
	f.mu.Unlock()
	return f.respond(d)
}

func (f *fakeDeliverer) deliveries() []delivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]delivery(nil), f.calls...)
}

// all answers every recipient with the same status and error.
func all(s Status, err error) func(d *Delivery) []RcptResult {
	return func(d *Delivery) []RcptResult {
		var rs []RcptResult
		for _, r := range d.To {
			rs = append(rs, withReply(RcptResult{Rcpt: r, Status: s, Err: err, Relay: "primary"}))
		}
		return rs
	}
}

// relayReply is a relay's reply, as the fake deliverer reports one: its
// text is the error, and withReply puts its codes in the result, as
// agent/deliver does.
type relayReply struct {
	code     int
	enhanced string
	text     string
}

func (r *relayReply) Error() string { return r.text }

// reply is the relay's reply code, enhanced code and text, written as
// agent/deliver writes a reply ("550 5.1.1 user unknown").
func reply(code int, enhanced, text string) error {
	return &relayReply{code: code, enhanced: enhanced, text: fmt.Sprintf("%d %s %s", code, enhanced, text)}
}

// withReply sets r's codes from the relay reply in r.Err, if any.
func withReply(r RcptResult) RcptResult {
	var rr *relayReply
	if errors.As(r.Err, &rr) {
		r.Code, r.Enhanced = rr.code, rr.enhanced
	}
	return r
}

// filesIn lists the regular files directly in dir.
func filesIn(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	return out
}

// setBeforeSync sets the spool's test seam (testseam.SpoolBeforeSync) for
// the queues the test opens from now on, and clears it when the test ends.
func setBeforeSync(t *testing.T, hook func(path string) error) {
	t.Helper()
	testseam.SpoolBeforeSync.Store(&hook)
	t.Cleanup(func() { testseam.SpoolBeforeSync.Store(nil) })
}
