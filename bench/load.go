package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
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
			var buf []byte // the message being sent
			var last time.Time
			for sent := 0; sent < share; {
				k := min(w.PerConn, share-sent)
				err := session(ctx, t, k, func(c *smtp.Client, wire net.Conn) error {
					id := fmt.Sprintf("<%s.%d@bench.test>", runID, first+sent)
					d, err := sendOne(c, wire, id, filler, &buf)
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
func session(ctx context.Context, t Target, k int, send func(*smtp.Client, net.Conn) error) error {
	c, wire, closeC, err := dialTarget(ctx, t, "loadgen.bench.test")
	if err != nil {
		return err
	}
	defer closeC()
	for range k {
		if err := send(c, wire); err != nil {
			return err
		}
	}
	return c.Quit()
}

// dialTarget connects to t, says EHLO as helo, starts TLS and
// authenticates as t asks, and returns go-smtp's client and the
// connection under it, to which bodies may be written directly, and the
// function that closes the client. The client is closed when ctx ends.
func dialTarget(ctx context.Context, t Target, helo string) (c *smtp.Client, wire net.Conn, closeC func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, err
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect to %s: %w", t.Addr, err)
	}
	wire = conn
	if t.TLS != nil {
		// Greeting, EHLO, STARTTLS and the handshake here, so that the
		// bodies can be written to the TLS connection directly.
		if wire, err = startTLS(conn, t.TLS, helo); err != nil {
			conn.Close()
			return nil, nil, nil, fmt.Errorf("STARTTLS to %s: %w", t.Addr, err)
		}
		wire = greetedConn{wire, io.MultiReader(strings.NewReader("220 (TLS established)\r\n"), wire)}
	}
	c = smtp.NewClient(wire)
	if err := c.Hello(helo); err != nil {
		c.Close()
		return nil, nil, nil, fmt.Errorf("EHLO to %s: %w", t.Addr, err)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	closeC = func() { stop(); c.Close() }
	if t.User != "" {
		if err := c.Auth(sasl.NewPlainClient("", t.User, t.Pass)); err != nil {
			closeC()
			return nil, nil, nil, fmt.Errorf("AUTH to %s: %w", t.Addr, err)
		}
	}
	return c, wire, closeC, nil
}

// startTLS reads the greeting, says EHLO and STARTTLS on conn and returns
// the TLS connection over it.
func startTLS(conn net.Conn, cfg *tls.Config, helo string) (net.Conn, error) {
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	defer conn.SetDeadline(time.Time{})
	tp := textproto.NewReader(bufio.NewReader(conn))
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, err
	}
	for _, cmd := range []struct {
		line string
		code int
	}{{"EHLO " + helo, 250}, {"STARTTLS", 220}} {
		if _, err := io.WriteString(conn, cmd.line+"\r\n"); err != nil {
			return nil, err
		}
		if _, _, err := tp.ReadResponse(cmd.code); err != nil {
			return nil, fmt.Errorf("%s: %w", cmd.line, err)
		}
	}
	tc := tls.Client(conn, cfg)
	return tc, tc.Handshake()
}

// greetedConn hands go-smtp's client a greeting it did not read itself,
// then the connection.
type greetedConn struct {
	net.Conn
	r io.Reader
}

func (c greetedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// sendOne sends one message and returns the time from the end of its data
// to the 250: its headers, then filler, which has no line that starts
// with a dot.
func sendOne(c *smtp.Client, wire net.Conn, msgID string, filler []byte, buf *[]byte) (time.Duration, error) {
	msg := append((*buf)[:0], "From: loadgen@bench.test\r\nTo: sink@example.net\r\nSubject: sealrelay benchmark\r\nMessage-ID: "...)
	msg = append(append(append(msg, msgID...), "\r\n\r\n"...), filler...)
	*buf = msg
	return sendMessage(c, wire, "loadgen@bench.test", []string{"sink@example.net"}, msg)
}

// sendMessage sends msg, which ends in CRLF and has no line that starts
// with a dot, from from to to: MAIL, RCPT, DATA, then, once the 354 is
// in, msg written to the connection in one piece, as a client that has
// its message ready does, all but its last CRLF; that goes through
// go-smtp's writer, whose Close sends the final dot and reads the reply.
// It returns the time from the end of the data to the reply.
func sendMessage(c *smtp.Client, wire net.Conn, from string, to []string, msg []byte) (time.Duration, error) {
	if err := c.Mail(from, nil); err != nil {
		return 0, err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return 0, err
		}
	}
	w, err := c.Data()
	if err != nil {
		return 0, err
	}
	if _, err := wire.Write(msg[:len(msg)-2]); err != nil {
		return 0, err
	}
	if _, err := w.Write(msg[len(msg)-2:]); err != nil {
		return 0, err
	}
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
