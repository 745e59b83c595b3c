package deliver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// strictRelay is a plaintext upstream (AUTH allowed in the clear, as on
// loopback) that, like OpenSMTPD, answers a second EHLO on one session
// with 503 5.5.1, and refuses recipients containing "nobody".
func strictRelay(t *testing.T) (*upstream.Server, Relay) {
	t.Helper()
	u := startUpstream(t, upstream.Config{TLS: upstream.NoTLS, AllowInsecureAuth: true, Behavior: upstream.Behavior{
		RejectRepeatedHelo: true,
		Rules:              []upstream.Rule{{Command: "RCPT", Contains: "nobody", Reply: upstream.ErrRejectRcpt}},
	}})
	r := relayTo(u, AuthRequired)
	r.TLS, r.AllowPlaintextAuth = TLSNone, true
	return u, r
}

// TestStrictRelayAfterAnOpenTransaction: transactions that end without the
// reply to their data (every recipient refused; the spooled message cannot
// be read) are followed by valid messages. Every valid message reaches the
// relay, none fails permanently, and no session hears EHLO twice (nor
// RSET): a connection left in a transaction is replaced, not reset.
func TestStrictRelayAfterAnOpenTransaction(t *testing.T) {
	u, r := strictRelay(t)
	h := newDeliverer(t, newCreds(testPass), r)
	ctx := context.Background()
	unreadable := message("a@example.net")
	unreadable.Open = func() (io.ReadCloser, error) { return nil, errors.New("spool file vanished") }

	valid := 0
	deliverValid := func(step string) {
		t.Helper()
		for range 2 {
			valid++
			if res := h.d.Deliver(ctx, message(fmt.Sprintf("ok%d@example.net", valid))); statuses(res) != "delivered" {
				t.Errorf("%s: valid message %d: %s %v", step, valid, statuses(res), res[0].Err)
			}
		}
	}
	deliverValid("first")
	if res := h.d.Deliver(ctx, message("nobody@example.net")); statuses(res) != "permanent" {
		t.Fatalf("refused recipient: %s %v", statuses(res), res[0].Err)
	}
	deliverValid("after every recipient was refused")
	if res := h.d.Deliver(ctx, unreadable); statuses(res) != "temporary" {
		t.Fatalf("unreadable message: %s %v", statuses(res), res[0].Err)
	}
	deliverValid("after a message could not be read")
	if res := h.d.Deliver(ctx, message("nobody@example.net", "ok-too@example.net")); statuses(res) != "permanent,delivered" {
		t.Fatalf("one of two recipients refused: %s", statuses(res))
	}
	deliverValid("after a partly refused message")
	h.d.Close()

	if got, want := u.Count(), valid+1; got != want {
		t.Errorf("the relay received %d messages, want %d", got, want)
	}
	if st := h.d.Stats(); st.Failed != 2 {
		t.Errorf("Failed = %d, want 2 (the two refused recipients only)", st.Failed)
	}
	for _, s := range waitSessionsEnded(t, u, 1) {
		if s.Helos != 1 || s.Resets != 0 {
			t.Errorf("session %d: %d EHLOs and %d RSETs, want 1 and 0", s.ID, s.Helos, s.Resets)
		}
	}
}

// TestMailRefusedOnReusedConnection: a 5xx to MAIL on a pooled connection
// may be about the session (a relay's per-session limit, a confused
// state), so the message is tried once more on a new connection, whose
// answer is final.
func TestMailRefusedOnReusedConnection(t *testing.T) {
	refused := &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"}
	u := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{
		{Command: "MAIL", Contains: "refused", Reply: refused},
	}}})
	r := relayTo(u, AuthRequired)
	r.MaxConnections = 1
	h := newDeliverer(t, newCreds(testPass), r)
	ctx := context.Background()
	if res := h.d.Deliver(ctx, message("a@example.net")); statuses(res) != "delivered" {
		t.Fatal(res[0].Err)
	}
	m := message("b@example.net")
	m.From = "refused@example.com"
	res := h.d.Deliver(ctx, m)
	if statuses(res) != "permanent" || !strings.Contains(res[0].Err.Error(), "553 5.7.1 sender refused") {
		t.Fatalf("result %s %v, want the new connection's 553 as final", statuses(res), res[0].Err)
	}
	if res := h.d.Deliver(ctx, message("c@example.net")); statuses(res) != "delivered" {
		t.Fatal(res[0].Err)
	}
	h.d.Close()
	ss := waitSessionsEnded(t, u, 2)
	if len(ss) != 2 || len(ss[0].Mails) != 2 || ss[0].Mails[1].Code != 553 || len(ss[1].Mails) != 2 || ss[1].Mails[0].Code != 553 {
		t.Errorf("sessions = %+v, want the refused MAIL on the pooled session, then again on a new one", ss)
	}
}

// TestConnectionLevel5xxNeverBounces crosses the auth policies with a
// relay that answers 5xx to EHLO, STARTTLS or AUTH: the message is never
// failed permanently; it is deferred, or under enabled and disabled
// delivered without AUTH where AUTH was the refused step.
func TestConnectionLevel5xxNeverBounces(t *testing.T) {
	e := func(code int, enh smtp.EnhancedCode, msg string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}
	}
	cases := []struct {
		name     string
		cfg      upstream.Config
		tls      TLSMode
		authStep bool // the refused step is AUTH
	}{
		{name: "EHLO 550 before STARTTLS", cfg: upstream.Config{Behavior: upstream.Behavior{EHLOReply: e(550, smtp.EnhancedCode{5, 7, 1}, "not you")}}},
		{name: "EHLO 503 without TLS", cfg: upstream.Config{TLS: upstream.NoTLS, AllowInsecureAuth: true, Behavior: upstream.Behavior{EHLOReply: e(503, smtp.EnhancedCode{5, 5, 1}, "bad sequence")}}, tls: TLSNone},
		{name: "EHLO and HELO 502 without TLS", cfg: upstream.Config{TLS: upstream.NoTLS, AllowInsecureAuth: true, Behavior: upstream.Behavior{EHLOReply: e(502, smtp.EnhancedCode{5, 5, 1}, "not implemented")}}, tls: TLSNone},
		{name: "STARTTLS 554", cfg: upstream.Config{Behavior: upstream.Behavior{STARTTLSReply: e(554, smtp.EnhancedCode{5, 7, 0}, "no TLS for you")}}},
		{name: "AUTH 535", cfg: upstream.Config{Behavior: upstream.Behavior{AuthReply: smtp.ErrAuthFailed}}, authStep: true},
		{name: "AUTH 534", cfg: upstream.Config{Behavior: upstream.Behavior{AuthReply: e(534, smtp.EnhancedCode{5, 7, 9}, "mechanism too weak")}}, authStep: true},
		{name: "AUTH 504", cfg: upstream.Config{Behavior: upstream.Behavior{AuthReply: e(504, smtp.EnhancedCode{5, 5, 4}, "unrecognized mechanism")}}, authStep: true},
		{name: "AUTH 550", cfg: upstream.Config{Behavior: upstream.Behavior{AuthReply: e(550, smtp.EnhancedCode{5, 7, 1}, "account disabled")}}, authStep: true},
		{name: "AUTH 554", cfg: upstream.Config{Behavior: upstream.Behavior{AuthReply: e(554, smtp.EnhancedCode{5, 7, 0}, "no")}}, authStep: true},
	}
	for _, policy := range []AuthPolicy{AuthRequired, AuthEnabled, AuthDisabled} {
		for _, c := range cases {
			t.Run(string(policy)+"/"+c.name, func(t *testing.T) {
				u := startUpstream(t, c.cfg)
				r := relayTo(u, policy)
				r.TLS, r.AllowPlaintextAuth = c.tls, c.tls == TLSNone
				h := newDeliverer(t, newCreds(testPass), r)
				res := h.d.Deliver(context.Background(), message("a@example.net"))
				h.d.Close()
				want := "temporary"
				if c.authStep && policy != AuthRequired {
					want = "delivered"
				}
				if got := statuses(res); got != want {
					t.Fatalf("status %s (%v), want %s", got, res[0].Err, want)
				}
				if res[0].Status == spool.Permanent || h.d.Stats().Failed != 0 {
					t.Errorf("a connection-level 5xx failed the message permanently")
				}
				if want == "temporary" && u.Count() != 0 {
					t.Errorf("the relay received the message")
				}
			})
		}
	}
}

// TestAuthReplyEchoIsWithheld: a relay that quotes the SASL payload in its
// refusal (PLAIN or LOGIN, base64 and decoded) gets its code and enhanced
// code reported, never its text: not in the result, the log or Check.
func TestAuthReplyEchoIsWithheld(t *testing.T) {
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		t.Run(mech, func(t *testing.T) {
			u := startUpstream(t, upstream.Config{
				Accounts: map[string]string{testUser: "something else"},
				Behavior: upstream.Behavior{EchoAuth: true},
			})
			r := relayTo(u, AuthRequired)
			r.Mechanisms = []string{mech}
			h := newDeliverer(t, newCreds(testPass), r)
			res := h.d.Deliver(context.Background(), message("a@example.net"))
			if statuses(res) != "temporary" {
				t.Fatalf("status %s", statuses(res))
			}
			want := "AUTH: " + mech + " as " + testUser + " rejected: 535 5.7.8 authentication credentials invalid (relay's text withheld)"
			if !strings.Contains(res[0].Err.Error(), want) {
				t.Errorf("error = %v, want it to contain %q", res[0].Err, want)
			}
			var checked []string
			for _, c := range h.d.Check(context.Background()) {
				checked = append(checked, c.String(), fmt.Sprintf("%+v", c))
			}
			assertNoSecrets(t, h, res, checked...)
			if strings.Contains(h.logs.String()+res[0].Err.Error()+strings.Join(checked, ""), "for AUTH") {
				t.Error("the relay's text came through")
			}
		})
	}
}
