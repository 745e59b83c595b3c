package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Workload is one load shape: message size, concurrent client sessions,
// messages per client connection, and how many messages a run sends.
type Workload struct {
	Size     int // bytes per message, headers included
	Sessions int // concurrent client sessions
	PerConn  int // messages per connection before QUIT
	Messages int // messages per run
}

// Name is the workload's name as -workloads takes it: "2KB-10x1" is 2 KB
// messages, 10 sessions, 1 message per connection.
func (w Workload) Name() string {
	return fmt.Sprintf("%dKB-%dx%d", w.Size/1024, w.Sessions, w.PerConn)
}

// Target is where the load generator sends: a contender's listener
// (plain SMTP on loopback, as local applications do) or the upstream
// itself (STARTTLS and AUTH PLAIN, as a relay does).
type Target struct {
	Addr string
	TLS  *tls.Config // STARTTLS with this config when set
	User string      // AUTH PLAIN when set (after STARTTLS)
	Pass string
}

// LoadResult is what the load generator measured in one run.
type LoadResult struct {
	Start      time.Time
	LastAccept time.Time       // when the last 250 after DATA came
	Latencies  []time.Duration // end of DATA to 250, one per message
}

// runLoad sends w.Messages messages to t from w.Sessions concurrent
// sessions, each sending its share over connections of w.PerConn
// messages. It fails on the first refused message: every message of a
// benchmark run must be accepted.
func runLoad(ctx context.Context, t Target, w Workload, runID string) (LoadResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	filler := fillerBody(w.Size)
	res := LoadResult{Start: time.Now()}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := 0
	for s := range w.Sessions {
		share := w.Messages / w.Sessions
		if s < w.Messages%w.Sessions {
			share++
		}
		first := next
		next += share
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, share)
			var last time.Time
			for sent := 0; sent < share; {
				k := min(w.PerConn, share-sent)
				err := session(ctx, t, k, func(c *smtp.Client) error {
					id := fmt.Sprintf("<%s.%d@bench.test>", runID, first+sent)
					d, err := sendOne(c, id, filler)
					if err != nil {
						return fmt.Errorf("message %s: %w", id, err)
					}
					lat = append(lat, d)
					last = time.Now()
					sent++
					return nil
				})
				if err != nil {
					cancel(err)
					return
				}
			}
			mu.Lock()
			res.Latencies = append(res.Latencies, lat...)
			if last.After(res.LastAccept) {
				res.LastAccept = last
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return res, err
	}
	return res, nil
}

// session opens one connection, calls send k times, and quits.
func session(ctx context.Context, t Target, k int, send func(*smtp.Client) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", t.Addr, err)
	}
	var c *smtp.Client
	if t.TLS != nil {
		// Greeting, EHLO, STARTTLS.
		if c, err = smtp.NewClientStartTLS(conn, t.TLS); err != nil {
			conn.Close()
			return fmt.Errorf("STARTTLS to %s: %w", t.Addr, err)
		}
	} else {
		c = smtp.NewClient(conn)
		if err := c.Hello("loadgen.bench.test"); err != nil {
			c.Close()
			return fmt.Errorf("EHLO to %s: %w", t.Addr, err)
		}
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if t.User != "" {
		if err := c.Auth(sasl.NewPlainClient("", t.User, t.Pass)); err != nil {
			return fmt.Errorf("AUTH to %s: %w", t.Addr, err)
		}
	}
	for range k {
		if err := send(c); err != nil {
			return err
		}
	}
	return c.Quit()
}

// sendOne sends one message and returns the time from the end of its data
// to the 250.
func sendOne(c *smtp.Client, msgID string, filler []byte) (time.Duration, error) {
	if err := c.Mail("loadgen@bench.test", nil); err != nil {
		return 0, err
	}
	if err := c.Rcpt("sink@example.net", nil); err != nil {
		return 0, err
	}
	w, err := c.Data()
	if err != nil {
		return 0, err
	}
	hdr := "From: loadgen@bench.test\r\nTo: sink@example.net\r\nSubject: sealrelay benchmark\r\nMessage-ID: " + msgID + "\r\n\r\n"
	if _, err := w.Write([]byte(hdr)); err != nil {
		return 0, err
	}
	if _, err := w.Write(filler); err != nil {
		return 0, err
	}
	// Close writes what is still buffered and the final ".", then reads
	// the reply: the accept latency.
	t0 := time.Now()
	if err := w.Close(); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// fillerBody returns a body of 76-character lines that brings a message
// (with its ~140 bytes of headers) to about size bytes.
func fillerBody(size int) []byte {
	const line = "The quick brown fox jumps over the lazy dog; sealrelay benchmark filler text\r\n"
	n := max(1, (size-140)/len(line))
	return []byte(strings.Repeat(line, n))
}

// errNotAll says the upstream did not get every message in time.
var errNotAll = errors.New("not every message reached the upstream")
