package upstream

import (
	"runtime"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestAttemptsRecordEveryOutcome: every transaction whose data was read is
// an Attempt under its Message-ID, with the reply it got: 451, a drop, a
// stall that ended with 250, and a plain 250.
func TestAttemptsRecordEveryOutcome(t *testing.T) {
	s := start(t, Config{})
	sendOne := func(id string) error {
		c, err := smtp.DialStartTLS(s.Addr(), s.ClientTLSConfig())
		if err != nil {
			return err
		}
		defer c.Close()
		return send(c, "a@example.com", []string{"b@example.net"}, msg(id))
	}

	s.SetBehavior(Behavior{TempFailAfterData: 1})
	if err := sendOne("m@test"); smtpCode(err) != 451 {
		t.Fatalf("with TempFailAfterData: %v, want 451", err)
	}
	s.SetBehavior(Behavior{DropAfterData: 1})
	if err := sendOne("m@test"); err == nil || smtpCode(err) != 0 {
		t.Fatalf("with DropAfterData: %v, want a network error", err)
	}
	s.SetBehavior(Behavior{Stall: 1, StallDuration: time.Millisecond})
	if err := sendOne("m@test"); err != nil {
		t.Fatalf("after a short stall: %v", err)
	}
	s.SetBehavior(Behavior{})
	if err := sendOne("other@test"); err != nil {
		t.Fatal(err)
	}

	got := s.AttemptsByMessageID()
	m := got["<m@test>"]
	if len(m) != 3 || len(got["<other@test>"]) != 1 || len(got) != 2 {
		t.Fatalf("attempts by Message-ID: %+v", got)
	}
	want := []struct {
		code             int
		dropped, stalled bool
	}{{451, false, false}, {421, true, false}, {250, false, true}}
	for i, w := range want {
		if a := m[i]; a.Code != w.code || a.Dropped != w.dropped || a.Stalled != w.stalled {
			t.Errorf("attempt %d = %+v, want code %d dropped %v stalled %v", i, a, w.code, w.dropped, w.stalled)
		}
		if i > 0 && m[i].Time.Before(m[i-1].Time) {
			t.Errorf("attempt %d is recorded before attempt %d", i, i-1)
		}
	}
	if a := got["<other@test>"][0]; a.Code != 250 || a.Session == m[2].Session {
		t.Errorf("last attempt = %+v", a)
	}
	if s.Count() != 2 {
		t.Errorf("Count = %d, want 2 (only the stalled and the plain message were kept)", s.Count())
	}
	s.Reset()
	if n := len(s.Attempts()); n != 0 {
		t.Errorf("%d attempts after Reset", n)
	}
}

// TestMaxHeldIgnoresAbandonedStalls: a client that gives up on a stalled
// session and opens a new one held one connection at a time, though the
// upstream saw two open (MaxConcurrent) until the stall ended.
func TestMaxHeldIgnoresAbandonedStalls(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("MaxHeld reads the TCP state on Linux only")
	}
	s := start(t, Config{Behavior: Behavior{Stall: 1, StallDuration: time.Hour}})
	c := dialTLS(t, s)
	errc := make(chan error, 1)
	go func() { errc <- send(c, "a@example.com", []string{"b@example.net"}, msg("s")) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.Sessions()) == 0 || !s.Sessions()[0].Stalled {
		if time.Now().After(deadline) {
			t.Fatal("session never stalled")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.Close() // the client gives up
	<-errc
	waitPeerClosed(t, s)
	s.SetBehavior(Behavior{})
	c2 := dialTLS(t, s)
	if err := send(c2, "a@example.com", []string{"b@example.net"}, msg("t")); err != nil {
		t.Fatal(err)
	}
	if got := s.MaxConcurrent(); got != 2 {
		t.Errorf("MaxConcurrent = %d, want 2 (the stalled session is still open here)", got)
	}
	if got := s.MaxHeld(); got != 1 {
		t.Errorf("MaxHeld = %d, want 1", got)
	}

	// Two connections the client holds at once count as two.
	c3 := dialTLS(t, s)
	if err := c3.Noop(); err != nil {
		t.Fatal(err)
	}
	if got := s.MaxHeld(); got != 2 {
		t.Errorf("MaxHeld with two live connections = %d, want 2", got)
	}
}

// waitPeerClosed waits until the kernel has the client's close of the
// first session, the only one open (MaxHeld's test runs on Linux only).
func waitPeerClosed(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Held() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the client's close never reached the stalled session")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
