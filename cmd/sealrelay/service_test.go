package main

import (
	"bufio"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/sdnotifytest"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// The systemd side of `sealrelay serve`: the notify protocol against a
// socket the test plays systemd on, and the unit file in dist/systemd
// checked by systemd-analyze.

// statusAddr reads the listening address from a STATUS= line.
var statusAddr = regexp.MustCompile(`^listening on (\S+); (\d+) queued$`)

// greets dials addr once and reads the SMTP greeting.
func greets(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return bufio.NewReader(c).ReadString('\n')
}

// TestServiceNotify runs `sealrelay serve` as systemd would with
// Type=notify and WatchdogSec=1s: READY=1 comes when the SMTP port already
// answers, WATCHDOG=1 pings repeat with the queue size in the status,
// SIGHUP is framed by RELOADING=1 and READY=1, and SIGTERM brings
// STOPPING=1, after which the pings stop and the process exits 0.
func TestServiceNotify(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	sock := sdnotifytest.Listen(t)
	// WATCHDOG_PID is left out, which go-systemd takes as "this process"
	// (the PID is not known before the start).
	p := launchProcess(t, cfg, "NOTIFY_SOCKET="+sock.Path, "WATCHDOG_USEC=1000000")

	ready, pos, ok := sock.WaitFor("READY=1", 0, 20*time.Second)
	if !ok {
		t.Fatalf("no READY=1 within 20s; messages %v", sock.Messages())
	}
	m := statusAddr.FindStringSubmatch(ready.Value("STATUS"))
	if m == nil {
		t.Fatalf("READY=1 came with status %q, want the address and queue size", ready.Value("STATUS"))
	}
	if line, err := greets(m[1]); err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("at READY=1 the SMTP port did not greet: %q, %v", line, err)
	}
	for _, msg := range sock.Messages()[:pos] {
		if msg.Has("WATCHDOG=1") {
			t.Errorf("a watchdog ping came before READY=1: %q", msg.Lines)
		}
	}
	p.waitListening(t)
	if p.addr != m[1] {
		t.Errorf("status says %s, the log %s", m[1], p.addr)
	}

	// Pings repeat, at half the interval.
	first, at, ok := sock.WaitFor("WATCHDOG=1", pos, 5*time.Second)
	if !ok {
		t.Fatal("no WATCHDOG=1 within 5s")
	}
	last := first
	for range 3 {
		if last, at, ok = sock.WaitFor("WATCHDOG=1", at+1, 5*time.Second); !ok {
			t.Fatal("watchdog pings did not repeat")
		}
	}
	// Half the interval apart: three gaps take about 1.5s; under a second
	// means they come too often (timers never fire early; a slow machine may
	// make them later, which is not checked).
	if span := last.At.Sub(first.At); span < time.Second {
		t.Errorf("4 pings over %v; want them half the 1s watchdog interval apart", span)
	}
	if !statusAddr.MatchString(last.Value("STATUS")) {
		t.Errorf("ping status %q", last.Value("STATUS"))
	}

	if err := send(p.addr, "app@client.test", "user@example.net", "<svc.1@rig>"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(1, 20*time.Second); err != nil {
		t.Fatal(err)
	}

	n := len(sock.Messages())
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, rpos, ok := sock.WaitFor("RELOADING=1", n, 10*time.Second)
	if !ok {
		t.Fatal("no RELOADING=1 after SIGHUP")
	}
	if _, _, ok := sock.WaitFor("READY=1", rpos+1, 10*time.Second); !ok {
		t.Fatal("no READY=1 after RELOADING=1")
	}

	n = len(sock.Messages())
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_, spos, ok := sock.WaitFor("STOPPING=1", n, 10*time.Second)
	if !ok {
		t.Fatal("no STOPPING=1 after SIGTERM")
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
	for _, msg := range sock.Messages()[spos:] {
		if msg.Has("WATCHDOG=1") {
			t.Errorf("a watchdog ping after STOPPING=1: %q", msg.Lines)
		}
	}
}

// TestWatchdogStopsWhenSchedulerWedged wedges the spool's scheduler loop
// through the spool.TestHookProbe seam in an agent running in this
// process: the watchdog pings stop (so systemd would restart the agent),
// the status and the log say why, the listener still takes mail, and when
// the wedge ends the pings resume and the mail goes out.
func TestWatchdogStopsWhenSchedulerWedged(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", "")
	var wedged atomic.Bool
	release := make(chan struct{})
	spool.TestHookProbe = func() {
		if wedged.Load() {
			<-release
		}
	}
	t.Cleanup(func() { spool.TestHookProbe = nil }) // after the agent stopped

	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	a := startAgent(t, rigConfig(t, dir, up.Addr(), relayOpts{}, ""))
	var once sync.Once
	unwedge := func() { wedged.Store(false); once.Do(func() { close(release) }) }
	t.Cleanup(unwedge) // before the agent stops: Run waits for the loop

	_, pos, ok := sock.WaitFor("READY=1", 0, 10*time.Second)
	if !ok {
		t.Fatal("no READY=1")
	}
	if _, _, ok := sock.WaitFor("WATCHDOG=1", pos, 5*time.Second); !ok {
		t.Fatal("no WATCHDOG=1 before the wedge")
	}

	n := len(sock.Messages())
	wedged.Store(true)
	var stuck string
	waitFor(t, 10*time.Second, "a not-alive status", func() bool {
		for _, m := range sock.Messages()[n:] {
			if s := m.Value("STATUS"); strings.HasPrefix(s, "not alive: ") {
				stuck = s
				return true
			}
		}
		return false
	})
	if !strings.Contains(stuck, "scheduler loop") {
		t.Errorf("status %q does not name the scheduler loop", stuck)
	}
	pings := sock.Count("WATCHDOG=1")
	// Mail is still taken (the listener is alive) but not handed out.
	if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<wedged@rig>"); err != nil {
		t.Fatalf("with the scheduler wedged the listener refused: %v", err)
	}
	time.Sleep(2500 * time.Millisecond) // two and a half watchdog intervals
	if got := sock.Count("WATCHDOG=1") - pings; got != 0 {
		t.Errorf("%d watchdog pings while the scheduler loop was wedged", got)
	}
	if up.Count() != 0 {
		t.Errorf("%d messages delivered while the scheduler loop was wedged", up.Count())
	}
	if !strings.Contains(a.logs.String(), "watchdog: not pinging systemd") {
		t.Errorf("the log does not say the watchdog stopped:\n%s", a.logs.String())
	}

	n = len(sock.Messages())
	unwedge()
	if _, _, ok := sock.WaitFor("WATCHDOG=1", n, 5*time.Second); !ok {
		t.Fatal("pings did not resume after the wedge")
	}
	if err := up.WaitMessages(1, 20*time.Second); err != nil {
		t.Fatalf("the message taken during the wedge: %v", err)
	}
}

// unitPath is the unit file in the repository.
const unitPath = "../../dist/systemd/sealrelay.service"

// unitForTest writes the unit, with the drop-ins named appended, to a temp
// dir with ExecStart= pointing at the built binary: systemd-analyze
// verify checks that the command exists, and /usr/bin/sealrelay does not
// exist on a build machine.
func unitForTest(t *testing.T, dropIns ...string) string {
	t.Helper()
	text := readTestFile(t, unitPath)
	for _, d := range dropIns {
		text += "\n" + readTestFile(t, d)
	}
	if !strings.Contains(text, "ExecStart=/usr/bin/sealrelay ") {
		t.Fatalf("%s: ExecStart= does not run /usr/bin/sealrelay", unitPath)
	}
	text = strings.ReplaceAll(text, "ExecStart=/usr/bin/sealrelay ", "ExecStart="+builtBinary(t)+" ")
	path := filepath.Join(t.TempDir(), "sealrelay.service")
	writeTestFile(t, path, text)
	return path
}

func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is not installed (tools/deps.sh installs it)")
	}
	return p
}

// TestUnitVerify: systemd-analyze verify accepts the unit, alone and with
// the credential drop-in, without a single warning (it exits 0 on unknown
// keys and bad values, so the output must be empty).
func TestUnitVerify(t *testing.T) {
	bin := systemdAnalyze(t)
	for name, dropIns := range map[string][]string{
		"unit":               nil,
		"credential drop-in": {"../../dist/systemd/sealrelay-credential.service.d/credential.conf"},
	} {
		out, err := exec.Command(bin, "verify", unitForTest(t, dropIns...)).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) != 0 {
			t.Errorf("%s: systemd-analyze verify: %v\n%s", name, err, out)
		}
	}
}

// overallExposure reads systemd-analyze security's overall figure.
var overallExposure = regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`)

// TestUnitSecurity: systemd-analyze security rates the unit 2.0 or lower
// ("OK" ends at 4.9; 0 is the best, 10 is an unsandboxed service).
func TestUnitSecurity(t *testing.T) {
	bin := systemdAnalyze(t)
	out, err := exec.Command(bin, "security", "--offline=true", unitForTest(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := overallExposure.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in:\n%s", out)
	}
	level, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security --offline=true: overall exposure level %.1f", level)
	if level > 2.0 {
		t.Errorf("exposure level %.1f, want 2.0 or lower:\n%s", level, out)
	}
}
