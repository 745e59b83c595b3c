package spool

import (
	"slices"
	"testing"
)

// TestNullSenderFailureIsHeld: a null-sender message (a DSN, or a bounce an
// application handed over) whose recipient fails cannot be returned to
// anyone. It gets no DSN, and it does not vanish: it stays in the queue,
// held in a failed state that List and Stats show, is never tried again,
// survives a restart as it is, and goes only when an operator deletes it.
func TestNullSenderFailureIsHeld(t *testing.T) {
	for _, journal := range []bool{false, true} {
		name := map[bool]string{false: "files", true: "journal"}[journal]
		t.Run(name, func(t *testing.T) {
			mk := newHarness
			if journal {
				mk = journalHarness
			}
			h := mk(t, Options{})
			d := &fakeDeliverer{respond: all(Permanent, reply(550, "5.1.1", "user unknown"))}
			id := h.put("", "bob@example.org")
			h.run(d)
			h.waitProcessed(id)

			in := h.info(id)
			if !in.Held || in.Recipients[0].State != StateFailed || in.Recipients[0].LastError != "550 5.1.1 user unknown" {
				t.Fatalf("item after the failure = %+v, want held with its recipient failed", in)
			}
			if s := h.q.Stats(); s.Failed != 1 || s.Bounced != 0 || s.Queued != 1 || s.Held != 1 {
				t.Errorf("stats = %+v, want 1 failed, no DSN, 1 queued and held", s)
			}
			if lines := h.logs.Lines("kept in the queue as failed", id, "bob@example.org"); len(lines) != 1 {
				t.Errorf("log lines about the held item: %q", lines)
			}
			// What is on disk says so too (queue list reads the disk).
			items, err := ReadDir(h.dir)
			if err != nil || len(items) != 1 || !items[0].Held || items[0].Recipients[0].State != StateFailed {
				t.Fatalf("ReadDir = %+v, %v; want the held item", items, err)
			}
			// Retry of everything does not resend it.
			if err := h.q.Retry(""); err != nil {
				t.Fatal(err)
			}

			// After a restart it is still there, held, and not tried again.
			crash(h.q)
			h2 := mk(t, Options{Dir: h.dir})
			d2 := &fakeDeliverer{respond: all(Delivered, nil)}
			h2.run(d2)
			if in := h2.info(id); !in.Held {
				t.Fatalf("after restart: %+v, want held", in)
			}
			if s := h2.q.Stats(); s.Held != 1 || s.Queued != 1 {
				t.Errorf("stats after restart = %+v", s)
			}
			if err := h2.q.Delete(id); err != nil {
				t.Fatal(err)
			}
			if s := h2.q.Stats(); s.Held != 0 || s.Queued != 0 {
				t.Errorf("stats after delete = %+v", s)
			}
			if files := spoolFiles(t, h.dir); len(files) != 0 {
				t.Errorf("files after delete: %v", files)
			}
			if n := len(d.deliveries()) + len(d2.deliveries()); n != 1 {
				t.Errorf("%d deliveries, want 1 (no DSN, no retry)", n)
			}
		})
	}
}

// TestHeldItemRetriedByID: `queue retry ID` on a held item makes its
// failed recipients pending again and tries it now.
func TestHeldItemRetriedByID(t *testing.T) {
	h := newHarness(t, Options{})
	fail := true
	d := &fakeDeliverer{respond: func(dl *Delivery) []RcptResult {
		if fail {
			return all(Permanent, reply(550, "5.7.1", "relaying denied"))(dl)
		}
		return all(Delivered, nil)(dl)
	}}
	id := h.put("", "bob@example.org", "carol@example.org")
	h.run(d)
	h.waitProcessed(id)
	if !h.info(id).Held {
		t.Fatal("not held after the failure")
	}
	fail = false // the operator fixed the relay
	if err := h.q.Retry(id); err != nil {
		t.Fatal(err)
	}
	h.waitProcessed(id)
	if n := len(h.q.List()); n != 0 {
		t.Errorf("%d items after the retried item was delivered", n)
	}
	calls := d.deliveries()
	if len(calls) != 2 || !slices.Equal(calls[1].To, []string{"bob@example.org", "carol@example.org"}) {
		t.Errorf("deliveries = %+v, want the retry to both recipients", calls)
	}
	if s := h.q.Stats(); s.Held != 0 {
		t.Errorf("stats = %+v", s)
	}
}
