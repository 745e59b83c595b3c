package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestRateLimitUnderLoad: 30 messages for a relay limited to 120 a
// minute, and then 5 for another route: the limited relay's arrivals at
// the upstream never exceed the rate in any 5-second window (with a
// message of slack), all 30 arrive, and none fails or bounces; the other
// route's messages are not held behind them; and its limit of 2
// recipients a transaction splits each 3-recipient message in two.
func TestRateLimitUnderLoad(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{Behavior: upstream.Behavior{RequireAuth: true}})
	relay := func(name, extra string) string {
		return fmt.Sprintf("[[relay]]\nname = %q\naddress = %q\ncredential = \"upstream\"\nca_file = \"upstream-ca.pem\"\nserver_name = \"localhost\"\n%s", name, up.Addr(), extra)
	}
	cfg := filepath.Join(dir, "sealrelay.toml")
	writeTestFile(t, cfg, "hostname = \"agent.test\"\ndata_dir = \"data\"\n[listen]\naddress = \"127.0.0.1:0\"\n"+
		relay("slow", "max_messages_per_minute = 120\n")+relay("fast", "")+
		"[[route]]\nname = \"bulk\"\nsenders = [\"@bulk.example\"]\nrelays = [\"slow\"]\n"+
		"[[route]]\nname = \"default\"\nrelays = [\"fast\"]\nmax_recipients_per_message = 2\n"+
		"[credentials]\nidentity = \"identity.txt\"\nfile = \"credentials.age\"\n[queue]\nmin_backoff = \"200ms\"\nmax_backoff = \"1s\"\n")
	a := startAgent(t, cfg)

	const bulk, rate = 30, 2.0 // messages; per second
	for i := range bulk {
		if err := send(a.Addr().String(), "news@bulk.example", fmt.Sprintf("r%d@example.net", i), fmt.Sprintf("<bulk-%d@test>", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if err := submitEnvelope(a.Addr().String(), envelope{id: fmt.Sprintf("<other-%d@test>", i), from: "app@example.com",
			rcpts: []string{"x@example.org", "y@example.org", "z@example.org"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := up.WaitMessages(bulk+10, 90*time.Second); err != nil {
		t.Fatalf("%v; spool %+v", err, a.Queue().Stats())
	}

	var times []time.Time
	otherDone, others := 0, map[string][]int{}
	for _, m := range up.Messages() {
		if strings.HasPrefix(m.MessageID, "<bulk-") {
			times = append(times, m.Time)
			continue
		}
		others[m.MessageID] = append(others[m.MessageID], len(m.To))
		if len(others) == 5 && otherDone == 0 {
			otherDone = len(times) // bulk messages that arrived before the last other one
		}
	}
	if len(times) != bulk || len(others) != 5 {
		t.Fatalf("%d bulk and %d other messages arrived", len(times), len(others))
	}
	slices.SortFunc(times, func(x, y time.Time) int { return x.Compare(y) })
	const window = 5 * time.Second
	most := 0
	for i := range times {
		n := 0
		for j := i; j < len(times) && times[j].Sub(times[i]) < window; j++ {
			n++
		}
		most = max(most, n)
	}
	limit := int(rate*window.Seconds()) + 2
	t.Logf("bulk: %d messages over %s; at most %d in any %s (limit %d); the other route's 5 were done after %d bulk arrivals",
		bulk, times[len(times)-1].Sub(times[0]).Round(time.Millisecond), most, window, limit, otherDone)
	if most > limit {
		t.Errorf("%d bulk messages arrived within %s: the limit of %v a second was not kept", most, window, rate)
	}
	if otherDone > bulk/2 {
		t.Errorf("the other route's messages waited behind %d of the %d limited ones", otherDone, bulk)
	}
	for id, sizes := range others {
		if slices.Sort(sizes); !slices.Equal(sizes, []int{1, 2}) {
			t.Errorf("%s went as transactions of %v recipients, want 2 and 1", id, sizes)
		}
	}
	st := a.Queue().Stats()
	if st.Failed != 0 || st.Bounced != 0 || st.Waited == 0 {
		t.Errorf("spool stats %+v: want nothing failed or bounced, and some waits", st)
	}
	if ds := a.Deliverer().Stats(); ds.Failed != 0 || ds.Waiting == 0 {
		t.Errorf("deliver stats %+v", ds)
	}
}
