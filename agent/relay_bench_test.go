package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	sealrig "github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/secrets"
)

// staticSource is a credential source holding one entry in memory: enough
// for a benchmark of the relay path (the age and Vault sources are tested
// for real elsewhere).
type staticSource struct{ user, pass string }

func (s staticSource) Fetch(_ context.Context, names []string) (map[string]secrets.Credential, error) {
	out := map[string]secrets.Credential{}
	for _, n := range names {
		out[n] = secrets.NewCredential(n, s.user, s.pass, "1")
	}
	return out, nil
}

func (staticSource) String() string { return "static test source" }

// BenchmarkRelay measures the whole path in one process: client sessions
// (one message of BODY_KB KB, default 2, per connection, SESSIONS at a
// time, default 10) submit
// to the agent, which spools each message durably and relays it over
// STARTTLS with AUTH PLAIN to the upstream. One op is one message
// delivered.
//
//	go test -run '^$' -bench BenchmarkRelay -benchtime 5000x -cpuprofile cpu.out ./agent
func BenchmarkRelay(b *testing.B) {
	sessions := 10
	if s := os.Getenv("SESSIONS"); s != "" {
		fmt.Sscan(s, &sessions)
	}
	dir := b.TempDir()
	up, err := upstream.Start(upstream.Config{CountOnly: true, Accounts: map[string]string{"bench@upstream.test": "bench-password"},
		Behavior: upstream.Behavior{RequireAuth: true}})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	if err := up.WriteCA(filepath.Join(dir, "ca.pem")); err != nil {
		b.Fatal(err)
	}
	cfgText := fmt.Sprintf(`hostname = "bench.test"
data_dir = %q
[listen]
address = "127.0.0.1:0"
[[relay]]
name = "up"
address = %q
credential = "bench"
ca_file = "ca.pem"
server_name = "localhost"
[queue]
min_backoff = "1s"
max_backoff = "2s"
`, filepath.Join(dir, "data"), up.Addr())
	cfg, err := config.Parse([]byte(cfgText), filepath.Join(dir, "sealrelay.toml"))
	if err != nil {
		b.Fatal(err)
	}
	a, err := agent.New(cfg, staticSource{"bench@upstream.test", "bench-password"},
		agent.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	kb := 2
	if s := os.Getenv("BODY_KB"); s != "" {
		fmt.Sscan(s, &kb)
	}
	body := "Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 16*kb)
	addr := a.Addr().String()
	var next atomic.Int64
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range sessions {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := submit(addr, body); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	accepted := time.Since(start)
	if b.Failed() {
		return
	}
	if err := up.WaitMessages(b.N, 5*time.Minute); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted/s")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "delivered/s")
}

// submit sends one message on a connection of its own, as an application
// does.
func submit(addr, body string) error {
	return sealrig.Send(addr, "client.test", "app@client.test", []string{"user@example.net"}, body)
}
