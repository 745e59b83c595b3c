package deliver

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/secrets"
)

// deadAddress returns a loopback address nothing listens on.
func deadAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestReasons: each kind of failure a user can meet gives its reason, from
// the fixed set, on every recipient it failed; and the relay's state says
// whether the relay itself was usable (a refusal of a recipient is not
// the relay's fault, a failed connection or AUTH is).
func TestReasons(t *testing.T) {
	for _, tc := range []struct {
		name   string
		up     upstream.Config
		dead   bool             // the relay's address has no listener
		creds  func(*fakeCreds) // changes the credential source
		rcpt   string           // default ok@example.net
		open   func() (io.ReadCloser, error)
		status spool.Status
		reason string
		usable bool
	}{
		{name: "connect", dead: true, status: spool.Temporary, reason: ReasonConnect},
		{name: "certificate", up: upstream.Config{UntrustedCert: true}, status: spool.Temporary, reason: ReasonTLS},
		{name: "no STARTTLS", up: upstream.Config{TLS: upstream.NoTLS}, status: spool.Temporary, reason: ReasonTLS},
		{name: "535", up: upstream.Config{Behavior: upstream.Behavior{AuthReply: &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "no"}}},
			status: spool.Temporary, reason: ReasonAuth},
		{name: "no AUTH offered", up: upstream.Config{Behavior: upstream.Behavior{NoAuth: true}}, status: spool.Temporary, reason: ReasonAuth},
		{name: "credential unavailable", creds: func(f *fakeCreds) {
			f.getErr = &secrets.UnavailableError{Name: "primary", Err: errors.New("vault: connection refused")}
		}, status: spool.Temporary, reason: ReasonCredentials},
		{name: "421 greeting", up: upstream.Config{Behavior: upstream.Behavior{Greeting: upstream.ErrServiceNotAvailable}},
			status: spool.Temporary, reason: ReasonRelay4xx},
		{name: "RCPT 451", up: upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{
			{Command: "RCPT", Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "busy"}}}}},
			status: spool.Temporary, reason: ReasonRelay4xx, usable: true},
		{name: "RCPT 550", up: upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{{Command: "RCPT", Reply: upstream.ErrRejectRcpt}}}},
			status: spool.Permanent, reason: ReasonRelay5xx, usable: true},
		{name: "MAIL 530", up: upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{{Command: "MAIL", Reply: upstream.ErrAuthRequired}}}},
			status: spool.Temporary, reason: ReasonAuth, usable: true},
		{name: "dropped at MAIL", up: upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{{Command: "MAIL", Drop: true}}}},
			status: spool.Temporary, reason: ReasonNetwork, usable: true},
		{name: "spool unreadable", open: func() (io.ReadCloser, error) { return nil, errors.New("input/output error") },
			status: spool.Temporary, reason: ReasonLocal, usable: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := startUpstream(t, tc.up)
			r := relayTo(u, AuthRequired)
			if tc.dead {
				r.Address = deadAddress(t)
			}
			creds := newCreds(testPass)
			if tc.creds != nil {
				tc.creds(creds)
			}
			h := newDeliverer(t, creds, r)
			m := message("ok@example.net")
			if tc.open != nil {
				m.Open = tc.open
			}
			res := h.d.Deliver(context.Background(), m)
			if len(res) != 1 || res[0].Status != tc.status || res[0].Reason != tc.reason {
				t.Fatalf("result = %+v, want %s with reason %q", res, tc.status, tc.reason)
			}
			st := h.d.Relays()
			if len(st) != 1 || !st[0].Tried || st[0].Usable != tc.usable || st[0].Name != "up" || st[0].Since.IsZero() {
				t.Fatalf("relay state = %+v, want tried, usable %v", st, tc.usable)
			}
			if !tc.usable && st[0].Reason != tc.reason {
				t.Errorf("relay state reason = %q, want %q", st[0].Reason, tc.reason)
			}
		})
	}
}

// TestReasonsFailover: when every relay fails, the reason is the first
// relay's; each relay's state is its own; a relay never reached is
// untried, and one that works again is usable again.
func TestReasonsFailover(t *testing.T) {
	good := startUpstream(t, upstream.Config{})
	bad := startUpstream(t, upstream.Config{UntrustedCert: true})
	dead := Relay{Name: "dead", Address: deadAddress(t), ConnectTimeout: relayTo(good, AuthRequired).ConnectTimeout}
	badRelay := relayTo(bad, AuthRequired)
	badRelay.Name = "bad"
	h := newDeliverer(t, newCreds(testPass), dead, badRelay)
	res := h.d.Deliver(context.Background(), message("ok@example.net"))
	if res[0].Status != spool.Temporary || res[0].Reason != ReasonConnect || res[0].Relay != "" {
		t.Fatalf("result = %+v, want temporary, reason connect (the first relay's), no relay", res[0])
	}
	st := h.d.Relays()
	if st[0].Usable || st[0].Reason != ReasonConnect || st[1].Usable || st[1].Reason != ReasonTLS {
		t.Errorf("relay states = %+v, want dead: connect, bad: tls", st)
	}

	goodRelay := relayTo(good, AuthRequired)
	h = newDeliverer(t, newCreds(testPass), goodRelay, badRelay)
	if res := h.d.Deliver(context.Background(), message("ok@example.net")); res[0].Status != spool.Delivered || res[0].Reason != "" {
		t.Fatalf("result = %+v, want delivered", res[0])
	}
	st = h.d.Relays()
	if !st[0].Tried || !st[0].Usable || st[1].Tried {
		t.Errorf("relay states = %+v, want up usable, bad untried", st)
	}

	// A relay that turned mail away at the greeting takes it again.
	flaky := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{Greeting: upstream.ErrServiceNotAvailable}})
	h = newDeliverer(t, newCreds(testPass), relayTo(flaky, AuthRequired))
	h.d.Deliver(context.Background(), message("ok@example.net"))
	st = h.d.Relays()
	if st[0].Usable || st[0].Reason != ReasonRelay4xx {
		t.Fatalf("relay state = %+v, want unusable, relay_4xx", st)
	}
	failedSince := st[0].Since
	flaky.SetBehavior(upstream.Behavior{})
	if res := h.d.Deliver(context.Background(), message("ok@example.net")); res[0].Status != spool.Delivered {
		t.Fatalf("result = %+v, want delivered", res[0])
	}
	if st := h.d.Relays(); !st[0].Usable || st[0].Reason != "" || st[0].Since.Before(failedSince) {
		t.Errorf("relay state after a good attempt = %+v, want usable since then", st)
	}
}

// TestReasonShutdown: a delivery after Close is deferred for the shutdown,
// and says nothing about the relay.
func TestReasonShutdown(t *testing.T) {
	u := startUpstream(t, upstream.Config{})
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
	h.d.Close()
	res := h.d.Deliver(context.Background(), message("ok@example.net"))
	if res[0].Status != spool.Temporary || res[0].Reason != ReasonShutdown {
		t.Fatalf("result = %+v, want temporary, reason shutdown", res[0])
	}
	if st := h.d.Relays(); st[0].Tried {
		t.Errorf("relay state = %+v, want untried", st)
	}
}
