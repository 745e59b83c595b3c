package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result is one run: one contender, one workload, one round.
type Result struct {
	Round     int
	Workload  Workload
	Contender string
	Messages  int
	Delivered time.Duration // from the first connection until the upstream held every message
	Accepted  time.Duration // from the first connection until the last 250
	P50, P99  time.Duration // accept latency: end of DATA to 250
	// PeakRSS is the largest resident set size seen, summed over the
	// contender's processes (so shared pages count once per process);
	// PeakPSS the largest proportional set size (shared pages divided
	// among the processes that share them). Bytes; 0 when not measured.
	PeakRSS, PeakPSS int64
	// CPU is the CPU time the contender's processes used during the run
	// (0 when not measured: the upstream fed directly); Harness that of
	// the benchmark's own process, the load generator and the upstream.
	CPU, Harness time.Duration
}

// CPUPerMsg is the contender's CPU time per message, in milliseconds.
func (r Result) CPUPerMsg() float64 { return msPer(r.CPU, r.Messages) }

// HarnessPerMsg is the harness's CPU time per message, in milliseconds.
func (r Result) HarnessPerMsg() float64 { return msPer(r.Harness, r.Messages) }

func msPer(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d) / float64(time.Millisecond) / float64(n)
}

// DeliveredPerSec is messages per second, counted until the upstream
// held every message.
func (r Result) DeliveredPerSec() float64 { return perSec(r.Messages, r.Delivered) }

// AcceptedPerSec is messages per second, counted until the last 250.
func (r Result) AcceptedPerSec() float64 { return perSec(r.Messages, r.Accepted) }

func perSec(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// percentile returns the p-th percentile (0..100) of ds by the
// nearest-rank method; ds is sorted in place.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(p/100*float64(len(ds)) + 0.999999)
	rank = min(max(rank, 1), len(ds))
	return ds[rank-1]
}

// median returns the median of xs (the mean of the middle two for an even
// count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}

func mib(b int64) string {
	if b <= 0 {
		return "–"
	}
	return strconv.FormatFloat(float64(b)/(1<<20), 'f', 0, 64)
}

func rate(x float64) string { return strconv.FormatFloat(x, 'f', 0, 64) }

// cpuMs formats CPU milliseconds per message; "–" for not measured.
func cpuMs(x float64) string {
	if x <= 0 {
		return "–"
	}
	return strconv.FormatFloat(x, 'f', 2, 64)
}

// runLine is a progress line for one run.
func runLine(r Result) string {
	return fmt.Sprintf("round %d  %-14s %-9s %6s delivered/s %6s accepted/s  p50 %6s ms  p99 %6s ms  RSS %4s MiB  PSS %4s MiB  CPU %5s ms/msg  harness %5s ms/msg",
		r.Round, r.Workload.Name(), r.Contender, rate(r.DeliveredPerSec()), rate(r.AcceptedPerSec()), ms(r.P50), ms(r.P99), mib(r.PeakRSS), mib(r.PeakPSS),
		cpuMs(r.CPUPerMsg()), cpuMs(r.HarnessPerMsg()))
}

// writeRunsTable writes every run as a Markdown table.
func writeRunsTable(w io.Writer, rs []Result) {
	fmt.Fprintln(w, "| round | workload | contender | delivered/s | accepted/s | p50 ms | p99 ms | peak RSS MiB | peak PSS MiB | CPU ms/msg | harness CPU ms/msg |")
	fmt.Fprintln(w, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Round, r.Workload.Name(), r.Contender,
			rate(r.DeliveredPerSec()), rate(r.AcceptedPerSec()), ms(r.P50), ms(r.P99), mib(r.PeakRSS), mib(r.PeakPSS),
			cpuMs(r.CPUPerMsg()), cpuMs(r.HarnessPerMsg()))
	}
}

// writeSummary writes, per workload, the medians over the rounds for each
// contender and the median of the per-round sealrelay/Postfix ratios of
// delivered/s, as a Markdown table.
func writeSummary(w io.Writer, rs []Result, workloads []Workload, contenders []string) {
	has := func(c string) bool { return slices.Contains(contenders, c) }
	hdr := []string{"workload"}
	for _, c := range contenders {
		hdr = append(hdr, c+" delivered/s")
	}
	ratio := has(Postfix) && has(Sealrelay)
	if ratio {
		hdr = append(hdr, "sealrelay/Postfix")
	}
	var hopCeils [][2]string // hop and ceiling that ran, for the hop/ceiling columns
	for _, h := range hops {
		for _, c := range ceilings {
			if has(c) && has(h) {
				hopCeils = append(hopCeils, [2]string{h, c})
				hdr = append(hdr, h+"/"+c)
			}
		}
	}
	relays := slices.DeleteFunc(slices.Clone(contenders), func(c string) bool { return slices.Contains(ceilings, c) })
	for _, c := range relays {
		hdr = append(hdr, c+" p99 ms")
	}
	for _, c := range relays {
		hdr = append(hdr, c+" RSS / PSS MiB")
	}
	for _, c := range relays {
		hdr = append(hdr, c+" CPU ms/msg")
	}
	fmt.Fprintln(w, "| "+strings.Join(hdr, " | ")+" |")
	align := make([]string, len(hdr))
	for i := range align {
		align[i] = "---:"
	}
	align[0] = "---"
	fmt.Fprintln(w, "|"+strings.Join(align, "|")+"|")

	for _, wl := range workloads {
		byC := map[string][]Result{}
		for _, r := range rs {
			if r.Workload == wl {
				byC[r.Contender] = append(byC[r.Contender], r)
			}
		}
		med := func(c string, f func(Result) float64) float64 {
			var xs []float64
			for _, r := range byC[c] {
				xs = append(xs, f(r))
			}
			return median(xs)
		}
		row := []string{wl.Name()}
		for _, c := range contenders {
			row = append(row, rate(med(c, Result.DeliveredPerSec)))
		}
		if ratio {
			row = append(row, ratioCell(byC[Sealrelay], byC[Postfix]))
		}
		for _, hc := range hopCeils {
			row = append(row, ratioCell(byC[hc[0]], byC[hc[1]]))
		}
		for _, c := range relays {
			row = append(row, ms(time.Duration(med(c, func(r Result) float64 { return float64(r.P99) }))))
		}
		for _, c := range relays {
			row = append(row, mib(int64(med(c, func(r Result) float64 { return float64(r.PeakRSS) })))+" / "+
				mib(int64(med(c, func(r Result) float64 { return float64(r.PeakPSS) }))))
		}
		for _, c := range relays {
			row = append(row, cpuMs(med(c, Result.CPUPerMsg)))
		}
		fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
	}
}

// ratioCell is the median over rounds of one contender's delivered/s
// (sealrelay's, sr) divided by another's (pf) in the same round.
func ratioCell(sr, pf []Result) string {
	var xs []float64
	for _, s := range sr {
		for _, p := range pf {
			if s.Round == p.Round && p.DeliveredPerSec() > 0 {
				xs = append(xs, s.DeliveredPerSec()/p.DeliveredPerSec())
			}
		}
	}
	if len(xs) == 0 {
		return "–"
	}
	return strconv.FormatFloat(median(xs), 'f', 2, 64) + "×"
}

// memOf returns the summed resident and proportional set sizes of pids,
// in bytes, from /proc (VmRSS of status, Pss of smaps_rollup).
func memOf(pids []int) (rss, pss int64) {
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid)
		rss += procKB(dir+"/status", "VmRSS:")
		pss += procKB(dir+"/smaps_rollup", "Pss:")
	}
	return rss, pss
}

// procKB reads the "KEY: N kB" line of a /proc file, in bytes; 0 if the
// file or the line is missing (a process that just exited).
func procKB(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
