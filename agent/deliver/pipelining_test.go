package deliver

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// scriptedRelay is a plaintext relay on 127.0.0.1, one session at a time.
// It offers PIPELINING when pipelining is set and answers MAIL, RCPT and
// DATA from replies, in order, across sessions (once they run out: 250
// ok, and 354 to DATA). For each transaction it reports on the returned
// channel the commands it had read when it sent its first reply,
// separated by " | ".
//
// With PIPELINING it reads up to DATA before it answers anything: a
// client that waits for MAIL's reply instead is reported as "waited
// after MAIL ..." once the read deadline (10 s) passes. Without it, a
// command found waiting behind the one just answered is reported as
// "(pipelined without PIPELINING)".
func scriptedRelay(t *testing.T, pipelining bool, replies ...string) (Relay, <-chan string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	report := make(chan string, 16)
	next := func(cmd string) string {
		if len(replies) > 0 {
			r := replies[0]
			replies = replies[1:]
			return r
		}
		if cmd == "DATA" {
			return "354 go ahead"
		}
		return "250 ok"
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			serveScripted(c, pipelining, next, report)
		}
	}()
	return Relay{Name: "scripted", Address: l.Addr().String(), TLS: TLSNone, Auth: AuthDisabled,
		CommandTimeout: 10 * time.Second, ConnectTimeout: 5 * time.Second}, report
}

func serveScripted(c net.Conn, pipelining bool, next func(cmd string) string, report chan<- string) {
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(s string) { fmt.Fprint(c, strings.ReplaceAll(s, "\n", "\r\n")) }
	read := func() (string, bool) {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := r.ReadString('\n')
		return strings.TrimRight(line, "\r\n"), err == nil
	}
	say("220 scripted ESMTP\n")
	if _, ok := read(); !ok {
		return
	}
	if pipelining {
		say("250-scripted\n250-PIPELINING\n250 8BITMIME\n")
	} else {
		say("250-scripted\n250 8BITMIME\n")
	}
	for {
		var cmds []string
		for {
			line, ok := read()
			if !ok {
				if len(cmds) > 0 {
					report <- "waited after " + cmds[len(cmds)-1]
				}
				return
			}
			if line == "QUIT" {
				say("221 bye\n")
				return
			}
			cmds = append(cmds, line)
			if !pipelining || line == "DATA" {
				break
			}
		}
		var dataReply string
		answer := func(cmd string) {
			reply := next(cmd)
			if cmd == "DATA" {
				dataReply = reply
			}
			say(reply + "\n")
		}
		for _, cmd := range cmds {
			answer(cmd)
		}
		for !pipelining && cmds[len(cmds)-1] != "DATA" {
			if r.Buffered() > 0 {
				cmds = append(cmds, "(pipelined without PIPELINING)")
				break
			}
			line, ok := read()
			if !ok {
				return
			}
			cmds = append(cmds, line)
			answer(line)
		}
		report <- strings.Join(cmds, " | ")
		if !strings.HasPrefix(dataReply, "354") {
			continue
		}
		for {
			line, ok := read()
			if !ok {
				return
			}
			if line == "." {
				break
			}
		}
		say("250 2.0.0 queued\n")
	}
}

// envelope is the envelope of a message from app@example.com to rcpts as
// scriptedRelay reports it (it offers 8BITMIME, not SIZE).
func envelope(rcpts ...string) string {
	s := "MAIL FROM:<app@example.com> BODY=8BITMIME"
	for _, r := range rcpts {
		s += " | RCPT TO:<" + r + ">"
	}
	return s + " | DATA"
}

// With PIPELINING, MAIL, every RCPT and DATA go out together, before any
// reply, and a refused recipient still gets its own result.
func TestPipelinedEnvelope(t *testing.T) {
	r, report := scriptedRelay(t, true, "250 2.1.0 sender ok", "250 2.1.5 ok", "550 5.1.1 no such user")
	h := newDeliverer(t, newCreds(testPass), r)
	m := message("a@example.net", "b@example.net")
	res := h.d.Deliver(context.Background(), m)
	if got, want := <-report, envelope("a@example.net", "b@example.net"); got != want {
		t.Fatalf("the relay had read %q when it first replied, want %q", got, want)
	}
	if statuses(res) != "delivered,permanent" {
		t.Fatalf("results = %s (%v)", statuses(res), res)
	}
	if !strings.Contains(res[1].Err.Error(), "RCPT TO:<b@example.net>") || res[1].Code != 550 {
		t.Errorf("refused recipient: code %d, error %v", res[1].Code, res[1].Err)
	}
}

// A refused MAIL on a new connection defers every recipient, naming MAIL;
// the replies to RCPT and DATA are read all the same (this relay even
// takes DATA, and gets an empty message's dot), so the next message on the
// same connection is answered in step.
func TestPipelinedMailRefused(t *testing.T) {
	r, report := scriptedRelay(t, true, "451 4.3.0 try again later", "503 5.5.1 need MAIL", "354 go ahead")
	h := newDeliverer(t, newCreds(testPass), r)
	m := message("a@example.net")
	res := h.d.Deliver(context.Background(), m)
	<-report
	if statuses(res) != "temporary" || res[0].Code != 451 || !strings.Contains(res[0].Err.Error(), "MAIL FROM:<app@example.com>") {
		t.Fatalf("result = %s, code %d, %v", statuses(res), res[0].Code, res[0].Err)
	}
	m = message("c@example.net")
	if res := h.d.Deliver(context.Background(), m); statuses(res) != "delivered" {
		t.Fatalf("the next message: %s %v", statuses(res), res[0].Err)
	}
	if got, want := <-report, envelope("c@example.net"); got != want {
		t.Errorf("the next message's envelope: %q, want %q", got, want)
	}
	if n := h.d.Stats().ConnectionsOpened; n != 1 {
		t.Errorf("%d connections for the two messages, want the first reused", n)
	}
}

// Without PIPELINING each command waits for its reply.
func TestEnvelopeWithoutPipelining(t *testing.T) {
	r, report := scriptedRelay(t, false)
	h := newDeliverer(t, newCreds(testPass), r)
	m := message("a@example.net", "b@example.net")
	if res := h.d.Deliver(context.Background(), m); statuses(res) != "delivered,delivered" {
		t.Fatalf("results = %s (%v)", statuses(res), res)
	}
	if got, want := <-report, envelope("a@example.net", "b@example.net"); got != want {
		t.Fatalf("the relay read %q, want each command alone: %q", got, want)
	}
}
