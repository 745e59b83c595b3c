package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if got := percentile(ds, 50); got != 50*time.Millisecond {
		t.Errorf("p50 of 1..100 ms = %v, want 50ms", got)
	}
	if got := percentile(ds, 99); got != 99*time.Millisecond {
		t.Errorf("p99 of 1..100 ms = %v, want 99ms", got)
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("p99 of one value = %v, want it", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v, want 0", got)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {nil, 0}} {
		if got := median(tc.xs); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

// TestSummaryRatio: the ratio column is the median of the per-round
// ratios, not the ratio of the medians.
func TestSummaryRatio(t *testing.T) {
	wl := Workload{Size: 2048, Sessions: 10, PerConn: 1, Messages: 100}
	sec := func(n float64) time.Duration { return time.Duration(float64(time.Second) * n) }
	// Postfix 100, 25, 200 msg/s (median 100); sealrelay 200, 100, 1000
	// (median 200). Per-round ratios 2, 4, 5: median 4, where the ratio
	// of the medians would be 2.
	rs := []Result{
		{Round: 1, Workload: wl, Contender: Postfix, Messages: 100, Delivered: sec(1)},
		{Round: 1, Workload: wl, Contender: Sealrelay, Messages: 100, Delivered: sec(0.5)},
		{Round: 2, Workload: wl, Contender: Postfix, Messages: 100, Delivered: sec(4)},
		{Round: 2, Workload: wl, Contender: Sealrelay, Messages: 100, Delivered: sec(1)},
		{Round: 3, Workload: wl, Contender: Postfix, Messages: 100, Delivered: sec(0.5)},
		{Round: 3, Workload: wl, Contender: Sealrelay, Messages: 100, Delivered: sec(0.1)},
	}
	var b bytes.Buffer
	writeSummary(&b, rs, []Workload{wl}, []string{Postfix, Sealrelay})
	out := b.String()
	if !strings.Contains(out, "| 2KB-10x1 | 100 | 200 | 4.00× |") {
		t.Fatalf("summary:\n%s\nwant the row 2KB-10x1 | 100 | 200 | 4.00×", out)
	}
	if !strings.Contains(out, "sealrelay/Postfix") {
		t.Fatalf("summary lacks the ratio column:\n%s", out)
	}
}

func TestPickErrors(t *testing.T) {
	if _, err := pickWorkloads("2KB-10x1,3KB-1x1", 0); err == nil || !strings.Contains(err.Error(), `unknown workload "3KB-1x1"`) ||
		!strings.Contains(err.Error(), "100KB-100x20") {
		t.Errorf("pickWorkloads with an unknown name: %v", err)
	}
	if _, err := pickContenders("postfix,exim"); err == nil || !strings.Contains(err.Error(), `unknown contender "exim"`) {
		t.Errorf("pickContenders with an unknown name: %v", err)
	}
	var stderr bytes.Buffer
	if code := run([]string{"-rounds", "0"}, &bytes.Buffer{}, &stderr); code != 2 || !strings.Contains(stderr.String(), "usage") {
		t.Errorf("run -rounds 0 = %d, %q; want 2 and a usage message", code, stderr.String())
	}
}

// TestDefaultWorkloads: eight workloads, each filling at least one
// connection per session.
func TestDefaultWorkloads(t *testing.T) {
	ws := defaultWorkloads(0)
	if len(ws) != 8 {
		t.Fatalf("%d workloads, want 8", len(ws))
	}
	for _, w := range ws {
		if w.Messages < w.Sessions*w.PerConn {
			t.Errorf("%s sends %d messages: fewer than a full connection per session", w.Name(), w.Messages)
		}
	}
}

// stateDir is a directory the postfix user can search, removed at the end.
func stateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bench-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// leftovers returns the processes whose command line or working directory
// mentions dir.
func leftovers(dir string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == strconv.Itoa(os.Getpid()) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && bytes.HasPrefix(bytes.TrimSpace(stat[i+1:]), []byte("Z")) {
			continue // exited, not yet reaped
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if bytes.Contains(cmd, []byte(dir)) || strings.HasPrefix(cwd, dir) {
			out = append(out, e.Name()+" "+string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
		}
	}
	return out
}

// checkCleanedUp checks that no process runs from dir and that dir is
// empty.
func checkCleanedUp(t *testing.T, dir string) {
	t.Helper()
	if left := leftovers(dir); len(left) > 0 {
		t.Errorf("processes left running: %v", left)
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("state left in %s: %v", dir, ents)
	}
}

// TestSmoke runs the whole harness once, tiny: every contender, one
// workload, one round. It prints both tables and leaves nothing running.
func TestSmoke(t *testing.T) {
	smoke(t, []string{"-rounds", "1", "-workloads", "2KB-10x20", "-messages", "40"},
		"| 1 | 2KB-10x20 | direct |", "| 1 | 2KB-10x20 | postfix |", "| 1 | 2KB-10x20 | sealrelay |",
		"### Medians of 1 rounds", "sealrelay/Postfix", "- messages per run: 2KB-10x20: 40")
}

// TestPlainSmoke: the plain ceiling (AUTH without TLS) runs when asked
// for, and gets its ratio column.
func TestPlainSmoke(t *testing.T) {
	smoke(t, []string{"-rounds", "1", "-workloads", "2KB-10x1", "-messages", "20", "-contenders", "plain,sealrelay", "-idle", "0", "-restart", "0"},
		"| 1 | 2KB-10x1 | plain |", "| 1 | 2KB-10x1 | sealrelay |", "sealrelay/plain")
}

// smoke runs the harness with args in a state directory of its own,
// checks that it succeeds and prints each of want, and that it leaves
// nothing running or on disk.
func smoke(t *testing.T, args []string, want ...string) {
	t.Helper()
	dir := stateDir(t)
	var stdout, stderr bytes.Buffer
	if code := run(append(args, "-dir", dir), &stdout, &stderr); code != 0 {
		t.Fatalf("bench exited %d\nstderr:\n%s", code, stderr.String())
	}
	out := stdout.String()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	checkCleanedUp(t, dir)
}

// TestCancelCleansUp: cancelling a run (what SIGINT does) while Postfix and
// sealrelay run stops both and removes their state.
func TestCancelCleansUp(t *testing.T) {
	dir := stateDir(t)
	wls, err := pickWorkloads("2KB-10x1", 400)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancel once the first run has finished: the second contender is then
	// starting its run or in it.
	stderr := &cancelOnWrite{match: "round 1", cancel: cancel}
	opt := options{rounds: 1, workloads: wls, contenders: []string{Postfix, Sealrelay}, dir: dir, timeout: time.Minute}
	err = benchmark(ctx, opt, &bytes.Buffer{}, stderr)
	if err == nil {
		t.Fatal("a cancelled benchmark returned no error")
	}
	checkCleanedUp(t, dir)
}

type cancelOnWrite struct {
	mu     sync.Mutex
	b      bytes.Buffer
	match  string
	cancel func()
}

func (c *cancelOnWrite) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.b.Write(p)
	if strings.Contains(c.b.String(), c.match) {
		c.cancel()
	}
	return len(p), nil
}

// TestMemOf: this process has a resident and a proportional set size; a
// process that does not exist counts as nothing.
func TestMemOf(t *testing.T) {
	rss, pss := memOf([]int{os.Getpid()})
	if rss <= 0 || pss <= 0 || pss > rss {
		t.Fatalf("memOf(self) = RSS %d, PSS %d; want 0 < PSS <= RSS", rss, pss)
	}
	if rss, pss := memOf([]int{1 << 30}); rss != 0 || pss != 0 {
		t.Fatalf("memOf(no such process) = %d, %d; want 0, 0", rss, pss)
	}
}

// TestSessionsSmoke runs the sessions benchmark tiny: every session is
// accepted and delivered, the report has its figures, and nothing is left
// running.
func TestSessionsSmoke(t *testing.T) {
	dir := stateDir(t)
	var stdout, stderr bytes.Buffer
	// 30 sessions: above the listener's default per-client limit (20), so
	// the benchmark's own limits are what lets them in.
	code := run([]string{"sessions", "-sessions", "30", "-size", "65536", "-over", "1s", "-dir", dir}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("bench sessions exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"- 30 sessions at once, each sending one 64 KiB message over 1s",
		"- accepted (250): 30 of 30,", "delivered to the upstream: 30,",
		"| RSS (VmHWM; sampled VmRSS) |", "| open files (/proc/PID/fd, sampled) |",
		"Target: peak RSS under 128.0 MiB: met",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	checkCleanedUp(t, dir)
	if code := run([]string{"sessions", "-sessions", "0"}, &bytes.Buffer{}, &stderr); code != 2 || !strings.Contains(stderr.String(), "usage: go run ./bench sessions") {
		t.Errorf("sessions -sessions 0 = %d, %q; want 2 and a usage message", code, stderr.String())
	}
}

// TestCPUOf: cpuOf agrees with getrusage for a process and the child it
// waited for, and counts a process that does not exist as nothing. It
// runs in a process of its own (this test binary again, cpuCheckEnv
// set): /proc counts each waited-for child's time in whole clock ticks,
// so the two drift apart by up to two ticks per child, and the tests
// before this one start many.
func TestCPUOf(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), cpuCheckEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the CPU check: %v\n%s", err, out)
	}
	if got := cpuOf([]int{1 << 30}); got != 0 {
		t.Fatalf("cpuOf(no such process) = %v, want 0", got)
	}
}

// cpuCheckEnv, set in the test binary's environment, makes it run
// cpuCheck instead of the tests; set to "child", it only burns 50 ms of
// CPU.
const cpuCheckEnv = "SEALRELAY_BENCH_CPU_CHECK"

// cpuCheck burns CPU, waits for a child that burns some too, and compares
// cpuOf(itself) with getrusage for itself and its children.
func cpuCheck() error {
	burn := func() {
		for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
		}
	}
	burn()
	if os.Getenv(cpuCheckEnv) == "child" {
		return nil
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), cpuCheckEnv+"=child")
	if out, err := child.CombinedOutput(); err != nil {
		return fmt.Errorf("child: %v\n%s", err, out)
	}
	proc, self := cpuOf([]int{os.Getpid()}), selfCPU()
	if proc <= 0 || self <= 0 {
		return fmt.Errorf("cpuOf(self) = %v, selfCPU() = %v; want both above 0", proc, self)
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return err
	}
	children := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if children < 40*time.Millisecond {
		return fmt.Errorf("getrusage says the child used %v, want about 50ms", children)
	}
	// Each of the four times /proc gives (utime, stime, cutime, cstime)
	// is rounded down to a clock tick.
	if d := self + children - proc; d < -clockTick || d > 4*clockTick {
		return fmt.Errorf("cpuOf(self) = %v and getrusage says %v (itself %v)", proc, self+children, self)
	}
	return nil
}

// TestFillerBody: the filler can go on the wire as it is, after the
// header: CRLF lines, none starting with a dot, and its size near the
// workload's.
func TestFillerBody(t *testing.T) {
	for _, size := range []int{2 << 10, 100 << 10} {
		b := fillerBody(size)
		if !bytes.HasSuffix(b, []byte("\r\n")) || bytes.Contains(b, []byte("\n.")) || b[0] == '.' {
			t.Errorf("filler for %d bytes is not ready for DATA as it is", size)
		}
		if bytes.Count(b, []byte("\n")) != bytes.Count(b, []byte("\r\n")) {
			t.Errorf("filler for %d bytes has a bare LF", size)
		}
		if d := size - 140 - len(b); d < 0 || d > 80 {
			t.Errorf("filler for %d bytes is %d bytes", size, len(b))
		}
	}
}
