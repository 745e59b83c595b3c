package spool

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// BenchmarkPut measures the durable write path with 2 KB and 100 KB
// messages: one writer at a time, and many at once (where concurrent Puts
// share the journal's fdatasync). Each Put is durable before it returns,
// so the figures depend on the disk under the test's temporary directory.
func BenchmarkPut(b *testing.B) {
	line := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n")
	to := []string{"bob@example.org"}
	for _, size := range []int{2 << 10, 100 << 10} {
		body := bytes.Repeat(line, size/len(line))
		open := func(b *testing.B) *Queue {
			q, err := Open(Options{Dir: filepath.Join(b.TempDir(), "spool"), Hostname: "bench.example.com"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { q.Close() })
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			return q
		}
		b.Run(fmt.Sprintf("%dKB/sequential", size>>10), func(b *testing.B) {
			q := open(b)
			for b.Loop() {
				if _, err := q.Put(context.Background(), "alice@example.com", to, bytes.NewReader(body)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("%dKB/parallel", size>>10), func(b *testing.B) {
			q := open(b)
			b.SetParallelism(8) // 8 x GOMAXPROCS concurrent sessions
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := q.Put(context.Background(), "alice@example.com", to, bytes.NewReader(body)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkRestart measures a restart with a large queue (SPOOL_BENCH_ITEMS,
// default 100,000 items of 2 KB in the journal): the time from Open to the
// first new message being durable, which is what a client waits for, and
// the time until every queued item is loaded in the background.
//
//	go test -run '^$' -bench BenchmarkRestart -benchtime 1x ./agent/spool
func BenchmarkRestart(b *testing.B) {
	n := 100000
	if s := os.Getenv("SPOOL_BENCH_ITEMS"); s != "" {
		fmt.Sscan(s, &n)
	}
	body := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 32)
	dir := filepath.Join(b.TempDir(), "spool")
	q, err := Open(Options{Dir: dir, Hostname: "bench.example.com"})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := q.Put(context.Background(), "alice@example.com", []string{fmt.Sprintf("r%d@example.org", i)}, bytes.NewReader(body)); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	q.Close()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		q, err := Open(Options{Dir: dir, Hostname: "bench.example.com"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := q.Put(context.Background(), "alice@example.com", []string{"new@example.org"}, bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
		firstPut := time.Since(start)
		q.WaitLoaded()
		loaded := time.Since(start)
		if got := q.Stats().Queued; got < n {
			b.Errorf("loaded %d items, want %d", got, n)
		}
		q.Close()
		b.ReportMetric(float64(firstPut.Milliseconds()), "ms-to-first-put")
		b.ReportMetric(float64(loaded.Milliseconds()), "ms-to-loaded")
	}
}
