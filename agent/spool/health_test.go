package spool

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCensus: each queued item is counted in exactly one state, active
// (an attempt running), pending (never tried), deferred or held, with its
// recipients still to deliver (the failed ones for a held item), its
// arrival and its size.
func TestCensus(t *testing.T) {
	h := newHarness(t, Options{Workers: 1, MinBackoff: time.Hour, MaxBackoff: time.Hour})
	release := make(chan struct{})
	d := &fakeDeliverer{respond: func(d *Delivery) []RcptResult {
		switch {
		case strings.HasPrefix(d.To[0], "block"):
			<-release
			return all(Delivered, nil)(d)
		case d.From == "":
			return all(Permanent, reply(550, "5.1.1", "user unknown"))(d)
		}
		return all(Temporary, reply(451, "4.2.0", "busy"))(d)
	}}
	deferred := h.put("alice@example.com", "a@example.org", "b@example.org")
	held := h.put("", "c@example.org")
	h.run(d)
	t.Cleanup(func() { close(release) }) // before the scheduler's end waits for it
	h.waitProcessed(deferred, held)
	active := h.put("alice@example.com", "block@example.org")
	for len(d.deliveries()) < 3 {
		time.Sleep(time.Millisecond)
	}
	pending := h.put("alice@example.com", "d@example.org", "e@example.org", "f@example.org")

	got := map[string]CensusItem{}
	h.q.Census(func(c CensusItem) { got[c.ID] = c })
	want := map[string]CensusItem{
		deferred: {State: ItemDeferred, Recipients: 2},
		held:     {State: ItemHeld, Recipients: 1},
		active:   {State: ItemActive, Recipients: 1},
		pending:  {State: ItemPending, Recipients: 3},
	}
	for id, w := range want {
		g := got[id]
		if g.State != w.State || g.Recipients != w.Recipients || g.Size != int64(len(testMessage)) || !g.Received.Equal(t0) {
			t.Errorf("census of %s = %+v, want %s with %d recipients, size %d, received %v", id, g, w.State, w.Recipients, len(testMessage), t0)
		}
	}
	if len(got) != 4 {
		t.Errorf("census saw %d items, want 4", len(got))
	}
}

// TestLogLineExpired: the attempt at the end of the lifetime logs the
// recipient as expired (the sender gets a DSN), with status 4.4.7, the
// last reply's code and the reason; for a null sender, as held.
func TestLogLineExpired(t *testing.T) {
	h := newHarness(t, Options{MinBackoff: time.Hour, MaxBackoff: time.Hour, MaxLifetime: time.Hour})
	d := &fakeDeliverer{respond: func(d *Delivery) []RcptResult {
		if d.To[0] == "alice@example.com" { // the DSN
			return all(Delivered, nil)(d)
		}
		rs := all(Temporary, reply(451, "4.4.1", "no answer from host"))(d)
		for i := range rs {
			rs[i].Reason = "relay_4xx"
		}
		return rs
	}}
	id := h.put("alice@example.com", "bob@example.org")
	null := h.put("", "carol@example.org")
	h.run(d)
	h.waitProcessed(id, null)
	h.advance(t0.Add(time.Hour))
	h.waitProcessed(id, null, "")

	for _, tc := range []struct{ id, rcpt, status string }{{id, "bob@example.org", "expired"}, {null, "carol@example.org", "held"}} {
		lines := h.logs.Lines(`msg="delivery attempt"`, "id="+tc.id)
		if len(lines) != 2 {
			t.Fatalf("lines for %s: %q, want 2", tc.id, lines)
		}
		for _, want := range []string{"level=INFO", "to=" + tc.rcpt, "relay=primary", "status=deferred", "attempt=1", "delay=0.000",
			"dsn=4.4.1", "code=451", "reason=relay_4xx", `err="451 4.4.1 no answer from host"`} {
			if !strings.Contains(lines[0], " "+want) {
				t.Errorf("first attempt's line lacks %q: %s", want, lines[0])
			}
		}
		for _, want := range []string{"level=WARN", "status=" + tc.status, "attempt=2", "delay=3600.000", "dsn=4.4.7", "code=451",
			"reason=relay_4xx", `err="expired after 1h0m0s in the queue; last error: 451 4.4.1 no answer from host"`} {
			if !strings.Contains(lines[1], " "+want) {
				t.Errorf("last attempt's line lacks %q: %s", want, lines[1])
			}
		}
	}
}

// TestProbeWrite: the probe writes, fsyncs and removes its file; a failed
// fsync (a full disk) is its error; a probe file a crash left behind is
// removed at the next start, without a warning.
func TestProbeWrite(t *testing.T) {
	full := false
	setBeforeSync(t, func(path string) error {
		if full && strings.HasSuffix(path, probeName+tmpSuffix) {
			return syscall.ENOSPC
		}
		return nil
	})
	h := newHarness(t, Options{})
	if err := h.q.ProbeWrite(); err != nil {
		t.Fatalf("ProbeWrite: %v", err)
	}
	full = true
	err := h.q.ProbeWrite()
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "spool directory "+h.dir+" cannot take a message") {
		t.Fatalf("ProbeWrite on a full disk = %v, want ENOSPC naming the spool", err)
	}
	if files := filesIn(t, h.dir); len(files) != 0 {
		t.Errorf("files left in the spool: %q", files)
	}

	h.q.Close()
	leftover := filepath.Join(h.dir, probeName+tmpSuffix)
	if err := os.WriteFile(leftover, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, Options{Dir: h.dir})
	if files := filesIn(t, h.dir); slices.Contains(files, probeName+tmpSuffix) {
		t.Errorf("the leftover probe file is still there: %q", files)
	}
	if lines := h2.logs.Lines("level=WARN"); len(lines) != 0 {
		t.Errorf("warnings at start: %q", lines)
	}
}
