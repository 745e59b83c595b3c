package spool

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkPut measures the durable write path with 2 KB messages: one
// writer at a time, and many at once (where concurrent Puts share
// directory fsyncs). Each Put is fsynced before it returns, so the figures
// depend on the disk under the test's temporary directory.
func BenchmarkPut(b *testing.B) {
	body := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 32) // 2 KB
	to := []string{"bob@example.org"}
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
	b.Run("sequential", func(b *testing.B) {
		q := open(b)
		for b.Loop() {
			if _, err := q.Put(context.Background(), "alice@example.com", to, bytes.NewReader(body)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
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
