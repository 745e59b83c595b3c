package deliver

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/secrets"
)

func TestPoolReusesOneConnection(t *testing.T) {
	u := startUpstream(t, upstream.Config{})
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
	const n = 5
	for i := range n {
		if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
			t.Fatalf("message %d: %s %v", i, statuses(res), res[0].Err)
		}
	}
	h.d.Close()
	ss := waitSessionsEnded(t, u, 1)
	if len(ss) != 1 {
		t.Fatalf("sessions = %d, want 1", len(ss))
	}
	s := ss[0]
	// A transaction that ended with the reply to its data leaves the
	// session at its initial state: the next MAIL needs no RSET (nor the
	// EHLO go-smtp's client sends after one).
	if s.Messages != n || len(s.Mails) != n || len(s.Auths) != 1 || s.Resets != 0 {
		t.Errorf("session: messages %d mails %d auths %d resets %d", s.Messages, len(s.Mails), len(s.Auths), s.Resets)
	}
	if st := h.d.Stats(); st.ConnectionsOpened != 1 || st.ConnectionsReused != n-1 || st.Delivered != n || st.Attempts != n {
		t.Errorf("stats = %+v", st)
	}
}

// TestPoolReplacesAfterAnOpenTransaction: when a transaction ends without
// data (every recipient refused), the connection is closed, not reset, and
// the next message goes out on a new one.
func TestPoolReplacesAfterAnOpenTransaction(t *testing.T) {
	u := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{
		{Command: "RCPT", Contains: "nobody", Reply: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}},
	}}})
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
	if res := h.d.Deliver(context.Background(), message("nobody@example.net")); statuses(res) != "permanent" {
		t.Fatalf("refused recipient: %s", statuses(res))
	}
	if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
		t.Fatalf("next message: %s %v", statuses(res), res[0].Err)
	}
	h.d.Close()
	ss := waitSessionsEnded(t, u, 2)
	if len(ss) != 2 || ss[0].Resets != 0 || ss[0].Messages != 0 || ss[1].Messages != 1 {
		t.Errorf("sessions = %+v, want the first closed without RSET and the message on a second", ss)
	}
}

func TestPoolMaxConnections(t *testing.T) {
	// Every transaction stalls a little so that concurrent deliveries
	// overlap; the limit, not luck, must keep the upstream at 2.
	u := startUpstream(t, upstream.Config{DiscardBodies: true, Behavior: upstream.Behavior{Stall: 1, StallDuration: 20 * time.Millisecond}})
	r := relayTo(u, AuthRequired)
	r.MaxConnections = 2
	h := newDeliverer(t, newCreds(testPass), r)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
					t.Errorf("%s %v", statuses(res), res[0].Err)
				}
			}
		}()
	}
	wg.Wait()
	if got := u.MaxConcurrent(); got != 2 {
		t.Errorf("upstream saw at most %d concurrent connections, want 2", got)
	}
	if got := len(u.Sessions()); got != 2 {
		t.Errorf("upstream saw %d connections, want 2", got)
	}
	if u.Count() != 16 {
		t.Errorf("count = %d", u.Count())
	}
}

func TestPoolWaitRespectsContext(t *testing.T) {
	u := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{Stall: 1, StallDuration: 1 << 40}})
	r := relayTo(u, AuthRequired)
	r.MaxConnections = 1
	h := newDeliverer(t, newCreds(testPass), r)
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	go h.d.Deliver(ctx1, message("a@example.net"))
	for len(u.Sessions()) == 0 || !u.Sessions()[0].Stalled {
		time.Sleep(5 * time.Millisecond)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan string)
	go func() {
		res := h.d.Deliver(ctx2, message("b@example.net"))
		done <- statuses(res) + " " + res[0].Err.Error()
	}()
	cancel2()
	got := <-done
	if !strings.HasPrefix(got, "temporary") || !strings.Contains(got, "waiting for one of 1 connections: context canceled") {
		t.Errorf("result = %s", got)
	}
	if len(u.Sessions()) != 1 {
		t.Errorf("a second connection was opened")
	}
}

func TestPoolIdleClose(t *testing.T) {
	u := startUpstream(t, upstream.Config{})
	r := relayTo(u, AuthRequired)
	r.IdleTimeout = 50 * time.Millisecond
	h := newDeliverer(t, newCreds(testPass), r)
	if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
		t.Fatal(res[0].Err)
	}
	waitSessionsEnded(t, u, 1) // closed by the pool, not by the test
	if st := h.d.Stats(); st.IdleClosed != 1 {
		t.Errorf("IdleClosed = %d", st.IdleClosed)
	}
	if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
		t.Fatal(res[0].Err)
	}
	if n := len(u.Sessions()); n != 2 {
		t.Errorf("sessions = %d, want 2", n)
	}
}

func TestPoolDropsConnectionsOfRotatedCredential(t *testing.T) {
	u := startUpstream(t, upstream.Config{})
	creds := newCreds(testPass)
	h := newDeliverer(t, creds, relayTo(u, AuthRequired))
	ctx := context.Background()
	if res := h.d.Deliver(ctx, message("a@example.net")); statuses(res) != "delivered" {
		t.Fatal(res[0].Err)
	}
	u.SetPassword(testUser, newPass)
	creds.set(secrets.NewCredential("primary", testUser, newPass, "v2"))
	if res := h.d.Deliver(ctx, message("a@example.net")); statuses(res) != "delivered" {
		t.Fatal(res[0].Err)
	}
	// The pool said QUIT on the first session before opening the second;
	// the upstream notes the end a moment after its 221.
	deadline := time.Now().Add(5 * time.Second)
	ss := u.Sessions()
	for len(ss) > 0 && ss[0].End.IsZero() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		ss = u.Sessions()
	}
	if len(ss) != 2 || ss[0].End.IsZero() || !ss[1].End.IsZero() || ss[0].Messages != 1 || ss[1].Messages != 1 {
		t.Fatalf("sessions = %+v, want the first closed and a second one", ss)
	}
	if a := ss[1].Auths; len(a) != 1 || !a[0].OK {
		t.Errorf("second session auths = %+v", a)
	}
	if st := h.d.Stats(); st.StaleClosed != 1 || st.AuthFailures != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestPoolReplacesBrokenConnection(t *testing.T) {
	u := startUpstream(t, upstream.Config{})
	addr, ca := u.Addr(), u.CA()
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
	if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
		t.Fatal(res[0].Err)
	}
	// The relay restarts: the pooled connection is dead.
	u.Close()
	u2 := startUpstream(t, upstream.Config{Addr: addr, CA: ca})
	if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
		t.Fatalf("after the relay restarted: %s %v", statuses(res), res[0].Err)
	}
	if u2.Count() != 1 {
		t.Errorf("count = %d", u2.Count())
	}
	if st := h.d.Stats(); st.BrokenReplaced != 1 || st.ConnectionFailures != 0 || st.Deferred != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestCloseQuitsPooledConnections(t *testing.T) {
	u := startUpstream(t, upstream.Config{})
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
	if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
		t.Fatal(res[0].Err)
	}
	h.d.Close()
	waitSessionsEnded(t, u, 1)
	res := h.d.Deliver(context.Background(), message("a@example.net"))
	if statuses(res) != "temporary" || !strings.Contains(res[0].Err.Error(), "shutting down") {
		t.Errorf("Deliver after Close: %s %v", statuses(res), res[0].Err)
	}
}
