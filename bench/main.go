// Command bench is sealrelay's throughput benchmark (`make bench`): it runs
// every contender against the same upstream in the same run, alternating,
// for several rounds, and prints Markdown tables.
//
// The upstream is internal/testing/upstream with STARTTLS and AUTH PLAIN required,
// counting messages and keeping no bodies (CountOnly). The contenders:
//
//   - direct: the upstream fed by the load generator itself (STARTTLS and
//     AUTH on every connection), the ceiling;
//   - plain (only when -contenders names it): the same without TLS, AUTH
//     PLAIN in the clear, the ceiling without the cost of TLS;
//   - nullhop (only when -contenders names it): the cheapest relay hop the
//     harness can build (nullhop.go), the floor under every relay;
//   - durablehop (only when -contenders names it): the null hop with
//     STARTTLS to the upstream and an fdatasync before each 250, the
//     floor under every relay that keeps this benchmark's promises;
//   - postfix: Postfix from Debian as an authenticated smarthost client,
//     tuned as a careful operator would (internal/testing/peers/postfixtest, Tuned):
//     relayhost = the upstream, SASL with a password map, TLS required,
//     TLS connection reuse through tlsproxy, 20 connections to the relay;
//     Postfix fsyncs each queue file before its 250, as by default;
//   - sealrelay: the built binary, its credential sealed with age, AUTH
//     required, 20 connections to the relay; it fsyncs before its 250.
//
// Workloads: 2 KB and 100 KB messages, 10 and 100 client sessions, 1 and
// 20 messages per client connection. For each round, workload and
// contender it prints delivered/s (until the upstream holds every
// message), accepted/s (until the last 250), the accept latency p50 and
// p99 (end of DATA to the 250), the peak memory, sampled from /proc
// every 200 ms: RSS summed over the contender's processes, as asked, and
// PSS, which counts each shared page once (summed RSS counts Postfix's
// shared libraries once per process), and the CPU time per message of
// the contender's processes and of the harness itself (load generator
// and upstream), which moves far less with the machine's load than the
// rates do. At the end it prints the medians per workload and the
// medians of the per-round sealrelay/Postfix and sealrelay/direct ratios
// of delivered/s, a table to paste into the README.
//
// The load generator speaks SMTP through go-smtp's client, one command at
// a time, and writes each message in one piece once DATA's 354 is in (the
// filler needs no dot-stuffing), as a client with its message ready does.
//
// Every process it starts (Postfix instances, sealrelay) is stopped when
// it ends, fails, or gets SIGINT/SIGTERM.
//
// Usage:
//
//	go run ./bench [-rounds 3] [-workloads all|NAME,...] [-contenders direct,plain,postfix,sealrelay,nullhop,durablehop]
//	               [-messages N] [-bin PATH] [-dir DIR] [-keep] [-v]
//	go run ./bench sessions [-sessions 1000] [-size 1048576] [-over 15s] [-bin PATH] [-dir DIR] [-keep] [-v]
//
// The second form is the sessions benchmark (sessions.go): many inbound
// sessions each sending a large message slowly, and the agent's peak RSS
// and open files.
//
// Workload names are SIZE-SESSIONSxPERCONN, e.g. 2KB-10x1 or 100KB-100x20.
// -keep leaves each contender's directory (config, spool, Postfix's queue
// and log) in place and prints where, for profiling.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sealrelay/sealrelay/internal/relayhost"
	"github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/internal/testing/peers/postfixtest"
)

// Messages per run, by message size: enough for steady state, few enough
// that the 72 runs of `make bench` end within 10 minutes on 2 cores. Every
// workload sends at least Sessions × PerConn messages, so each session
// fills at least one connection.
const (
	smallMessages = 2000
	largeMessages = 1000
)

func defaultWorkloads(messages int) []Workload {
	var ws []Workload
	for _, size := range []int{2 << 10, 100 << 10} {
		for _, sessions := range []int{10, 100} {
			for _, perConn := range []int{1, 20} {
				n := messages
				if n == 0 {
					n = smallMessages
					if size > 2<<10 {
						n = largeMessages
					}
					n = max(n, sessions*perConn)
				}
				ws = append(ws, Workload{Size: size, Sessions: sessions, PerConn: perConn, Messages: n})
			}
		}
	}
	return ws
}

type options struct {
	rounds     int
	workloads  []Workload
	contenders []string
	bin        string
	dir        string
	keep       bool
	verbose    bool
	timeout    time.Duration
	idle       int // idle sessions for the RSS measurement
	restart    int // queued messages for the restart measurement
}

func main() {
	if os.Getenv(nullhopEnv) != "" {
		os.Exit(runNullhop(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "sessions" {
		return runSessionsCmd(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rounds := fs.Int("rounds", 3, "rounds; each runs every workload on every contender")
	wlFlag := fs.String("workloads", "all", "comma-separated workload names (e.g. 2KB-10x1,100KB-100x20), or all")
	cFlag := fs.String("contenders", strings.Join(defaultContenders, ","), "comma-separated contenders: "+strings.Join(allContenders, ", "))
	messages := fs.Int("messages", 0, "messages per run (0: 2000 for 2 KB, 1000 for 100 KB, at least sessions × per-connection)")
	bin := fs.String("bin", "", "sealrelay binary to run (default: build ./cmd/sealrelay)")
	dir := fs.String("dir", "", "directory for the contenders' state (default: the system temp dir); postfix must be able to search it")
	keep := fs.Bool("keep", false, "keep each contender's directory (configs, spool, Postfix log) and print where")
	verbose := fs.Bool("v", false, "print sealrelay's and the harness's log to stderr")
	timeout := fs.Duration("timeout", 5*time.Minute, "longest a run may take before it counts as failed")
	idle := fs.Int("idle", 1000, "idle inbound sessions to hold open while measuring sealrelay's RSS (0: skip)")
	queued := fs.Int("restart", 100000, "messages queued before measuring a sealrelay restart (0: skip)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *rounds < 1 || *messages < 0 {
		fmt.Fprintln(stderr, "bench: usage: go run ./bench [flags]; see -h")
		return 2
	}
	opt := options{rounds: *rounds, bin: *bin, dir: *dir, keep: *keep, verbose: *verbose, timeout: *timeout, idle: *idle, restart: *queued}
	var err error
	if opt.workloads, err = pickWorkloads(*wlFlag, *messages); err == nil {
		opt.contenders, err = pickContenders(*cFlag)
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}

	ctx, stop := signalContext(stderr)
	defer stop()

	if err := benchmark(ctx, opt, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

func pickWorkloads(spec string, messages int) ([]Workload, error) {
	all := defaultWorkloads(messages)
	if spec == "all" {
		return all, nil
	}
	var out []Workload
	for _, name := range strings.Split(spec, ",") {
		i := slices.IndexFunc(all, func(w Workload) bool { return strings.EqualFold(w.Name(), strings.TrimSpace(name)) })
		if i < 0 {
			var names []string
			for _, w := range all {
				names = append(names, w.Name())
			}
			return nil, fmt.Errorf("-workloads: unknown workload %q (want all or some of %s)", name, strings.Join(names, ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

func pickContenders(spec string) ([]string, error) {
	var out []string
	for _, c := range strings.Split(spec, ",") {
		c = strings.ToLower(strings.TrimSpace(c))
		if !slices.Contains(allContenders, c) {
			return nil, fmt.Errorf("-contenders: unknown contender %q (want some of %s)", c, strings.Join(allContenders, ", "))
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// benchmark runs the rounds and prints the tables.
func benchmark(ctx context.Context, opt options, stdout, stderr io.Writer) (err error) {
	logLevel := slog.LevelWarn
	var srLog io.Writer
	if opt.verbose {
		logLevel, srLog = slog.LevelDebug, stderr
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel}))

	if slices.Contains(opt.contenders, Postfix) {
		if err := postfixtest.Available(); err != nil {
			return err
		}
	}
	base, err := os.MkdirTemp(opt.dir, "sealrelay-bench-")
	if err != nil {
		return err
	}
	// Postfix's user must be able to search down to its instance.
	if err := os.Chmod(base, 0o755); err != nil {
		return err
	}
	defer func() {
		if opt.keep {
			fmt.Fprintf(stderr, "bench: kept %s\n", base)
		} else {
			os.RemoveAll(base)
		}
	}()
	if slices.Contains(opt.contenders, Sealrelay) {
		if opt.bin, err = buildIfNeeded(opt.bin, base, stderr); err != nil {
			return err
		}
	}

	e := &env{user: benchUser, pass: randomPassword(), baseDir: base, keep: opt.keep, bin: opt.bin, log: log, logw: srLog}
	if e.up, err = startRelayHost(e.pass); err != nil {
		return err
	}
	defer e.up.Close()

	writeHeader(stdout, opt)
	var results []Result
	for round := 1; round <= opt.rounds; round++ {
		rs, err := runRound(ctx, e, opt, round, stderr)
		results = append(results, rs...)
		if err != nil {
			return fmt.Errorf("round %d: %w", round, err)
		}
	}
	fmt.Fprintf(stdout, "\n### Every run\n\n")
	writeRunsTable(stdout, results)
	fmt.Fprintf(stdout, "\n### Medians of %d rounds\n\n", opt.rounds)
	writeSummary(stdout, results, opt.workloads, opt.contenders)
	if !slices.Contains(opt.contenders, Sealrelay) || (opt.idle == 0 && opt.restart == 0) {
		return nil
	}
	fmt.Fprintf(stdout, "\n### sealrelay: idle sessions and restart\n\n")
	if opt.idle > 0 {
		rss, err := idleSessions(ctx, e, opt.idle)
		if err != nil {
			return fmt.Errorf("idle sessions: %w", err)
		}
		fmt.Fprintf(stdout, "- RSS with %d idle inbound sessions open: %.1f MiB\n", opt.idle, float64(rss)/(1<<20))
	}
	if opt.restart > 0 {
		first, loaded, err := restart(ctx, e, opt.restart)
		if err != nil {
			return fmt.Errorf("restart: %w", err)
		}
		fmt.Fprintf(stdout, "- restart with %d messages queued: new mail accepted (250) %s after the start; queue loaded after %s\n",
			opt.restart, first.Round(time.Millisecond), loaded.Round(time.Millisecond))
	}
	return nil
}

// runRound starts the contenders, runs every workload on each of them in
// turn (the order rotates so that none always goes first), and stops them.
func runRound(ctx context.Context, e *env, opt options, round int, stderr io.Writer) (results []Result, err error) {
	running := map[string]contender{}
	defer func() {
		for name, c := range running {
			if serr := c.Stop(); serr != nil {
				err = errors.Join(err, fmt.Errorf("stopping %s: %w", name, serr))
			}
		}
	}()
	for _, name := range opt.contenders {
		c, err := startContender(name, e)
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", name, err)
		}
		running[name] = c
		if opt.verbose || opt.keep {
			fmt.Fprintf(stderr, "bench: round %d: %s: %s\n", round, name, c.Describe())
		}
	}
	for wi, wl := range opt.workloads {
		order := rotate(opt.contenders, round-1+wi)
		for _, name := range order {
			r, err := measure(ctx, e, running[name], name, wl, round, opt.timeout)
			if err != nil {
				return results, fmt.Errorf("%s on %s: %w", wl.Name(), name, err)
			}
			results = append(results, r)
			fmt.Fprintln(stderr, runLine(r))
		}
	}
	return results, nil
}

func rotate(xs []string, k int) []string {
	k %= len(xs)
	return append(slices.Clone(xs[k:]), xs[:k]...)
}

// measure runs one workload on one contender.
func measure(ctx context.Context, e *env, c contender, name string, wl Workload, round int, timeout time.Duration) (Result, error) {
	e.up.Reset()
	var peakRSS, peakPSS int64
	var wg sync.WaitGroup
	sampling := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			if pids := c.PIDs(); pids != nil {
				rss, pss := memOf(pids)
				peakRSS, peakPSS = max(peakRSS, rss), max(peakPSS, pss)
			}
			select {
			case <-sampling:
				return
			case <-t.C:
			}
		}
	}()
	stopSampling := sync.OnceFunc(func() { close(sampling); wg.Wait() })
	defer stopSampling()

	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	runID := fmt.Sprintf("r%d-%s-%s", round, wl.Name(), name)
	cpu0, self0 := cpuOf(c.PIDs()), selfCPU()
	lr, err := runLoad(rctx, c.Target(), wl, runID)
	if err != nil {
		return Result{}, err
	}
	for e.up.Count() < wl.Messages {
		if rctx.Err() != nil {
			return Result{}, fmt.Errorf("%w: %d of %d after %s", errNotAll, e.up.Count(), wl.Messages, time.Since(lr.Start).Round(time.Second))
		}
		time.Sleep(2 * time.Millisecond)
	}
	delivered := time.Since(lr.Start)
	cpu, self := cpuOf(c.PIDs())-cpu0, selfCPU()-self0
	stopSampling()

	for _, s := range e.up.Sessions() {
		if s.MailIssued() && s.UnauthenticatedMail() {
			return Result{}, fmt.Errorf("upstream session %d got MAIL without AUTH", s.ID)
		}
	}
	if n := e.up.Count(); n != wl.Messages {
		return Result{}, fmt.Errorf("the upstream got %d messages for %d sent (duplicates)", n, wl.Messages)
	}
	return Result{
		Round: round, Workload: wl, Contender: name, Messages: wl.Messages,
		Delivered: delivered, Accepted: lr.LastAccept.Sub(lr.Start),
		P50: percentile(lr.Latencies, 50), P99: percentile(lr.Latencies, 99),
		PeakRSS: peakRSS, PeakPSS: peakPSS,
		CPU: cpu, Harness: self,
	}, nil
}

// writeHeader says what ran where, for the README.
func writeHeader(w io.Writer, opt options) {
	fmt.Fprintf(w, "## sealrelay benchmark, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "- command: `go run ./bench %s`\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(w, "- machine: %d CPUs, %s/%s, %s, load average %s\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), loadAvg())
	if slices.Contains(opt.contenders, Postfix) {
		fmt.Fprintf(w, "- Postfix %s, tuned smarthost client (TLS reuse via tlsproxy, 20 connections)\n", postfixVersion())
	}
	var ns []string
	for _, wl := range opt.workloads {
		ns = append(ns, fmt.Sprintf("%s: %d", wl.Name(), wl.Messages))
	}
	fmt.Fprintf(w, "- messages per run: %s\n", strings.Join(ns, ", "))
	fmt.Fprintf(w, "- %d rounds; contenders alternate within each workload\n", opt.rounds)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// benchUser is the relay host's account; its password is new each run.
const benchUser = "bench@upstream.test"

// startRelayHost starts the relay host every benchmark delivers to:
// STARTTLS and AUTH PLAIN required, counting messages and keeping no
// record of them.
func startRelayHost(pass string) (*relayhost.Server, error) {
	return relayhost.Start(relayhost.Config{
		Hostname:    "upstream.bench.test",
		CountOnly:   true,
		Accounts:    map[string]string{benchUser: pass},
		RequireAuth: true,
		// For the plain contender; Postfix and sealrelay are set to
		// start TLS before AUTH.
		AllowInsecureAuth: true,
	})
}

// buildIfNeeded returns bin, or, if it is empty, sealrelay built into dir.
func buildIfNeeded(bin, dir string, stderr io.Writer) (string, error) {
	if bin != "" {
		return bin, nil
	}
	fmt.Fprintln(stderr, "bench: building sealrelay")
	return rig.BuildBinary(dir)
}

// randomPassword is the upstream account's password for this run; it is
// sealed for sealrelay and in Postfix's root-only password map.
func randomPassword() string {
	b := make([]byte, 16)
	rand.Read(b) //nolint:errcheck // crypto/rand does not fail
	return hex.EncodeToString(b)
}

func runOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}
