package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/rig"
)

// The sessions benchmark (`go run ./bench sessions`, `make bench-sessions`):
// many inbound sessions at once, each sending one large message slowly,
// against the built sealrelay binary relaying to the upstream (STARTTLS and
// AUTH PLAIN, as in the throughput benchmark). It reports the agent's peak
// resident memory (VmHWM from /proc/PID/status, and the highest VmRSS
// sampled every 100 ms) and its open files (entries of /proc/PID/fd,
// sampled). The target is a peak RSS under 128 MiB with 1000 sessions of
// 1 MiB each.

// sessionsOptions configure one sessions benchmark.
type sessionsOptions struct {
	sessions int
	size     int
	over     time.Duration // each message is sent over this long
	bin, dir string
	keep     bool
	verbose  bool
	timeout  time.Duration
}

// runSessionsCmd is the sessions subcommand.
func runSessionsCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench sessions", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o sessionsOptions
	fs.IntVar(&o.sessions, "sessions", 1000, "concurrent inbound sessions, one message each")
	fs.IntVar(&o.size, "size", 1<<20, "bytes per message, headers included")
	fs.DurationVar(&o.over, "over", 15*time.Second, "how long each session takes to send its message")
	fs.StringVar(&o.bin, "bin", "", "sealrelay binary to run (default: build ./cmd/sealrelay)")
	fs.StringVar(&o.dir, "dir", "", "directory for sealrelay's state (default: the system temp dir)")
	fs.BoolVar(&o.keep, "keep", false, "keep sealrelay's directory (config, spool) and print where")
	fs.BoolVar(&o.verbose, "v", false, "print sealrelay's log to stderr")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "longest the run may take, deliveries included")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || o.sessions < 1 || o.size < 1024 || o.over <= 0 {
		fmt.Fprintln(stderr, "bench: usage: go run ./bench sessions [-sessions N] [-size BYTES] [-over DURATION] [flags]; see -h")
		return 2
	}
	ctx, stop := signalContext(stderr)
	defer stop()
	if err := sessionsBenchmark(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

// procSample is what the sampler saw of the agent.
type procSample struct {
	peakRSS   int64 // highest VmRSS sampled
	peakFDs   int   // most open files sampled
	hwm       int64 // VmHWM: the kernel's own peak RSS
	startRSS  int64
	startFDs  int
	endFDs    int
	samples   int
	sampleErr error
}

// sessionsBenchmark runs one sessions benchmark and prints its report.
func sessionsBenchmark(ctx context.Context, o sessionsOptions, stdout, stderr io.Writer) error {
	base, err := os.MkdirTemp(o.dir, "sealrelay-sessions-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			fmt.Fprintf(stderr, "bench: kept %s\n", base)
		} else {
			os.RemoveAll(base)
		}
	}()
	if o.bin, err = buildIfNeeded(o.bin, base, stderr); err != nil {
		return err
	}
	pass := randomPassword()
	up, err := startRelayHost(pass)
	if err != nil {
		return err
	}
	defer up.Close()

	// The limits must let every session in: max_sessions defaults to 100
	// and max_sessions_per_client to 20, and every session comes from
	// 127.0.0.1.
	limit := o.sessions + 10
	setup, err := rig.WriteSetup(base, rig.Options{
		Relay: up.Addr(), User: benchUser, Password: pass, CAPEM: up.CAPEM(), MaxConnections: 20,
		ListenExtra: fmt.Sprintf("max_sessions = %d\nmax_sessions_per_client = %d\n", limit, limit),
	})
	if err != nil {
		return err
	}
	var logw io.Writer
	if o.verbose {
		logw = stderr
	}
	p, err := rig.StartProcess(o.bin, setup.Config, logw)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 35*time.Second)
		defer cancel()
		p.Stop(sctx) //nolint:errcheck // the figures are taken; a slow stop is not the benchmark's concern
	}()
	pid := p.PID()

	s := &procSample{}
	s.startRSS = procKB(procStatus(pid), "VmRSS:")
	s.startFDs, _ = openFiles(pid)
	stopSampling := sampleProc(pid, s)

	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	start := time.Now()
	accepted, failures := slowSessions(ctx, p.Addr(), o)
	sent := time.Since(start)
	for up.Count() < int(accepted) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	delivered := time.Since(start)
	s.hwm = procKB(procStatus(pid), "VmHWM:")
	s.endFDs, _ = openFiles(pid)
	stopSampling()

	writeSessionsReport(stdout, o, s, accepted, up.Count(), sent, delivered, failures)
	if len(failures) > 0 {
		return fmt.Errorf("%d of %d sessions failed; the first: %w", len(failures), o.sessions, failures[0])
	}
	if up.Count() < o.sessions {
		return fmt.Errorf("%w: %d of %d", errNotAll, up.Count(), o.sessions)
	}
	return s.sampleErr
}

// slowSessions opens o.sessions sessions at once (their starts spread over
// the first second) and sends one message of o.size bytes on each, in 64
// pieces spread over o.over. It returns how many were accepted with 250
// and the errors of the others.
func slowSessions(ctx context.Context, addr string, o sessionsOptions) (accepted int64, failures []error) {
	body := fillerBody(o.size)
	const pieces = 64
	piece := (len(body) + pieces - 1) / pieces
	gap := o.over / pieces
	var n atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range o.sessions {
		wg.Go(func() {
			err := slowSession(ctx, addr, i, body, piece, gap, time.Duration(rand.Int64N(int64(time.Second))))
			if err != nil {
				mu.Lock()
				failures = append(failures, fmt.Errorf("session %d: %w", i+1, err))
				mu.Unlock()
				return
			}
			n.Add(1)
		})
	}
	wg.Wait()
	return n.Load(), failures
}

// slowSession sends one message: after delay, EHLO, MAIL, RCPT, DATA, the
// body piece by piece with gap between pieces, and the final dot.
func slowSession(ctx context.Context, addr string, i int, body []byte, piece int, gap, delay time.Duration) error {
	if !sleepCtx(ctx, delay) {
		return ctx.Err()
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := c.Hello("slow" + strconv.Itoa(i) + ".bench.test"); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if err := c.Mail("loadgen@bench.test", nil); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt("sink@example.net", nil); err != nil {
		return fmt.Errorf("RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	hdr := fmt.Sprintf("From: loadgen@bench.test\r\nTo: sink@example.net\r\nSubject: slow session %d\r\nMessage-ID: <slow.%d@bench.test>\r\n\r\n", i, i)
	if _, err := io.WriteString(w, hdr); err != nil {
		return err
	}
	for off := 0; off < len(body); off += piece {
		if _, err := w.Write(body[off:min(off+piece, len(body))]); err != nil {
			return fmt.Errorf("message: %w", err)
		}
		if !sleepCtx(ctx, gap) {
			return ctx.Err()
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return c.Quit()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// sampleProc samples the agent's VmRSS and open files every 100 ms into s
// until the returned function is called.
func sampleProc(pid int, s *procSample) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s.peakRSS = max(s.peakRSS, procKB(procStatus(pid), "VmRSS:"))
			fds, err := openFiles(pid)
			if err != nil && s.sampleErr == nil {
				s.sampleErr = fmt.Errorf("counting open files: %w", err)
			}
			s.peakFDs = max(s.peakFDs, fds)
			s.samples++
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return sync.OnceFunc(func() { close(done); wg.Wait() })
}

func procStatus(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/status" }

// openFiles counts the entries of /proc/PID/fd.
func openFiles(pid int) (int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

// rssTarget is the peak RSS the agent should stay under with 1000
// sessions of 1 MiB.
const rssTarget = 128 << 20

// writeSessionsReport prints the figures as Markdown.
func writeSessionsReport(w io.Writer, o sessionsOptions, s *procSample, accepted int64, delivered int, sent, done time.Duration, failures []error) {
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	fmt.Fprintf(w, "## sealrelay sessions benchmark, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "- command: `go run ./bench %s`\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(w, "- machine: %d CPUs, %s/%s, %s, load average %s\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), loadAvg())
	size := fmt.Sprintf("%d KiB", o.size>>10)
	if o.size >= 1<<20 {
		size = mib(int64(o.size))
	}
	fmt.Fprintf(w, "- %d sessions at once, each sending one %s message over %s\n", o.sessions, size, o.over)
	fmt.Fprintf(w, "- accepted (250): %d of %d, the last after %s; delivered to the upstream: %d, after %s\n",
		accepted, o.sessions, sent.Round(time.Millisecond), delivered, done.Round(time.Millisecond))
	if len(failures) > 0 {
		fmt.Fprintf(w, "- failed sessions: %d (first: %v)\n", len(failures), failures[0])
	}
	verdict := "met"
	if s.hwm >= rssTarget {
		verdict = "not met"
	}
	fmt.Fprintf(w, "\n| agent | before | peak |\n|---|---|---|\n")
	fmt.Fprintf(w, "| RSS (VmHWM; sampled VmRSS) | %s | %s; %s |\n", mib(s.startRSS), mib(s.hwm), mib(s.peakRSS))
	fmt.Fprintf(w, "| open files (/proc/PID/fd, sampled) | %d | %d (%d after the run) |\n", s.startFDs, s.peakFDs, s.endFDs)
	fmt.Fprintf(w, "\nTarget: peak RSS under %s: %s (%d samples).\n", mib(rssTarget), verdict, s.samples)
}

// signalContext is cancelled by the first SIGINT or SIGTERM. Later ones
// are caught too, so that a second Ctrl-C cannot leave Postfix or
// sealrelay running: cleanup follows.
func signalContext(stderr io.Writer) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			if ctx.Err() == nil {
				fmt.Fprintf(stderr, "bench: %v: stopping and cleaning up\n", s)
			} else {
				fmt.Fprintln(stderr, "bench: still cleaning up, please wait")
			}
			cancel(fmt.Errorf("interrupted by %v", s))
		}
	}()
	return ctx, func() { signal.Stop(sigs); cancel(nil) }
}
