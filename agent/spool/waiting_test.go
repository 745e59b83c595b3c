package spool

import (
	"strings"
	"testing"
	"time"
)

// waitThen answers Waiting until first calls have been made, each with
// RetryAt at, then with then.
func waitThen(f *fakeDeliverer, first int, at time.Time, then func(d *Delivery) []RcptResult) func(d *Delivery) []RcptResult {
	return func(d *Delivery) []RcptResult {
		if len(f.deliveries()) > first {
			return then(d)
		}
		var rs []RcptResult
		for _, r := range d.To {
			rs = append(rs, RcptResult{Rcpt: r, Status: Waiting, RetryAt: at, Relay: "primary"})
		}
		return rs
	}
}

// TestWaitingIsNotAnAttempt: when a rate limit holds every recipient back,
// the attempt does not count, nothing is written (a journaled item stays
// in the journal) and the item is tried again at RetryAt, not after a
// backoff.
func TestWaitingIsNotAnAttempt(t *testing.T) {
	h := journalHarness(t, Options{})
	f := &fakeDeliverer{}
	at := t0.Add(5 * time.Second)
	f.respond = waitThen(f, 1, at, all(Delivered, nil))
	h.run(f)
	id := h.put("alice@example.com", "bob@example.org", "carol@example.org")
	h.waitProcessed(id)

	in := h.info(id)
	if in.Attempts != 0 || !in.NextAttempt.Equal(at) || in.LastError != "" {
		t.Errorf("after waiting: attempts %d, next %s, last error %q; want 0, %s, none", in.Attempts, in.NextAttempt, in.LastError, at)
	}
	for _, r := range in.Recipients {
		if r.State != StatePending || r.LastError != "" {
			t.Errorf("recipient %+v: want pending without an error", r)
		}
	}
	if files := spoolFiles(t, h.dir); len(files) != 0 {
		t.Errorf("waiting wrote %v; want the item still in the journal only", files)
	}
	if st := h.q.Stats(); st.Waited != 2 || st.Deferred != 0 || st.Failed != 0 {
		t.Errorf("stats %+v: want 2 waited, none deferred or failed", st)
	}

	h.advance(at)
	h.waitProcessed(id)
	if n := len(h.q.List()); n != 0 {
		t.Errorf("%d items left after delivery", n)
	}
	if d := f.deliveries(); len(d) != 2 {
		t.Errorf("%d deliveries, want 2", len(d))
	}
}

// TestWaitingBesideAnAttempt: a message split across routes, one of which
// is held back: the attempt counts for the recipients attempted, the one
// held back stays pending without an error, and the next attempt comes
// at its RetryAt, before the backoff would.
func TestWaitingBesideAnAttempt(t *testing.T) {
	h := newHarness(t, Options{})
	f := &fakeDeliverer{}
	at := t0.Add(2 * time.Second)
	f.respond = func(d *Delivery) []RcptResult {
		var rs []RcptResult
		for _, r := range d.To {
			if strings.HasPrefix(r, "slow") && len(f.deliveries()) == 1 {
				rs = append(rs, RcptResult{Rcpt: r, Status: Waiting, RetryAt: at})
			} else {
				rs = append(rs, RcptResult{Rcpt: r, Status: Delivered})
			}
		}
		return rs
	}
	h.run(f)
	id := h.put("alice@example.com", "fast@example.org", "slow@example.net")
	h.waitProcessed(id)
	in := h.info(id)
	if in.Attempts != 1 || !in.NextAttempt.Equal(at) {
		t.Errorf("attempts %d, next %s; want 1 and the RetryAt %s (the backoff would be %s)", in.Attempts, in.NextAttempt, at, t0.Add(DefaultMinBackoff))
	}
	if r := in.Recipients; r[0].State != StateDelivered || r[1].State != StatePending || r[1].LastError != "" || in.LastError != "" {
		t.Errorf("recipients %+v, last error %q", r, in.LastError)
	}
	h.advance(at)
	h.waitProcessed(id)
	d := f.deliveries()
	if len(d) != 2 || len(d[1].To) != 1 || d[1].To[0] != "slow@example.net" {
		t.Errorf("second delivery %+v: want the held-back recipient only", d)
	}
}

// TestWaitingEndsAtLifetime: waiting counts against max_lifetime like any
// other wait: the next attempt is never after the lifetime's end, and a
// recipient still held back then expires, with a DSN.
func TestWaitingEndsAtLifetime(t *testing.T) {
	h := newHarness(t, Options{MaxLifetime: time.Minute})
	f := &fakeDeliverer{}
	f.respond = waitThen(f, 100, t0.Add(time.Hour), all(Delivered, nil))
	h.run(f)
	id := h.put("alice@example.com", "bob@example.org")
	h.waitProcessed(id)
	if in := h.info(id); !in.NextAttempt.Equal(t0.Add(time.Minute)) {
		t.Errorf("next attempt %s, want the lifetime's end %s", in.NextAttempt, t0.Add(time.Minute))
	}
	h.advance(t0.Add(time.Minute))
	h.waitProcessed(id, "") // the item, then its DSN
	if st := h.q.Stats(); st.Expired != 1 || st.Bounced != 1 {
		t.Errorf("stats %+v: want the recipient expired and one DSN", st)
	}
}
