package deliver

import (
	"context"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/secrets"
)

// TestOldConnectionsIdleSwept: after the credential is replaced, a pooled
// connection made with the old secret counts as old until the janitor
// closes it, without any message needing the pool; the count then reads
// 0, and the upstream saw that session end.
func TestOldConnectionsIdleSwept(t *testing.T) {
	u := startUpstream(t, upstream.Config{})
	creds := newCreds(testPass)
	r := relayTo(u, AuthRequired)
	r.IdleTimeout = 400 * time.Millisecond // the janitor looks every 100ms
	h := newDeliverer(t, creds, r)
	if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
		t.Fatal(res[0].Err)
	}
	if got := h.d.OldConnections(); got["primary"] != 0 || len(got) != 1 {
		t.Fatalf("before the rotation OldConnections = %v, want primary: 0", got)
	}
	creds.set(secrets.NewCredential("primary", testUser, newPass, "v2"))
	if got := h.d.OldConnections()["primary"]; got != 1 {
		t.Fatalf("after the rotation OldConnections = %d, want 1 (the idle one)", got)
	}
	testlib.WaitFor(t, 5*time.Second, "the old idle connection closed", func() bool {
		return h.d.OldConnections()["primary"] == 0
	})
	ss := waitSessionsEnded(t, u, 1)
	if st := h.d.Stats(); st.StaleClosed != 1 || st.IdleClosed != 0 {
		t.Errorf("stats: StaleClosed %d IdleClosed %d, want 1 and 0: the sweep, not the idle timeout, closed it", st.StaleClosed, st.IdleClosed)
	}
	if len(ss) != 1 || ss[0].Messages != 1 {
		t.Errorf("sessions = %+v", ss)
	}
}

// TestOldConnectionsInUse: a connection carrying a message while the
// credential is replaced counts as old, and is closed rather than pooled
// when its message is done.
func TestOldConnectionsInUse(t *testing.T) {
	u := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{Stall: 1, StallDuration: 700 * time.Millisecond}})
	creds := newCreds(testPass)
	h := newDeliverer(t, creds, relayTo(u, AuthRequired))
	done := make(chan string)
	go func() {
		res := h.d.Deliver(context.Background(), message("a@example.net"))
		done <- statuses(res)
	}()
	testlib.WaitFor(t, 5*time.Second, "the transaction stalled at the relay", func() bool {
		ss := u.Sessions()
		return len(ss) == 1 && ss[0].Stalled
	})
	u.SetPassword(testUser, newPass)
	creds.set(secrets.NewCredential("primary", testUser, newPass, "v2"))
	if got := h.d.OldConnections()["primary"]; got != 1 {
		t.Errorf("with the message in flight OldConnections = %d, want 1", got)
	}
	if st := <-done; st != "delivered" {
		t.Fatalf("the message in flight: %s", st)
	}
	if got := h.d.OldConnections()["primary"]; got != 0 {
		t.Errorf("after the message OldConnections = %d, want 0", got)
	}
	waitSessionsEnded(t, u, 1)
	if st := h.d.Stats(); st.StaleClosed != 1 {
		t.Errorf("StaleClosed = %d, want 1", st.StaleClosed)
	}
}
