package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/rig"
)

// The two targets that are not about throughput: memory with many idle
// inbound sessions, and how soon a restarted agent with a large queue
// takes new mail.

// idleSessions opens n inbound sessions to a fresh sealrelay (greeting and
// EHLO on each), lets them sit, and returns the agent's RSS.
func idleSessions(ctx context.Context, e *env, n int) (rss int64, err error) {
	c, err := startSealrelay(e)
	if err != nil {
		return 0, err
	}
	defer c.Stop()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	for range n {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		cn, err := net.Dial("tcp", c.Target().Addr)
		if err != nil {
			return 0, fmt.Errorf("session %d: %w", len(conns)+1, err)
		}
		conns = append(conns, cn)
		r := bufio.NewReader(cn)
		if err := expect(r, "220"); err != nil {
			return 0, fmt.Errorf("session %d greeting: %w", len(conns), err)
		}
		fmt.Fprintf(cn, "EHLO idle%d.bench.test\r\n", len(conns))
		if err := expect(r, "250"); err != nil {
			return 0, fmt.Errorf("session %d EHLO: %w", len(conns), err)
		}
	}
	time.Sleep(2 * time.Second)
	rss, _ = memOf(c.PIDs())
	return rss, nil
}

// expect reads one reply (all its lines) and checks its code.
func expect(r *bufio.Reader, code string) error {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, code) {
			return fmt.Errorf("reply %q, want %s", strings.TrimSpace(line), code)
		}
		if len(line) < 4 || line[3] != '-' {
			return nil
		}
	}
}

// restart queues n 2 KB messages in a stopped sealrelay's spool, starts
// it, and returns how long after the start a new message got its 250, and
// how long until the agent logged that the old queue was loaded.
func restart(ctx context.Context, e *env, n int) (firstAccept, loaded time.Duration, err error) {
	dir, err := os.MkdirTemp(e.baseDir, "sealrelay-restart-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	setup, err := rig.WriteSetup(dir, rig.Options{
		Relay: e.up.Addr(), User: e.user, Password: e.pass, CAPEM: e.up.CAPEM(), MaxConnections: 20,
	})
	if err != nil {
		return 0, 0, err
	}
	q, err := spool.Open(spool.Options{Dir: filepath.Join(dir, "data", "spool"), Hostname: "sealrelay.test"})
	if err != nil {
		return 0, 0, err
	}
	body := fillerBody(2048)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var putErr error
	var mu sync.Mutex
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			msg := fmt.Appendf(nil, "Subject: queued %d\r\nMessage-ID: <queued.%d@bench.test>\r\n\r\n%s", i, i, body)
			if _, err := q.Put(ctx, "loadgen@bench.test", []string{"sink@example.net"}, bytes.NewReader(msg)); err != nil {
				mu.Lock()
				putErr = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	q.Close()
	if putErr != nil {
		return 0, 0, fmt.Errorf("filling the spool: %w", putErr)
	}

	start := time.Now()
	p, err := rig.StartProcess(e.bin, setup.Config, io.Discard)
	if err != nil {
		return 0, 0, err
	}
	defer p.Kill()
	if err := rig.Send(p.Addr(), "restart.bench.test", "loadgen@bench.test", []string{"sink@example.net"}, "Subject: new\r\n\r\n"+string(body)); err != nil {
		return 0, 0, err
	}
	firstAccept = time.Since(start)
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(p.Logs(), `msg="spool: loaded"`) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return firstAccept, 0, fmt.Errorf("the agent did not finish loading its queue within 2 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return firstAccept, time.Since(start), nil
}
