package sdnotify

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/sdnotifytest"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

func newNotifier(t *testing.T) (*Notifier, *testlib.LogBuf) {
	t.Helper()
	logs := &testlib.LogBuf{}
	return New(slog.New(slog.NewTextHandler(logs, nil))), logs
}

// TestNoSocket: without NOTIFY_SOCKET nothing is enabled and Run returns
// at once, even with a watchdog interval in the environment.
func TestNoSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000000")
	n, _ := newNotifier(t)
	if n.Enabled() || n.WatchdogInterval() != 0 {
		t.Fatalf("enabled %v, watchdog %v without NOTIFY_SOCKET", n.Enabled(), n.WatchdogInterval())
	}
	done := make(chan struct{})
	go func() {
		n.Run(context.Background(), func(context.Context) error { return nil }, func() string { return "" })
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return without NOTIFY_SOCKET")
	}
}

// TestMessages: the states go out as systemd reads them, with a one-line
// STATUS.
func TestMessages(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "")
	n, _ := newNotifier(t)
	if !n.Enabled() || n.WatchdogInterval() != 0 {
		t.Fatalf("enabled %v, watchdog %v", n.Enabled(), n.WatchdogInterval())
	}
	n.Ready("listening\non x")
	n.Reloading()
	n.Status("3 queued")
	n.Stopping("")
	if _, _, ok := sock.WaitFor("STOPPING=1", 0, 5*time.Second); !ok {
		t.Fatal("no STOPPING=1")
	}
	got := sock.Messages()
	if len(got) != 4 {
		t.Fatalf("%d messages, want 4: %q", len(got), got)
	}
	if !got[0].Has("READY=1") || got[0].Value("STATUS") != "listening on x" {
		t.Errorf("ready message %q", got[0].Lines)
	}
	us, err := strconv.ParseInt(got[1].Value("MONOTONIC_USEC"), 10, 64)
	if !got[1].Has("RELOADING=1") || err != nil || us <= 0 {
		t.Errorf("reloading message %q: want RELOADING=1 and MONOTONIC_USEC", got[1].Lines)
	}
	if len(got[2].Lines) != 1 || got[2].Value("STATUS") != "3 queued" {
		t.Errorf("status message %q", got[2].Lines)
	}
	if len(got[3].Lines) != 1 || !got[3].Has("STOPPING=1") {
		t.Errorf("stopping message %q", got[3].Lines)
	}
}

// TestWatchdog: pings come at half the interval while the check passes,
// stop while it fails or hangs (said once in the log and the status), and
// come back with it.
func TestWatchdog(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "400000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n, logs := newNotifier(t)
	if n.WatchdogInterval() != 400*time.Millisecond {
		t.Fatalf("watchdog interval %v, want 400ms", n.WatchdogInterval())
	}
	var mode atomic.Int32 // 0 alive, 1 failing, 2 hanging
	check := func(ctx context.Context) error {
		switch mode.Load() {
		case 1:
			return errors.New("the loop is stuck")
		case 2:
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx, check, func() string { return "fine" }); close(done) }()

	m, pos, ok := sock.WaitFor("WATCHDOG=1", 0, 5*time.Second)
	if !ok || m.Value("STATUS") != "fine" {
		t.Fatalf("first ping %q (ok %v), want WATCHDOG=1 with the status", m.Lines, ok)
	}
	if _, _, ok := sock.WaitFor("WATCHDOG=1", pos+2, 5*time.Second); !ok {
		t.Fatal("pings did not repeat")
	}

	for _, md := range []int32{1, 2} {
		from := len(sock.Messages())
		mode.Store(md)
		// The first round that sees the failure says so in the status;
		// from then on, no pings.
		waitNotAlive(t, sock, from)
		before := sock.Count("WATCHDOG=1")
		time.Sleep(1200 * time.Millisecond) // six rounds
		if after := sock.Count("WATCHDOG=1"); after != before {
			t.Errorf("mode %d: %d pings while the check did not pass", md, after-before)
		}
		mode.Store(0)
		if _, _, ok := sock.WaitFor("WATCHDOG=1", len(sock.Messages()), 5*time.Second); !ok {
			t.Fatalf("mode %d: pings did not resume", md)
		}
	}
	cancel()
	<-done

	text := logs.String()
	if c := strings.Count(text, "the loop is stuck"); c != 1 {
		t.Errorf("the failing check was logged %d times, want once:\n%s", c, text)
	}
	if c := strings.Count(text, "alive again"); c != 2 {
		t.Errorf("recovery logged %d times, want 2:\n%s", c, text)
	}
	var statuses []string
	for _, m := range sock.Messages() {
		if s := m.Value("STATUS"); strings.HasPrefix(s, "not alive") {
			statuses = append(statuses, s)
		}
	}
	if len(statuses) != 2 || statuses[0] != "not alive: the loop is stuck" || !strings.Contains(statuses[1], "deadline exceeded") {
		t.Errorf("not-alive statuses %q", statuses)
	}
}

// waitNotAlive waits for a "not alive" status after message from.
func waitNotAlive(t *testing.T, sock *sdnotifytest.Socket, from int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range sock.Messages()[from:] {
			if strings.HasPrefix(m.Value("STATUS"), "not alive: ") {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no \"not alive\" status within 5s")
}

// TestWatchdogOtherPID: a watchdog meant for another process is not ours.
func TestWatchdogOtherPID(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "400000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	n, _ := newNotifier(t)
	if n.WatchdogInterval() != 0 {
		t.Fatalf("watchdog interval %v for another PID, want 0", n.WatchdogInterval())
	}
}

// TestSendFailure: a socket that went away is reported once, not at every
// message.
func TestSendFailure(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", t.TempDir()+"/gone")
	n, logs := newNotifier(t)
	n.Ready("a")
	n.Status("b")
	if c := strings.Count(logs.String(), "cannot notify systemd"); c != 1 {
		t.Errorf("failure logged %d times, want once:\n%s", c, logs.String())
	}
	if !strings.Contains(logs.String(), "NOTIFY_SOCKET") {
		t.Errorf("the failure does not name NOTIFY_SOCKET:\n%s", logs.String())
	}
}
