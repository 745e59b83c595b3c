package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// The parameters of the upstream-faults test (TestUpstreamFaults).
const (
	faultsM        = 300 // messages through the faulty upstream
	faultsClients  = 4
	faultsMaxConns = 3
	// The agent's command_timeout; the reply after the data gets twice as
	// long. Stalls last longer than that, so the agent gives up on them.
	faultsCommandTimeout = time.Second
	faultsStall          = 2500 * time.Millisecond
	faultsMinBackoff     = 200 * time.Millisecond // rigConfig's queue
	faultsMaxBackoff     = time.Second
	// clockSlack allows for the agent scheduling by the wall clock while the
	// upstream times attempts by the monotonic one.
	clockSlack = 5 * time.Millisecond
)

// TestUpstreamFaults runs the agent against an upstream that misbehaves.
func TestUpstreamFaults(t *testing.T) {
	t.Run("mixed", testFaultsMixed)
	t.Run("stalled relay does not block the listener", testFaultsStalledListener)
}

// testFaultsMixed: the upstream answers 451 to 20% of transactions, drops
// 5% of connections after the data, and stalls 5% of transactions past the
// agent's command timeout (the first half of the run), then 20% of
// greetings (the second half). faultsM messages go through the agent.
// Asserts: every submission gets its 250 (the listener is unaffected);
// every message reaches the upstream (0 lost); nothing bounces (no DSN, no
// failed recipient, no null-sender message upstream); the agent never holds
// more than max_connections connections to the relay; and for every
// message, each retry came at least the backoff's jitter floor after the
// attempt before it.
func testFaultsMixed(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{DiscardBodies: true, Behavior: upstream.Behavior{
		TempFailAfterData: 0.20,
		DropAfterData:     0.05,
		Stall:             0.05,
		StallAt:           upstream.StallData,
		StallDuration:     faultsStall,
	}})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "workers = 10\n")
	editConfig(t, cfg, `idle_timeout = "2s"`, fmt.Sprintf("max_connections = %d\nidle_timeout = \"2s\"", faultsMaxConns))
	editConfig(t, cfg, `command_timeout = "10s"`, fmt.Sprintf("command_timeout = %q", faultsCommandTimeout))
	editConfig(t, cfg, `min_backoff = "200ms"`, fmt.Sprintf("min_backoff = %q", faultsMinBackoff))
	editConfig(t, cfg, `max_backoff = "1s"`, fmt.Sprintf("max_backoff = %q", faultsMaxBackoff))
	a := startAgent(t, cfg)
	addr := a.Addr().String()

	ids := make([]string, faultsM)
	for i := range ids {
		ids[i] = fmt.Sprintf("<faults.%d@rig>", i)
	}
	submitAll := func(ids []string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, len(ids))
		work := make(chan string)
		for range faultsClients {
			wg.Go(func() {
				for id := range work {
					if outcome, _, err := submitOnce(addr, id); outcome != submitAcked || err != nil {
						errs <- fmt.Errorf("submitting %s while the relay misbehaves: %v", id, err)
					}
				}
			})
		}
		for _, id := range ids {
			work <- id
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	firstHalf := map[string]bool{}
	for _, id := range ids[:faultsM/2] {
		firstHalf[id] = true
	}
	submitAll(ids[:faultsM/2])
	if missing := waitDelivered(up, firstHalf, 3*time.Minute); len(missing) > 0 {
		t.Fatalf("lost: %d acknowledged messages never reached the upstream, e.g. %s",
			len(missing), strings.Join(missing[:min(len(missing), 10)], " "))
	}
	up.UpdateBehavior(func(b *upstream.Behavior) {
		b.StallAt, b.Stall = upstream.StallGreeting, 0.20
	})
	submitAll(ids[faultsM/2:])
	if t.Failed() {
		t.FailNow()
	}

	if missing := waitDelivered(up, want, 3*time.Minute); len(missing) > 0 {
		t.Fatalf("lost: %d acknowledged messages never reached the upstream, e.g. %s",
			len(missing), strings.Join(missing[:min(len(missing), 10)], " "))
	}
	waitFor(t, time.Minute, "the spool to empty", func() bool { return len(a.Queue().List()) == 0 })

	st := a.Queue().Stats()
	if st.Bounced != 0 || st.Failed != 0 {
		t.Errorf("bounced: %d DSNs, %d failed recipients; want none for temporary faults", st.Bounced, st.Failed)
	}
	deliveries := map[string]int{}
	for _, m := range up.Messages() {
		if m.From == "" {
			t.Errorf("the upstream got a null-sender message (a DSN) to %v", m.To)
		}
		deliveries[m.MessageID]++
	}
	if got := up.MaxHeld(); got > faultsMaxConns {
		t.Errorf("the agent held %d connections to the relay at once; max_connections = %d", got, faultsMaxConns)
	}

	// Backoff. The agent's k-th attempt is followed by a delay of at least
	// 0.8 × min(max_backoff, min_backoff × 2^(k-1)). Not every attempt
	// reaches the data (a stalled greeting, a drop before it), so the i-th
	// attempt the upstream saw is the agent's k-th with k ≥ i; the delay
	// grows with k, so 0.8 × base(i) is a floor for the gap after it. The
	// upstream times an attempt when its data has been read, before the
	// agent had any reply; the next attempt's data comes after the delay.
	var dataStalls, drops, tempFails, retried, maxAttempts int
	worst := 10.0 // smallest gap / floor
	worstWhat := ""
	for id, atts := range up.AttemptsByMessageID() {
		if !want[id] {
			continue
		}
		slices.SortFunc(atts, func(x, y upstream.Attempt) int { return x.Time.Compare(y.Time) })
		maxAttempts = max(maxAttempts, len(atts))
		if len(atts) > 1 {
			retried++
		}
		for i, at := range atts {
			switch {
			case at.Stalled:
				dataStalls++
			case at.Dropped:
				drops++
			case at.Code == 451:
				tempFails++
			}
			if i == 0 {
				continue
			}
			gap := at.Time.Sub(atts[i-1].Time)
			floor := time.Duration(0.8 * float64(backoffBase(i, faultsMinBackoff, faultsMaxBackoff)))
			if r := float64(gap) / float64(floor); r < worst {
				worst, worstWhat = r, fmt.Sprintf("%s attempts %d-%d: %s (floor %s)", id, i, i+1, gap.Round(time.Millisecond), floor)
			}
			if gap+clockSlack < floor {
				t.Errorf("%s: attempt %d came %s after attempt %d; the backoff floor is %s",
					id, i+1, gap.Round(time.Millisecond), i, floor)
			}
		}
	}
	greetingStalls := 0
	for _, s := range up.Sessions() {
		if s.Stalled && s.Helo == "" {
			greetingStalls++
		}
	}
	duplicates := 0
	for _, n := range deliveries {
		duplicates += n - 1
	}
	if tempFails == 0 || drops == 0 || dataStalls == 0 {
		t.Errorf("faults not exercised: %d 451s, %d drops, %d stalls", tempFails, drops, dataStalls)
	}
	ds := a.Deliverer().Stats()
	t.Logf("FAULTS messages=%d acknowledged=%d delivered=%d lost=0 bounced=%d duplicates=%d "+
		"attempts_seen=%d tempfail_451=%d dropped=%d data_stalls=%d greeting_stalls=%d "+
		"retried_messages=%d max_attempts=%d deferred=%d max_connections=%d max_held=%d max_open_upstream_side=%d "+
		"backoff_min_ratio=%.2f",
		faultsM, faultsM, len(deliveries), st.Bounced, duplicates,
		len(up.Attempts()), tempFails, drops, dataStalls, greetingStalls,
		retried, maxAttempts, ds.Deferred, faultsMaxConns, up.MaxHeld(), up.MaxConcurrent(), worst)
	t.Logf("closest retry to its backoff floor: %s", worstWhat)
}

// backoffBase is the spool's delay before jitter after the k-th attempt:
// min(max, min × 2^(k-1)).
func backoffBase(k int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < k && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// testFaultsStalledListener: every transaction stalls (for an hour; the
// agent's command timeout is longer), so deliveries hold every connection
// the agent may open. Submissions made meanwhile still get their 250, and
// the stalls are still going on after the last one: the listener does not
// wait for delivery. When the relay comes back every message is delivered.
func testFaultsStalledListener(t *testing.T) {
	const maxConns, first, more = 2, 2, 10
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{DiscardBodies: true, Behavior: upstream.Behavior{
		Stall: 1, StallDuration: time.Hour, StallAt: upstream.StallData,
	}})
	upAddr, ca := up.Addr(), up.CA()
	cfg := rigConfig(t, dir, upAddr, relayOpts{}, "")
	editConfig(t, cfg, `idle_timeout = "2s"`, fmt.Sprintf("max_connections = %d\nidle_timeout = \"2s\"", maxConns))
	editConfig(t, cfg, `command_timeout = "10s"`, `command_timeout = "5m"`)
	a := startAgent(t, cfg)
	addr := a.Addr().String()

	var ids []string
	submit := func(n int) {
		t.Helper()
		for range n {
			id := fmt.Sprintf("<stalled.%d@rig>", len(ids))
			ids = append(ids, id)
			if outcome, _, err := submitOnce(addr, id); outcome != submitAcked || err != nil {
				t.Fatalf("submitting %s while deliveries are stalled: %v", id, err)
			}
		}
	}
	stalled := func() int {
		n := 0
		for _, s := range up.Sessions() {
			if s.Stalled && s.End.IsZero() {
				n++
			}
		}
		return n
	}
	submit(first)
	waitFor(t, time.Minute, "every relay connection to stall", func() bool { return stalled() == maxConns })
	submit(more)
	if n := stalled(); n != maxConns {
		t.Fatalf("%d stalled deliveries still open after the submissions, want %d: the test did not submit during the stall", n, maxConns)
	}
	if n := len(a.Queue().List()); n != first+more {
		t.Errorf("%d items queued, want %d", n, first+more)
	}

	// The relay restarts, well.
	up.Close()
	up2 := startUpstream(t, dir, upstream.Config{Addr: upAddr, CA: ca, DiscardBodies: true})
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	if missing := waitDelivered(up2, want, 2*time.Minute); len(missing) > 0 {
		t.Fatalf("lost after the stall: %s", strings.Join(missing, " "))
	}
	if st := a.Queue().Stats(); st.Bounced != 0 || st.Failed != 0 {
		t.Errorf("bounced %d, failed %d after a stall", st.Bounced, st.Failed)
	}
	if got := up2.MaxHeld(); got > maxConns {
		t.Errorf("the agent held %d connections at once; max_connections = %d", got, maxConns)
	}
}

// editConfig replaces old with new in the config file at path; old must be
// there.
func editConfig(t *testing.T, path, old, new string) {
	t.Helper()
	s := readTestFile(t, path)
	if !strings.Contains(s, old) {
		t.Fatalf("config %s has no %q to replace", path, old)
	}
	writeTestFile(t, path, strings.Replace(s, old, new, 1))
}
