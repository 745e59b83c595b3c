package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// The crash loop: clients send messages through the built
// binary while it is killed with SIGKILL at random moments and restarted;
// every message a client saw a 250 for must reach the upstream.
//
//	SEALRELAY_CRASH_N       messages to send (default crashDefaultN)
//	SEALRELAY_CRASH_SEED    seed of the kill schedule (default: from the clock; logged)
//	SEALRELAY_CRASH_REPORT  file to write the one-line summary to
const (
	crashDefaultN  = 1000
	crashMinKills  = 3 // the killer goes on until it has killed this often, senders done or not
	crashClients   = 8
	crashMinKill   = 500 * time.Millisecond // kill intervals are uniform in [crashMinKill, crashMaxKill)
	crashMaxKill   = 3 * time.Second
	crashEarlyKill = 10 // 1 kill in crashEarlyKill comes within the start-up time last measured, to land in start-up and spool load
	crashGiveUp    = 2 * time.Minute
	crashSummaryID = "CRASHLOOP"
)

// TestCrashLoop runs `sealrelay serve` (the built binary, an age-sealed
// credential, an upstream demanding STARTTLS and AUTH) while crashClients
// clients submit N messages, each with a unique Message-ID, and a killer
// sends SIGKILL at random moments and restarts the process on the same
// port and data_dir. A client retries a message that failed before the
// agent answered 354 to DATA (nothing can have been queued); after that the
// outcome is final: acknowledged (250), refused (any other reply) or cut off
// (the connection died). At the end the agent is left running until the
// upstream holds every acknowledged Message-ID: lost must be 0. Duplicates
// (at-least-once delivery) are counted and reported, not failed.
func TestCrashLoop(t *testing.T) {
	n := envInt(t, "SEALRELAY_CRASH_N", crashDefaultN)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SEALRELAY_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SEALRELAY_CRASH_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("crash loop: N=%d, seed %d (SEALRELAY_CRASH_SEED=%d repeats the kill schedule)", n, seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5ea1))

	builtBinary(t) // before the clock starts
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{DiscardBodies: true})
	addr := fixedPort(t, rng)
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	writeTestFile(t, cfg, strings.Replace(readTestFile(t, cfg), `address = "127.0.0.1:0"`, fmt.Sprintf("address = %q", addr), 1))

	start := time.Now()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The relay is down (421 greetings) while the middle third of the
	// messages is sent: the spool grows, and restarts then load a backlog.
	senders := &crashSenders{addr: addr, ctx: ctx, outage: func(i int) {
		switch i {
		case n / 3:
			up.UpdateBehavior(func(b *upstream.Behavior) { b.Greeting = upstream.ErrServiceNotAvailable })
		case 2 * n / 3:
			up.UpdateBehavior(func(b *upstream.Behavior) { b.Greeting = nil })
		}
	}}
	var wg sync.WaitGroup
	for range crashClients {
		wg.Go(func() { senders.run(n) })
	}
	sendersDone := make(chan struct{})
	go func() { wg.Wait(); close(sendersDone) }()

	// The killer runs here, in the test goroutine, since it may t.Fatal.
	// Most kills come crashMinKill to crashMaxKill after a start; one in
	// crashEarlyKill comes within the start-up as last measured (launch to
	// listening), to land before, during or after the spool load.
	var procs []*agentProcess
	kills, loadKills, startupKills := 0, 0, 0
	startup := 50 * time.Millisecond
	var p *agentProcess
	for p == nil {
		launched := time.Now()
		p = launchProcess(t, cfg)
		procs = append(procs, p)
		d := crashMinKill + time.Duration(rng.Int64N(int64(crashMaxKill-crashMinKill)))
		if rng.IntN(crashEarlyKill) == 0 {
			d = time.Duration(rng.Int64N(int64(startup * 3 / 2)))
		}
		stop := sendersDone
		if kills < crashMinKills {
			stop = nil
		}
		select {
		case <-stop:
			continue // this one stays up
		case <-p.done:
			cancel()
			t.Fatalf("agent process exited by itself (%v) after %d kills:\n%s", p.cmd.ProcessState, kills, p.stderr.String())
		case <-time.After(d):
		}
		p.cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck // it may have exited; p.done tells
		p.wait(t, 30*time.Second)
		kills++
		log := p.stderr.String()
		switch {
		case !strings.Contains(log, `msg="spool: loaded"`):
			loadKills++
		case !strings.Contains(log, "msg=listening"):
			startupKills++
		}
		if m := listeningAt.FindStringSubmatch(log); m != nil {
			if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil && at.After(launched) {
				startup = at.Sub(launched)
			}
		}
		p = nil
	}
	p.waitListening(t)
	sendTime := time.Since(start)

	res := senders.result()
	if res.gaveUp > 0 {
		t.Errorf("%d messages could not be submitted within %s of retries", res.gaveUp, crashGiveUp)
	}
	wait := time.Minute + time.Duration(n)*20*time.Millisecond
	missing := waitDelivered(up, res.acked, wait)

	got := map[string]int{}
	for _, m := range up.Messages() {
		if strings.HasPrefix(m.MessageID, "<crash.") {
			got[m.MessageID]++
		}
	}
	deliveries, duplicates, unacked := 0, 0, 0
	for id, c := range got {
		deliveries += c
		duplicates += c - 1
		if !res.acked[id] {
			unacked++
		}
	}
	quarantined, tempRemoved, maxLoaded := 0, 0, 0
	loaded := regexp.MustCompile(`msg="spool: loaded" .*items=(\d+)`)
	for _, p := range procs {
		log := p.stderr.String()
		quarantined += strings.Count(log, "spool: quarantined damaged item")
		tempRemoved += strings.Count(log, "spool: removed leftover temporary file")
		if m := loaded.FindStringSubmatch(log); m != nil {
			v, _ := strconv.Atoi(m[1])
			maxLoaded = max(maxLoaded, v)
		}
	}

	summary := fmt.Sprintf("%s seed=%d sent=%d acknowledged=%d delivered=%d lost=%d duplicates=%d "+
		"refused=%d cut_off=%d kills=%d kills_before_spool_loaded=%d kills_after_load_before_listening=%d retries_before_data=%d "+
		"quarantined=%d temp_removed=%d max_spool_loaded=%d send_time=%s total_time=%s",
		crashSummaryID, seed, n, len(res.acked), len(got), len(missing), duplicates,
		res.refused, res.cutOff, kills, loadKills, startupKills, res.retries,
		quarantined, tempRemoved, maxLoaded, sendTime.Round(time.Second), time.Since(start).Round(time.Second))
	t.Log(summary)
	t.Logf("delivered without a 250 seen by the client: %d; deliveries in all: %d; upstream connections: %d",
		unacked, deliveries, len(up.Sessions()))
	if f := os.Getenv("SEALRELAY_CRASH_REPORT"); f != "" {
		if err := os.WriteFile(f, []byte(summary+"\n"), 0o644); err != nil {
			t.Errorf("writing SEALRELAY_CRASH_REPORT: %v", err)
		}
	}
	if len(missing) > 0 {
		show := missing[:min(len(missing), 20)]
		t.Errorf("lost: %d acknowledged messages never reached the upstream within %s, e.g. %s",
			len(missing), wait, strings.Join(show, " "))
	}
	if len(res.acked) == 0 {
		t.Error("no message was acknowledged at all")
	}
}

// listeningAt finds the time of the agent's "listening" log line.
var listeningAt = regexp.MustCompile(`time=(\S+) level=INFO msg=listening `)

// crashSenders are the clients of the crash loop. They share a counter of
// messages to send and the tallies of outcomes.
type crashSenders struct {
	addr   string
	ctx    context.Context
	outage func(i int) // called as message i is taken
	next   atomic.Int64

	mu                               sync.Mutex
	acked                            map[string]bool
	refused, cutOff, retries, gaveUp int
}

type crashResult struct {
	acked                            map[string]bool
	refused, cutOff, retries, gaveUp int
}

func (s *crashSenders) result() crashResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return crashResult{acked: s.acked, refused: s.refused, cutOff: s.cutOff, retries: s.retries, gaveUp: s.gaveUp}
}

// run sends messages until n have been sent.
func (s *crashSenders) run(n int) {
	for {
		i := int(s.next.Add(1)) - 1
		if i >= n || s.ctx.Err() != nil {
			return
		}
		s.outage(i)
		id := fmt.Sprintf("<crash.%d@rig>", i)
		outcome, retries := s.submit(id)
		s.mu.Lock()
		if s.acked == nil {
			s.acked = map[string]bool{}
		}
		s.retries += retries
		switch outcome {
		case submitAcked:
			s.acked[id] = true
		case submitRefused:
			s.refused++
		case submitCutOff:
			s.cutOff++
		case submitGaveUp:
			s.gaveUp++
		}
		s.mu.Unlock()
	}
}

type submitOutcome int

const (
	submitAcked   submitOutcome = iota // the client saw 250 after the data
	submitRefused                      // the agent answered the data with another code
	submitCutOff                       // the connection died after 354
	submitGaveUp                       // the agent could not be reached for crashGiveUp
)

// submit sends one message, retrying (on a new connection) while the
// transaction fails before the agent's 354: the agent is down, or was killed
// before DATA, so nothing can have been queued.
func (s *crashSenders) submit(id string) (submitOutcome, int) {
	deadline := time.Now().Add(crashGiveUp)
	for retries := 0; ; retries++ {
		outcome, final, _ := submitOnce(s.addr, id)
		if final {
			return outcome, retries
		}
		if time.Now().After(deadline) || s.ctx.Err() != nil {
			return submitGaveUp, retries
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// submitOnce runs one SMTP transaction with message id from
// app@client.test to user@example.net. final is false if it failed before
// the data could start; err says why it was not acknowledged. Every step
// has a deadline, so a hung agent fails it rather than the test's timeout.
func submitOnce(addr, id string) (outcome submitOutcome, final bool, err error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, false, err
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	c.CommandTimeout = 30 * time.Second
	c.SubmissionTimeout = 60 * time.Second
	from, to := "app@client.test", "user@example.net"
	if err := c.Hello("client.test"); err != nil {
		return 0, false, err
	}
	if err := c.Mail(from, nil); err != nil {
		return 0, false, err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return 0, false, err
	}
	w, err := c.Data()
	if err != nil {
		return 0, false, err
	}
	if _, err := w.Write([]byte(testMessage(from, to, id))); err != nil {
		return submitCutOff, true, err
	}
	err = w.Close()
	var se *smtp.SMTPError
	switch {
	case err == nil:
		c.Quit() //nolint:errcheck // the message is acknowledged
		return submitAcked, true, nil
	case errors.As(err, &se):
		return submitRefused, true, err
	default:
		return submitCutOff, true, err
	}
}

// waitDelivered waits up to d until the upstream holds every Message-ID in
// want, and returns those still missing.
func waitDelivered(up *upstream.Server, want map[string]bool, d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		have := map[string]bool{}
		for _, m := range up.Messages() {
			have[m.MessageID] = true
		}
		var missing []string
		for id := range want {
			if !have[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// fixedPort returns a free 127.0.0.1 address below the kernel's ephemeral
// port range, so that no outgoing connection can take the port while the
// agent is down between a kill and its restart.
func fixedPort(t *testing.T, rng *rand.Rand) string {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := bytes.Fields(b); len(f) == 2 {
			if v, err := strconv.Atoi(string(f[0])); err == nil && v > 20000 {
				low = v
			}
		}
	}
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rng.IntN(low-20000))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free port found for the agent")
	return ""
}

// envInt reads a positive integer from the environment, or returns def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}
