package spool

import (
	"context"
	"errors"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	q := &Queue{opt: Options{MinBackoff: time.Minute, MaxBackoff: 10 * time.Minute}}
	for _, tc := range []struct {
		attempts int
		rand     float64
		want     time.Duration
	}{
		{1, 0.5, time.Minute},
		{2, 0.5, 2 * time.Minute},
		{3, 0.5, 4 * time.Minute},
		{4, 0.5, 8 * time.Minute},
		{5, 0.5, 10 * time.Minute}, // capped
		{1000, 0.5, 10 * time.Minute},
		{1, 0, 48 * time.Second},    // jitter: x0.8
		{1, 0.75, 66 * time.Second}, // x1.1
		{5, 0, 8 * time.Minute},
		{5, 0.999999, 12 * time.Minute}, // just under x1.2
	} {
		q.opt.testRand = func() float64 { return tc.rand }
		if got := q.backoff(tc.attempts); got.Round(time.Millisecond) != tc.want.Round(time.Millisecond) {
			t.Errorf("backoff(%d) with rand %v = %v, want %v", tc.attempts, tc.rand, got, tc.want)
		}
	}
}

// TestTemporaryFailureBacksOff: a temporary failure keeps the recipient
// pending, records the error in the envelope on disk, and schedules the
// next attempt MinBackoff*2^(n-1) later (jitter factor 1.0 here), capped at
// MaxBackoff; nothing is bounced.
func TestTemporaryFailureBacksOff(t *testing.T) {
	h := newHarness(t, Options{MinBackoff: time.Minute, MaxBackoff: 5 * time.Minute})
	d := &fakeDeliverer{respond: all(Temporary, errors.New("451 4.3.0 try again later"))}
	id := h.put("alice@example.com", "bob@example.org")
	h.run(d)

	now := t0
	for n, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute} {
		h.waitProcessed(id)
		attempt := n + 1
		in := h.info(id)
		if in.Attempts != attempt || !in.NextAttempt.Equal(now.Add(want)) {
			t.Fatalf("after attempt %d: attempts %d, next %v; want next %v", attempt, in.Attempts, in.NextAttempt.Sub(now), want)
		}
		if in.Recipients[0].State != StatePending || in.LastError != "451 4.3.0 try again later" {
			t.Fatalf("after attempt %d: %+v", attempt, in)
		}
		// The envelope on disk says the same.
		disk, err := ReadDir(h.dir)
		if err != nil || len(disk) != 1 || disk[0].Attempts != attempt || !disk[0].NextAttempt.Equal(in.NextAttempt) ||
			disk[0].Recipients[0].LastError != "451 4.3.0 try again later" {
			t.Fatalf("after attempt %d the envelope on disk is %+v, %v", attempt, disk, err)
		}
		now = in.NextAttempt
		h.advance(now)
	}
	h.waitProcessed(id)
	calls := d.deliveries()
	if len(calls) != 6 {
		t.Fatalf("%d deliveries, want 6", len(calls))
	}
	for i, c := range calls {
		if c.Attempt != i+1 || !slices.Equal(c.To, []string{"bob@example.org"}) {
			t.Errorf("delivery %d: attempt %d to %v", i, c.Attempt, c.To)
		}
	}
	if s := h.q.Stats(); s.Deferred != 6 || s.Bounced != 0 || s.Failed != 0 {
		t.Errorf("stats = %+v", s)
	}
}

// TestJitterSpreadsRetries: with the random source at its extremes, the
// delay is scaled by 0.8 and by (just under) 1.2.
func TestJitterSpreadsRetries(t *testing.T) {
	for _, tc := range []struct {
		rand float64
		want time.Duration
	}{{0, 48 * time.Second}, {0.9999999, 72 * time.Second}} {
		h := newHarness(t, Options{MinBackoff: time.Minute, testRand: func() float64 { return tc.rand }})
		id := h.put("alice@example.com", "bob@example.org")
		h.run(&fakeDeliverer{respond: all(Temporary, errors.New("connection refused"))})
		h.waitProcessed(id)
		if got := h.info(id).NextAttempt.Sub(t0); got.Round(time.Millisecond) != tc.want {
			t.Errorf("rand %v: next attempt after %v, want %v", tc.rand, got, tc.want)
		}
	}
}

// dsnOf returns the DSN delivery the fake deliverer saw and parses it.
func dsnOf(t *testing.T, d *fakeDeliverer) (delivery, *mail.Message) {
	t.Helper()
	for _, c := range d.deliveries() {
		if c.From == "" {
			m, err := mail.ReadMessage(strings.NewReader(c.Body))
			if err != nil {
				t.Fatalf("DSN does not parse: %v\n%s", err, c.Body)
			}
			return c, m
		}
	}
	t.Fatalf("no DSN was delivered; deliveries: %+v", d.deliveries())
	return delivery{}, nil
}

// respondDSNDelivered wraps respond so that DSNs (null sender) are delivered.
func respondDSNDelivered(respond func(d *Delivery) []RcptResult) func(d *Delivery) []RcptResult {
	return func(d *Delivery) []RcptResult {
		if d.From == "" {
			return all(Delivered, nil)(d)
		}
		return respond(d)
	}
}

func TestPermanentFailureSendsDSN(t *testing.T) {
	h := newHarness(t, Options{})
	d := &fakeDeliverer{respond: respondDSNDelivered(all(Permanent, reply(550, "5.1.1", "<bob@example.org>: user unknown")))}
	id := h.put("alice@example.com", "bob@example.org")
	h.run(d)
	h.waitProcessed(id, "") // the DSN

	dsn, m := dsnOf(t, d)
	if !slices.Equal(dsn.To, []string{"alice@example.com"}) {
		t.Errorf("DSN sent to %v, want the sender", dsn.To)
	}
	for k, want := range map[string]string{
		"From": "Mail Delivery System <MAILER-DAEMON@relay1.example.com>",
		"To":   "<alice@example.com>",
	} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("DSN %s = %q, want %q", k, got, want)
		}
	}
	if ct := m.Header.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/report; report-type=delivery-status;") {
		t.Errorf("DSN Content-Type = %q", ct)
	}
	for _, want := range []string{
		"Final-Recipient: rfc822; bob@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n",
		"Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: user unknown\r\n",
		"Content-Type: text/rfc822-headers",
		"Subject: quarterly report\r\n", // the original headers
	} {
		if !strings.Contains(dsn.Body, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn.Body)
		}
	}
	if strings.Contains(dsn.Body, "the numbers are attached") {
		t.Errorf("DSN includes the original body")
	}
	if n := len(h.q.List()); n != 0 {
		t.Errorf("%d items left in the queue", n)
	}
	if files := filesIn(t, h.dir); len(files) != 0 {
		t.Errorf("files left in the spool: %v", files)
	}
	if s := h.q.Stats(); s.Failed != 1 || s.Bounced != 1 || s.Delivered != 1 {
		t.Errorf("stats = %+v, want 1 failed, 1 bounced, 1 delivered (the DSN)", s)
	}
}

// TestMixedResults: per-recipient outcomes are kept apart; later attempts
// go only to pending recipients, and the DSN, sent once nothing is
// pending, lists only the failed one.
func TestMixedResults(t *testing.T) {
	h := newHarness(t, Options{MinBackoff: time.Minute})
	first := true
	d := &fakeDeliverer{respond: respondDSNDelivered(func(dl *Delivery) []RcptResult {
		if !first {
			return all(Delivered, nil)(dl)
		}
		first = false
		return []RcptResult{
			{Rcpt: dl.To[0], Status: Delivered},
			withReply(RcptResult{Rcpt: dl.To[1], Status: Permanent, Err: reply(554, "5.7.1", "relaying denied")}),
			withReply(RcptResult{Rcpt: dl.To[2], Status: Temporary, Err: reply(452, "4.2.2", "mailbox full")}),
		}
	})}
	id := h.put("alice@example.com", "a@example.org", "b@example.org", "c@example.org")
	h.run(d)
	h.waitProcessed(id)

	in := h.info(id)
	states := []State{in.Recipients[0].State, in.Recipients[1].State, in.Recipients[2].State}
	if !slices.Equal(states, []State{StateDelivered, StateFailed, StatePending}) {
		t.Fatalf("states after attempt 1 = %v", states)
	}
	if in.Recipients[1].LastError != "554 5.7.1 relaying denied" || in.Recipients[2].LastError != "452 4.2.2 mailbox full" {
		t.Errorf("per-recipient errors = %+v", in.Recipients)
	}
	if len(d.deliveries()) != 1 {
		t.Fatalf("a DSN went out while a recipient was still pending")
	}

	h.advance(in.NextAttempt)
	h.waitProcessed(id, "")
	calls := d.deliveries()
	if len(calls) != 3 || !slices.Equal(calls[1].To, []string{"c@example.org"}) {
		t.Fatalf("second attempt went to %v, want only the pending c@example.org", calls[1].To)
	}
	dsn, _ := dsnOf(t, d)
	if !strings.Contains(dsn.Body, "Final-Recipient: rfc822; b@example.org\r\nAction: failed\r\nStatus: 5.7.1") {
		t.Errorf("DSN does not report b@example.org as failed with 5.7.1:\n%s", dsn.Body)
	}
	for _, r := range []string{"a@example.org", "c@example.org"} {
		if strings.Contains(dsn.Body, "rfc822; "+r) {
			t.Errorf("DSN reports %s, which was delivered", r)
		}
	}
}

// TestExpiry: a recipient still pending when the item reaches MaxLifetime
// fails with "expired after ...", including the last error, and the sender
// gets a DSN with status 4.4.7. The last attempt happens at the lifetime's
// end even if the backoff would be later.
func TestExpiry(t *testing.T) {
	h := newHarness(t, Options{MinBackoff: 40 * time.Minute, MaxBackoff: time.Hour, MaxLifetime: time.Hour})
	d := &fakeDeliverer{respond: respondDSNDelivered(all(Temporary, errors.New("451 4.4.1 no answer from host")))}
	id := h.put("alice@example.com", "bob@example.org")
	h.run(d)
	h.waitProcessed(id)
	if next := h.info(id).NextAttempt; !next.Equal(t0.Add(40 * time.Minute)) {
		t.Fatalf("next attempt %v, want +40m", next.Sub(t0))
	}
	h.advance(t0.Add(40 * time.Minute))
	h.waitProcessed(id)
	if next := h.info(id).NextAttempt; !next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("next attempt %v, want the end of the lifetime (+1h), not +80m", next.Sub(t0))
	}
	h.advance(t0.Add(time.Hour))
	h.waitProcessed(id, "")

	if s := h.q.Stats(); s.Expired != 1 || s.Failed != 1 || s.Bounced != 1 {
		t.Errorf("stats = %+v", s)
	}
	dsn, _ := dsnOf(t, d)
	for _, want := range []string{
		"Status: 4.4.7\r\n",
		"Diagnostic-Code: X-Sealrelay; expired after 1h0m0s in the queue; last error:\r\n 451 4.4.1 no answer from host\r\n",
		"<bob@example.org>: expired after 1h0m0s in the queue; last error: 451 4.4.1 no\r\n answer from host\r\n",
	} {
		if !strings.Contains(dsn.Body, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn.Body)
		}
	}
}

// TestExpiredAtStart: an item already past its lifetime when loaded (the
// agent was down) gets one more attempt, then expires.
func TestExpiredAtStart(t *testing.T) {
	h := newHarness(t, Options{MaxLifetime: time.Hour})
	id := h.put("alice@example.com", "bob@example.org")
	crash(h.q)
	h2 := newHarness(t, Options{Dir: h.dir, MaxLifetime: time.Hour})
	h2.clock.Set(t0.Add(48 * time.Hour))
	d := &fakeDeliverer{respond: respondDSNDelivered(all(Temporary, errors.New("connection refused")))}
	h2.run(d)
	h2.waitProcessed(id, "")
	if s := h2.q.Stats(); s.Expired != 1 || s.Bounced != 1 || s.Queued != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestRetryMakesItemDueNow(t *testing.T) {
	h := newHarness(t, Options{MinBackoff: time.Hour, MaxBackoff: time.Hour})
	fail := true
	var mu sync.Mutex
	d := &fakeDeliverer{respond: func(dl *Delivery) []RcptResult {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return all(Temporary, errors.New("451 later"))(dl)
		}
		return all(Delivered, nil)(dl)
	}}
	id := h.put("alice@example.com", "bob@example.org")
	h.run(d)
	h.waitProcessed(id)
	if next := h.info(id).NextAttempt; !next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("next attempt %v", next)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	h.clock.Set(t0.Add(time.Minute))
	if err := h.q.Retry(id); err != nil {
		t.Fatal(err)
	}
	h.waitProcessed(id) // without the clock reaching the backoff
	if n := len(d.deliveries()); n != 2 {
		t.Fatalf("%d deliveries, want 2", n)
	}
	if s := h.q.Stats(); s.Delivered != 1 || s.Queued != 0 {
		t.Errorf("stats = %+v", s)
	}
}

// TestRetryIsRecorded: without a scheduler (the CLI with no agent), Retry
// writes the new next attempt to the envelope, so the agent sees it.
func TestRetryIsRecorded(t *testing.T) {
	h := newHarness(t, Options{})
	a := h.put("alice@example.com", "bob@example.org")
	b := h.put("alice@example.com", "carol@example.org")
	for _, id := range []string{a, b} {
		h.q.mu.Lock()
		h.q.items[id].env.NextAttempt = t0.Add(time.Hour)
		h.q.mu.Unlock()
	}
	h.clock.Set(t0.Add(time.Minute))
	if err := h.q.Retry(""); err != nil {
		t.Fatal(err)
	}
	infos, err := ReadDir(h.dir)
	if err != nil || len(infos) != 2 {
		t.Fatalf("ReadDir = %v, %v", infos, err)
	}
	for _, in := range infos {
		if !in.NextAttempt.Equal(t0.Add(time.Minute)) {
			t.Errorf("%s: next attempt on disk %v, want now", in.ID, in.NextAttempt)
		}
	}
}

func TestRetryAndDeleteUnknownID(t *testing.T) {
	h := newHarness(t, Options{})
	const id = "0123456789abcdef01234567"
	if err := h.q.Retry(id); !errors.Is(err, ErrNotFound) || err.Error() != "retry "+id+": no such item in the queue" {
		t.Errorf("Retry: %v", err)
	}
	if err := h.q.Delete(id); !errors.Is(err, ErrNotFound) || err.Error() != "delete "+id+": no such item in the queue" {
		t.Errorf("Delete: %v", err)
	}
}

func TestDelete(t *testing.T) {
	h := newHarness(t, Options{})
	id := h.put("alice@example.com", "bob@example.org")
	keep := h.put("alice@example.com", "carol@example.org")
	if err := h.q.Delete(id); err != nil {
		t.Fatal(err)
	}
	if l := h.q.List(); len(l) != 1 || l[0].ID != keep {
		t.Errorf("List after Delete = %+v", l)
	}
	if files := filesIn(t, h.dir); !slices.Equal(files, []string{keep + ".env", keep + ".msg"}) {
		t.Errorf("spool files after Delete = %v", files)
	}
	if len(h.logs.Lines("deleted by operator", id)) != 1 {
		t.Errorf("no log line for the deletion")
	}
	d := &fakeDeliverer{respond: all(Delivered, nil)}
	h.run(d)
	h.waitProcessed(keep)
	if calls := d.deliveries(); len(calls) != 1 || calls[0].ID != keep {
		t.Errorf("deliveries = %+v, want only %s", calls, keep)
	}
}

// blockingDeliverer holds every delivery until released, tracking how
// many run at once.
type blockingDeliverer struct {
	started chan string
	release chan struct{}

	mu             sync.Mutex
	active, maxAct int
	ctxErr         []error
}

func (b *blockingDeliverer) Deliver(ctx context.Context, d *Delivery) []RcptResult {
	b.mu.Lock()
	b.active++
	b.maxAct = max(b.maxAct, b.active)
	b.mu.Unlock()
	b.started <- d.ID
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	b.mu.Lock()
	b.active--
	b.ctxErr = append(b.ctxErr, ctx.Err())
	b.mu.Unlock()
	if ctx.Err() != nil {
		return all(Temporary, ctx.Err())(d)
	}
	return all(Delivered, nil)(d)
}

func TestWorkersLimit(t *testing.T) {
	h := newHarness(t, Options{Workers: 2})
	for range 5 {
		h.put("alice@example.com", "bob@example.org")
	}
	b := &blockingDeliverer{started: make(chan string, 5), release: make(chan struct{})}
	h.run(b)
	<-b.started // two start and block
	<-b.started
	for i := range 5 {
		b.release <- struct{}{} // one finishes; the next may start
		h.waitProcessed("")
		if i < 3 {
			<-b.started
		}
	}
	if b.maxAct != 2 {
		t.Errorf("%d deliveries ran at once, want Workers = 2", b.maxAct)
	}
	if s := h.q.Stats(); s.Delivered != 5 || s.Queued != 0 {
		t.Errorf("stats = %+v", s)
	}
}

// TestDrainLetsInFlightFinish: after Run's context ends, a delivery in
// flight runs to completion with its context intact and its result is
// recorded; Run returns after it.
func TestDrainLetsInFlightFinish(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("alice@example.com", "bob@example.org")
	b := &blockingDeliverer{started: make(chan string, 1), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.q.Run(ctx, b); close(done) }()
	<-b.started
	cancel()
	b.release <- struct{}{}
	<-done
	if b.ctxErr[0] != nil {
		t.Errorf("the in-flight delivery's context ended early: %v", b.ctxErr[0])
	}
	if s := h.q.Stats(); s.Delivered != 1 || s.Queued != 0 {
		t.Errorf("stats = %+v: the in-flight delivery's result was not recorded", s)
	}
}

// TestDrainTimeoutCancels: a delivery still running DrainTimeout after
// Run's context ended is cancelled; its (temporary) result is recorded.
func TestDrainTimeoutCancels(t *testing.T) {
	h := newHarness(t, Options{DrainTimeout: time.Millisecond})
	id := h.put("alice@example.com", "bob@example.org")
	b := &blockingDeliverer{started: make(chan string, 1), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.q.Run(ctx, b); close(done) }()
	<-b.started
	cancel()
	<-done
	if !errors.Is(b.ctxErr[0], context.Canceled) {
		t.Errorf("delivery context error = %v, want context.Canceled", b.ctxErr[0])
	}
	if in := h.info(id); in.Attempts != 1 || in.Recipients[0].State != StatePending {
		t.Errorf("after the cancelled attempt: %+v", in)
	}
	if len(h.logs.Lines("drain timeout")) != 1 {
		t.Errorf("no log line for the drain timeout")
	}
}

// TestDeleteDuringDelivery: the result of an attempt for a deleted item is
// dropped and nothing is written back.
func TestDeleteDuringDelivery(t *testing.T) {
	h := newHarness(t, Options{})
	id := h.put("alice@example.com", "bob@example.org")
	b := &blockingDeliverer{started: make(chan string, 1), release: make(chan struct{})}
	h.run(b)
	<-b.started
	if err := h.q.Delete(id); err != nil {
		t.Fatal(err)
	}
	b.release <- struct{}{}
	h.waitProcessed(id)
	if files := filesIn(t, h.dir); len(files) != 0 {
		t.Errorf("files after delete: %v", files)
	}
	if n := len(h.q.List()); n != 0 {
		t.Errorf("%d items after delete", n)
	}
}

// TestDSNQueueFailureKeepsItem: if the DSN cannot be queued (disk full),
// the failed item stays, and the DSN goes out once the disk recovers.
func TestDSNQueueFailureKeepsItem(t *testing.T) {
	var full bool
	var mu sync.Mutex
	setBeforeSync(t, func(p string) error {
		mu.Lock()
		defer mu.Unlock()
		if full && strings.HasSuffix(p, ".msg.tmp") {
			return errors.New("no space left on device")
		}
		return nil
	})
	h := newHarness(t, Options{MinBackoff: time.Minute})
	d := &fakeDeliverer{respond: respondDSNDelivered(all(Permanent, reply(550, "5.1.1", "user unknown")))}
	id := h.put("alice@example.com", "bob@example.org")
	mu.Lock()
	full = true
	mu.Unlock()
	h.run(d)
	h.waitProcessed(id)
	if lines := h.logs.Lines("cannot queue the DSN", id, "no space left on device"); len(lines) != 1 {
		t.Errorf("log lines = %q", lines)
	}
	in := h.info(id)
	if in.Recipients[0].State != StateFailed {
		t.Fatalf("item after the failed DSN: %+v", in)
	}
	mu.Lock()
	full = false
	mu.Unlock()
	h.advance(in.NextAttempt)
	h.waitProcessed(id, "")
	if s := h.q.Stats(); s.Bounced != 1 || s.Queued != 0 {
		t.Errorf("stats = %+v", s)
	}
	if n := len(d.deliveries()); n != 2 {
		t.Errorf("%d deliveries, want the message once and the DSN once", n)
	}
}

// TestShortResultsAreTemporary: a Deliverer that returns fewer results
// than recipients leaves the rest pending, with a logged complaint.
func TestShortResultsAreTemporary(t *testing.T) {
	h := newHarness(t, Options{})
	d := &fakeDeliverer{respond: func(dl *Delivery) []RcptResult {
		return []RcptResult{{Rcpt: dl.To[0], Status: Delivered}}
	}}
	id := h.put("alice@example.com", "a@example.org", "b@example.org")
	h.run(d)
	h.waitProcessed(id)
	in := h.info(id)
	if in.Recipients[0].State != StateDelivered || in.Recipients[1].State != StatePending ||
		in.Recipients[1].LastError != "no result from the deliverer for this recipient" {
		t.Errorf("recipients = %+v", in.Recipients)
	}
	if len(h.logs.Lines("wrong number of results", id)) != 1 {
		t.Errorf("no log line about the short result")
	}
}
