package deliver

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/roots"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/secrets"
)

// upstreamCase is one behaviour of the relay host in the policy table.
type upstreamCase struct {
	name      string
	cfg       upstream.Config
	tls       TLSMode // the relay's tls setting
	plainAuth bool    // the relay's allow_plaintext_auth
}

var upstreamCases = []upstreamCase{
	{name: "offers AUTH and accepts", cfg: upstream.Config{}},
	{name: "offers AUTH and answers 535", cfg: upstream.Config{Accounts: map[string]string{testUser: "something else"}}},
	{name: "does not offer AUTH", cfg: upstream.Config{Behavior: upstream.Behavior{NoAuth: true}}},
	{name: "does not offer STARTTLS", cfg: upstream.Config{TLS: upstream.NoTLS}},
	{name: "plaintext relay, tls none", cfg: upstream.Config{TLS: upstream.NoTLS, AllowInsecureAuth: true}, tls: TLSNone},
	{name: "plaintext relay, tls none, plaintext auth allowed", cfg: upstream.Config{TLS: upstream.NoTLS, AllowInsecureAuth: true}, tls: TLSNone, plainAuth: true},
}

// outcome is what a row expects.
type outcome struct {
	status    string // RcptResult status of the one recipient
	auth      bool   // an AUTH command reached the upstream
	mail      bool   // a MAIL command reached the upstream
	authedAt  bool   // the MAIL came on an authenticated session
	fallbacks uint64 // Stats.AuthFallbacks
	errHas    string // the result's error contains this
}

var (
	delivAuthed = outcome{status: "delivered", auth: true, mail: true, authedAt: true}
	delivPlain  = outcome{status: "delivered", mail: true}
	noStartTLS  = outcome{status: "temporary", errHas: `STARTTLS: not offered by the relay, and tls = "starttls" requires it`}
)

// expected[policy][upstream case name]
var expected = map[AuthPolicy]map[string]outcome{
	AuthRequired: {
		"offers AUTH and accepts":                           delivAuthed,
		"offers AUTH and answers 535":                       {status: "temporary", auth: true, errHas: "AUTH: PLAIN as " + testUser + " rejected: 535 5.7.8"},
		"does not offer AUTH":                               {status: "temporary", errHas: "AUTH: not offered by the relay"},
		"does not offer STARTTLS":                           noStartTLS,
		"plaintext relay, tls none":                         {status: "temporary", errHas: "AUTH: not sent: the connection has no TLS and allow_plaintext_auth is off"},
		"plaintext relay, tls none, plaintext auth allowed": delivAuthed,
	},
	AuthEnabled: {
		"offers AUTH and accepts":                           delivAuthed,
		"offers AUTH and answers 535":                       {status: "delivered", auth: true, mail: true, fallbacks: 1},
		"does not offer AUTH":                               {status: "delivered", mail: true, fallbacks: 1},
		"does not offer STARTTLS":                           noStartTLS,
		"plaintext relay, tls none":                         {status: "delivered", mail: true, fallbacks: 1},
		"plaintext relay, tls none, plaintext auth allowed": delivAuthed,
	},
	AuthDisabled: {
		"offers AUTH and accepts":                           delivPlain,
		"offers AUTH and answers 535":                       delivPlain,
		"does not offer AUTH":                               delivPlain,
		"does not offer STARTTLS":                           noStartTLS,
		"plaintext relay, tls none":                         delivPlain,
		"plaintext relay, tls none, plaintext auth allowed": delivPlain,
	},
}

func TestPolicyTable(t *testing.T) {
	for _, policy := range []AuthPolicy{AuthRequired, AuthEnabled, AuthDisabled} {
		for _, uc := range upstreamCases {
			want := expected[policy][uc.name]
			t.Run(string(policy)+"/"+uc.name, func(t *testing.T) {
				u := startUpstream(t, uc.cfg)
				r := relayTo(u, policy)
				r.TLS, r.AllowPlaintextAuth = uc.tls, uc.plainAuth
				h := newDeliverer(t, newCreds(testPass), r)

				res := h.d.Deliver(context.Background(), message("rcpt@example.net"))
				h.d.Close()
				if got := statuses(res); got != want.status {
					t.Fatalf("status = %s (%v), want %s", got, res[0].Err, want.status)
				}
				if want.errHas != "" && (res[0].Err == nil || !strings.Contains(res[0].Err.Error(), want.errHas)) {
					t.Errorf("error = %v, want it to contain %q", res[0].Err, want.errHas)
				}
				if want.status == "delivered" && res[0].Relay != "up" {
					t.Errorf("Relay = %q, want up", res[0].Relay)
				}

				sessions := waitSessionsEnded(t, u, 1)
				var sawAuth, sawMail, authedAtMail bool
				for _, s := range sessions {
					sawAuth = sawAuth || len(s.Auths) > 0
					sawMail = sawMail || s.MailIssued()
					for _, m := range s.Mails {
						authedAtMail = m.Authenticated
					}
					// Invariants of every row.
					if policy == AuthRequired && s.UnauthenticatedMail() {
						t.Errorf("required: unauthenticated MAIL: %+v", s)
					}
					if policy == AuthDisabled && len(s.Auths) > 0 {
						t.Errorf("disabled: AUTH sent: %+v", s.Auths)
					}
					for _, a := range s.Auths {
						if !a.TLS && !uc.plainAuth {
							t.Errorf("AUTH without TLS and without allow_plaintext_auth: %+v", a)
						}
					}
				}
				if sawAuth != want.auth || sawMail != want.mail || authedAtMail != want.authedAt {
					t.Errorf("upstream saw AUTH=%v MAIL=%v authenticated-at-MAIL=%v, want %v %v %v; sessions %+v",
						sawAuth, sawMail, authedAtMail, want.auth, want.mail, want.authedAt, sessions)
				}
				if n := u.Count(); (n == 1) != (want.status == "delivered") {
					t.Errorf("upstream holds %d messages", n)
				}
				st := h.d.Stats()
				if st.AuthFallbacks != want.fallbacks {
					t.Errorf("AuthFallbacks = %d, want %d", st.AuthFallbacks, want.fallbacks)
				}
				if want.fallbacks > 0 && !strings.Contains(h.logs.String(), "continuing without it") {
					t.Errorf("fallback not logged: %s", h.logs)
				}
				if res[0].Status == spool.Permanent {
					t.Errorf("an auth or TLS problem gave a permanent failure")
				}
				assertNoSecrets(t, h, res)
			})
		}
	}
}

func TestUntrustedCertificate(t *testing.T) {
	for _, mode := range []upstream.TLSMode{upstream.StartTLS, upstream.Implicit} {
		t.Run(string(mode), func(t *testing.T) {
			u := startUpstream(t, upstream.Config{UntrustedCert: true, TLS: mode})
			r := relayTo(u, AuthRequired)
			if mode == upstream.Implicit {
				r.TLS = TLSImplicit
			}
			h := newDeliverer(t, newCreds(testPass), r)
			res := h.d.Deliver(context.Background(), message("rcpt@example.net"))
			if statuses(res) != "temporary" {
				t.Fatalf("status = %s", statuses(res))
			}
			if err := res[0].Err; err == nil || !strings.Contains(err.Error(), "TLS: certificate verification failed") ||
				!strings.Contains(err.Error(), "certificate signed by unknown authority") {
				t.Errorf("error = %v, want it to name certificate verification", err)
			}
			h.d.Close()
			for _, s := range waitSessionsEnded(t, u, 1) {
				if s.MailIssued() || len(s.Auths) > 0 {
					t.Errorf("upstream saw %+v", s)
				}
			}
			if u.Count() != 0 || h.d.Stats().TLSFailures != 1 {
				t.Errorf("count %d, TLS failures %d", u.Count(), h.d.Stats().TLSFailures)
			}
		})
	}
}

func TestImplicitTLSAndMechanismOrder(t *testing.T) {
	u := startUpstream(t, upstream.Config{TLS: upstream.Implicit})
	r := relayTo(u, AuthRequired)
	r.TLS = TLSImplicit
	r.Mechanisms = []string{"login", "plain"}
	h := newDeliverer(t, newCreds(testPass), r)
	m := message("rcpt@example.net")
	if res := h.d.Deliver(context.Background(), m); statuses(res) != "delivered" {
		t.Fatalf("status = %s: %v", statuses(res), res[0].Err)
	}
	got := u.Messages()[0]
	if !got.TLS || got.Username != testUser {
		t.Errorf("message = %+v", got)
	}
	rc, _ := m.Open()
	want, _ := io.ReadAll(rc)
	if string(got.Data) != string(want) {
		t.Errorf("body arrived as %q, want %q (dot-stuffing)", got.Data, want)
	}
	if a := u.Sessions()[0].Auths; len(a) != 1 || a[0].Mechanism != "LOGIN" {
		t.Errorf("auths = %+v, want one LOGIN", a)
	}
}

func TestRefreshAfter535(t *testing.T) {
	t.Run("new secret: one retry, delivered", func(t *testing.T) {
		u := startUpstream(t, upstream.Config{})
		u.SetPassword(testUser, newPass)
		creds := newCreds(testPass)
		next := secrets.NewCredential("primary", testUser, newPass, "v2")
		creds.next = &next
		h := newDeliverer(t, creds, relayTo(u, AuthRequired))
		res := h.d.Deliver(context.Background(), message("rcpt@example.net"))
		if statuses(res) != "delivered" {
			t.Fatalf("status = %s: %v", statuses(res), res[0].Err)
		}
		if creds.refreshCount() != 1 {
			t.Errorf("Refresh called %d times, want 1", creds.refreshCount())
		}
		ss := u.Sessions()
		if len(ss) != 1 {
			t.Fatalf("sessions = %d, want the retry on the same one", len(ss))
		}
		a := ss[0].Auths
		if len(a) != 2 || a[0].OK || a[0].Code != 535 || !a[1].OK {
			t.Errorf("auths = %+v, want a 535 then a success", a)
		}
		if ss[0].UnauthenticatedMail() {
			t.Error("unauthenticated MAIL")
		}
		if st := h.d.Stats(); st.AuthRetries != 1 || st.AuthFailures != 1 || st.AuthOK != 1 {
			t.Errorf("stats = %+v", st)
		}
		assertNoSecrets(t, h, res)
	})
	t.Run("same secret: temporary, no second AUTH", func(t *testing.T) {
		u := startUpstream(t, upstream.Config{})
		u.SetPassword(testUser, newPass)
		creds := newCreds(testPass)
		h := newDeliverer(t, creds, relayTo(u, AuthRequired))
		res := h.d.Deliver(context.Background(), message("rcpt@example.net"))
		if statuses(res) != "temporary" {
			t.Fatalf("status = %s", statuses(res))
		}
		if err := res[0].Err.Error(); !strings.Contains(err, "535") || !strings.Contains(err, `credential "primary" has no newer secret`) {
			t.Errorf("error = %s", err)
		}
		if creds.refreshCount() != 1 {
			t.Errorf("Refresh called %d times, want 1", creds.refreshCount())
		}
		h.d.Close()
		ss := waitSessionsEnded(t, u, 1)
		if len(ss) != 1 || len(ss[0].Auths) != 1 || ss[0].MailIssued() {
			t.Errorf("sessions = %+v, want one AUTH and no MAIL", ss)
		}
		assertNoSecrets(t, h, res)
	})
	t.Run("still rejected after refresh: temporary", func(t *testing.T) {
		u := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{AuthReply: smtp.ErrAuthFailed}})
		creds := newCreds(testPass)
		next := secrets.NewCredential("primary", testUser, newPass, "v2")
		creds.next = &next
		h := newDeliverer(t, creds, relayTo(u, AuthRequired))
		res := h.d.Deliver(context.Background(), message("rcpt@example.net"))
		if statuses(res) != "temporary" || !strings.Contains(res[0].Err.Error(), `after refreshing credential "primary"`) {
			t.Fatalf("result = %s %v", statuses(res), res[0].Err)
		}
		if a := u.Sessions()[0].Auths; len(a) != 2 {
			t.Errorf("auths = %+v, want exactly two", a)
		}
		assertNoSecrets(t, h, res)
	})
}

func TestCredentialUnavailable(t *testing.T) {
	u := startUpstream(t, upstream.Config{})
	creds := newCreds(testPass)
	creds.getErr = &secrets.UnavailableError{Name: "primary", Err: errors.New("age file /x: not a recipient")}
	h := newDeliverer(t, creds, relayTo(u, AuthRequired))
	res := h.d.Deliver(context.Background(), message("rcpt@example.net"))
	if statuses(res) != "temporary" || !strings.Contains(res[0].Err.Error(), `AUTH: not attempted: credential "primary" unavailable`) {
		t.Fatalf("result = %s %v", statuses(res), res[0].Err)
	}
	h.d.Close()
	if ss := waitSessionsEnded(t, u, 1); ss[0].MailIssued() || len(ss[0].Auths) > 0 {
		t.Errorf("session = %+v", ss[0])
	}
}

func TestTemporaryAuthReply(t *testing.T) {
	u := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{AuthReply: upstream.ErrAuthTemporary}})
	creds := newCreds(testPass)
	h := newDeliverer(t, creds, relayTo(u, AuthRequired))
	res := h.d.Deliver(context.Background(), message("rcpt@example.net"))
	if statuses(res) != "temporary" || !strings.Contains(res[0].Err.Error(), "454 4.7.0") {
		t.Fatalf("result = %s %v", statuses(res), res[0].Err)
	}
	if creds.refreshCount() != 0 {
		t.Error("a 454 triggered a credential refresh")
	}
}

func TestFailover(t *testing.T) {
	good := startUpstream(t, upstream.Config{})
	deadAddr := testlib.RefusedAddr(t)
	greet421 := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{Greeting: upstream.ErrServiceNotAvailable}})

	first := func(name, addr string) Relay {
		r := relayTo(good, AuthRequired)
		r.Name, r.Address = name, addr
		return r
	}
	cases := []struct {
		name, addr, errHas string
	}{
		{"refuses TCP", deadAddr, "TCP connect: dial tcp " + deadAddr},
		{"421 greeting", greet421.Addr(), "greeting: 421 4.3.2 Service not available"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			good.Reset()
			second := relayTo(good, AuthRequired)
			second.Name = "second"
			h := newDeliverer(t, newCreds(testPass), first("first", c.addr), second)
			res := h.d.Deliver(context.Background(), message("rcpt@example.net"))
			if statuses(res) != "delivered" || res[0].Relay != "second" {
				t.Fatalf("result = %+v", res)
			}
			if good.Count() != 1 || h.d.Stats().ConnectionFailures != 1 {
				t.Errorf("count %d, connection failures %d", good.Count(), h.d.Stats().ConnectionFailures)
			}
			if !strings.Contains(h.logs.String(), c.errHas) {
				t.Errorf("the first relay's failure is not logged with %q: %s", c.errHas, h.logs)
			}
		})
	}
	t.Run("all fail", func(t *testing.T) {
		h := newDeliverer(t, newCreds(testPass), first("first", deadAddr), first("second", greet421.Addr()))
		res := h.d.Deliver(context.Background(), message("a@example.net", "b@example.net"))
		if statuses(res) != "temporary,temporary" {
			t.Fatalf("statuses = %s", statuses(res))
		}
		msg := res[0].Err.Error()
		for _, want := range []string{"no relay could take the message", "relay first (" + deadAddr + "): TCP connect", "relay second (" + greet421.Addr() + "): greeting: 421"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q lacks %q", msg, want)
			}
		}
	})
}

func TestPerRecipientResults(t *testing.T) {
	u := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{
		{Command: "RCPT", Contains: "reject", Reply: upstream.ErrRejectRcpt},
		{Command: "RCPT", Contains: "busy", Reply: &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "mailbox busy"}},
		{Command: "MAIL", Contains: "blocked", Reply: &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"}},
	}}})
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
	ctx := context.Background()

	res := h.d.Deliver(ctx, message("ok@example.net", "reject-me@example.net", "busy@example.net"))
	if got := statuses(res); got != "delivered,permanent,temporary" {
		t.Fatalf("statuses = %s", got)
	}
	if e := res[1].Err.Error(); !strings.Contains(e, "relay up: RCPT TO:<reject-me@example.net>: 550 5.1.1 No such user here") {
		t.Errorf("550 error = %s", e)
	}
	if m := u.Messages(); len(m) != 1 || strings.Join(m[0].To, ",") != "ok@example.net" {
		t.Errorf("upstream messages = %+v", m)
	}

	if got := statuses(h.d.Deliver(ctx, message("reject@example.net"))); got != "permanent" {
		t.Errorf("all recipients refused: %s", got)
	}

	m := message("x@example.net", "y@example.net")
	m.From = "blocked@example.com"
	if got := statuses(h.d.Deliver(ctx, m)); got != "permanent,permanent" {
		t.Errorf("MAIL 553: %s", got)
	}

	u.UpdateBehavior(func(b *upstream.Behavior) { b.TempFailAfterData = 1 })
	res = h.d.Deliver(ctx, message("ok@example.net", "reject@example.net"))
	if got := statuses(res); got != "temporary,permanent" {
		t.Errorf("DATA 451: %s", got)
	}
	if e := res[0].Err.Error(); !strings.Contains(e, "DATA: 451 4.3.0") {
		t.Errorf("DATA error = %s", e)
	}
	u.UpdateBehavior(func(b *upstream.Behavior) {
		b.TempFailAfterData = 0
		b.Rules = append(b.Rules, upstream.Rule{Command: "DATA", Contains: "big", Reply: &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "too big"}})
	})
	if got := statuses(h.d.Deliver(ctx, message("big@example.net", "reject@example.net"))); got != "permanent,permanent" {
		t.Errorf("DATA 552: %s", got)
	}
	// The transaction whose recipients were all refused ended the first
	// session (it was left open, without data); everything else ran on
	// the second.
	if ss := u.Sessions(); len(ss) != 2 || ss[0].Messages != 1 || len(ss[0].Mails) != 2 || len(ss[1].Mails) != 3 {
		t.Errorf("sessions = %+v, want 2", ss)
	}
}

// TestResultsCarryReplyCodes: each recipient's result carries the reply
// code and enhanced code the relay answered, for the spool's DSN and the
// log line, and a failed one the reason; a delivered one carries the
// relay's reply to the data.
func TestResultsCarryReplyCodes(t *testing.T) {
	u := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{
		{Command: "RCPT", Contains: "reject", Reply: upstream.ErrRejectRcpt},
		{Command: "RCPT", Contains: "busy", Reply: &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "mailbox busy"}},
		{Command: "RCPT", Contains: "plain", Reply: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.NoEnhancedCode, Message: "no"}},
	}}})
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
	res := h.d.Deliver(context.Background(), message("ok@example.net", "reject-me@example.net", "busy@example.net", "plain@example.net"))
	type codes struct {
		code             int
		enhanced, reason string
	}
	var got []codes
	for _, r := range res {
		got = append(got, codes{r.Code, r.Enhanced, r.Reason})
	}
	want := []codes{{250, "2.0.0", ""}, {550, "5.1.1", ReasonRelay5xx}, {450, "4.2.1", ReasonRelay4xx}, {554, "", ReasonRelay5xx}}
	if !slices.Equal(got, want) {
		t.Errorf("reply codes = %v, want %v", got, want)
	}
	if r := res[0].Reply; !strings.HasPrefix(r, "250 2.0.0 ") {
		t.Errorf("reply to the data = %q, want the relay's 250 2.0.0 ...", r)
	}
}

func TestRequireAuthUpstreamUnderEnabled(t *testing.T) {
	// The relay demands AUTH (530) but the agent may not send it: a 530 is
	// an auth problem, so Temporary, never Permanent.
	u := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{RequireAuth: true, NoAuth: true}})
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthEnabled))
	res := h.d.Deliver(context.Background(), message("a@example.net"))
	if statuses(res) != "temporary" || !strings.Contains(res[0].Err.Error(), "530 5.7.0") {
		t.Fatalf("result = %s %v", statuses(res), res[0].Err)
	}
}

func TestNullSenderAndOpenFailure(t *testing.T) {
	u := startUpstream(t, upstream.Config{})
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
	m := message("a@example.net")
	m.From = ""
	if res := h.d.Deliver(context.Background(), m); statuses(res) != "delivered" {
		t.Fatalf("null sender: %s %v", statuses(res), res[0].Err)
	}
	if got := u.Messages()[0].From; got != "" {
		t.Errorf("sender = %q, want <>", got)
	}

	m = message("a@example.net")
	m.Open = func() (io.ReadCloser, error) { return nil, os.ErrNotExist }
	res := h.d.Deliver(context.Background(), m)
	if statuses(res) != "temporary" || !strings.Contains(res[0].Err.Error(), "open spooled message "+m.ID) {
		t.Fatalf("open failure: %s %v", statuses(res), res[0].Err)
	}

	// A read error mid-body must not deliver a truncated message.
	m = message("a@example.net")
	m.Open = func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(strings.NewReader("Subject: x\r\n\r\npartial"), errReaderAlways{})), nil
	}
	res = h.d.Deliver(context.Background(), m)
	if statuses(res) != "temporary" || !strings.Contains(res[0].Err.Error(), "read spooled message") {
		t.Fatalf("read failure: %s %v", statuses(res), res[0].Err)
	}
	// The connection was dropped and the next message goes on a new one.
	if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
		t.Fatalf("after a read failure: %s %v", statuses(res), res[0].Err)
	}
	if u.Count() != 2 {
		t.Errorf("upstream holds %d messages, want 2 (no truncated one)", u.Count())
	}
}

type errReaderAlways struct{}

func (errReaderAlways) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestContextEndsDelivery(t *testing.T) {
	u := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{Stall: 1, StallDuration: 1 << 40}})
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []spool.RcptResult)
	go func() { done <- h.d.Deliver(ctx, message("a@example.net")) }()
	for len(u.Sessions()) == 0 || !u.Sessions()[0].Stalled {
		select {
		case res := <-done:
			t.Fatalf("returned before the stall: %+v", res)
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	res := <-done
	if statuses(res) != "temporary" {
		t.Fatalf("status = %s", statuses(res))
	}
}

func TestNewErrors(t *testing.T) {
	ok := Relay{Name: "r", Address: "127.0.0.1:25"}
	cases := []struct {
		name   string
		relays []Relay
		creds  Credentials
		want   string
	}{
		{"no relays", nil, nil, "no relay configured"},
		{"bad address", []Relay{{Name: "r", Address: "nohost"}}, nil, `relay "r": address "nohost"`},
		{"bad tls", []Relay{{Name: "r", Address: ok.Address, TLS: "maybe"}}, nil, `relay "r": tls = "maybe": want starttls, implicit or none`},
		{"bad auth", []Relay{{Name: "r", Address: ok.Address, Auth: "sometimes"}}, nil, `relay "r": auth = "sometimes"`},
		{"enabled without credential", []Relay{{Name: "r", Address: ok.Address, Auth: AuthEnabled}}, nil, `relay "r": auth = "enabled" needs a credential`},
		{"no source", []Relay{{Name: "r", Address: ok.Address, Credential: "primary"}}, nil, "no credential source"},
		{"bad mechanism", []Relay{{Name: "r", Address: ok.Address, Credential: "p", Mechanisms: []string{"DIGEST-MD5"}}}, newCreds(testPass), `SASL mechanism "DIGEST-MD5" is not supported (supported: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, XOAUTH2, OAUTHBEARER, EXTERNAL)`},
		{"EXTERNAL without a certificate", []Relay{{Name: "r", Address: ok.Address, Mechanisms: []string{"EXTERNAL"}}}, newCreds(testPass), `EXTERNAL authenticates with the client certificate alone: it needs a client certificate and no credential`},
		{"EXTERNAL with a credential", []Relay{{Name: "r", Address: ok.Address, Credential: "p", ClientCertificate: "c", Mechanisms: []string{"external"}}}, newCreds(testPass), `EXTERNAL authenticates with the client certificate alone`},
		{"certificate without a source", []Relay{{Name: "r", Address: ok.Address, ClientCertificate: "c"}}, nil, "no credential source"},
		{"unnamed relay", []Relay{ok, {Address: "x"}}, nil, `relay "#2"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opt := Options{Hostname: "h", Relays: c.relays}
			if c.creds != nil {
				opt.Credentials = c.creds
			}
			d, err := New(opt)
			if err == nil {
				d.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error = %v, want %q", err, c.want)
			}
		})
	}
}

// TestRootCAsFromCAFile: a pool built from a ca_file (as the agent builds
// it, with internal/roots) verifies the relay.
func TestRootCAsFromCAFile(t *testing.T) {
	u := startUpstream(t, upstream.Config{})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := u.WriteCA(caFile); err != nil {
		t.Fatal(err)
	}
	pool, err := roots.Load(caFile)
	if err != nil {
		t.Fatal(err)
	}
	r := relayTo(u, AuthRequired)
	r.RootCAs = pool
	h := newDeliverer(t, newCreds(testPass), r)
	if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
		t.Fatalf("with ca_file: %s %v", statuses(res), res[0].Err)
	}

	if _, err := roots.Load(filepath.Join(dir, "missing.pem")); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("missing file: %v", err)
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate\n"), 0o644)
	if _, err := roots.Load(junk); err == nil || !strings.Contains(err.Error(), "ca_file "+junk+": no PEM certificate found") {
		t.Errorf("junk file: %v", err)
	}
}

func TestAuthDropsSession(t *testing.T) {
	// The relay hangs up on a failed AUTH: under enabled the agent goes on
	// without AUTH on a new session; under required it defers.
	for _, policy := range []AuthPolicy{AuthEnabled, AuthRequired} {
		t.Run(string(policy), func(t *testing.T) {
			u := startUpstream(t, upstream.Config{
				Accounts: map[string]string{testUser: "other"},
				Behavior: upstream.Behavior{DropOnAuthFailure: true},
			})
			h := newDeliverer(t, newCreds(testPass), relayTo(u, policy))
			res := h.d.Deliver(context.Background(), message("a@example.net"))
			h.d.Close()
			ss := waitSessionsEnded(t, u, 1)
			if policy == AuthRequired {
				if statuses(res) != "temporary" || len(ss) != 1 || ss[0].MailIssued() {
					t.Fatalf("result %s %v; sessions %+v", statuses(res), res[0].Err, ss)
				}
				return
			}
			if statuses(res) != "delivered" {
				t.Fatalf("status = %s: %v", statuses(res), res[0].Err)
			}
			if len(ss) != 2 || len(ss[0].Auths) != 1 || ss[0].MailIssued() || len(ss[1].Auths) != 0 || len(ss[1].Mails) != 1 {
				t.Errorf("sessions = %+v, want a failed AUTH, then a new session with MAIL and no AUTH", ss)
			}
			if st := h.d.Stats(); st.AuthFallbacks != 1 {
				t.Errorf("fallbacks = %d", st.AuthFallbacks)
			}
		})
	}
}

func TestConnectionLostAtRcpt(t *testing.T) {
	// The relay hangs up at the second RCPT: the first recipient, already
	// accepted, got no DATA and must not be reported delivered.
	u := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{
		{Command: "RCPT", Contains: "reject", Reply: upstream.ErrRejectRcpt},
		{Command: "RCPT", Contains: "hangup", Drop: true},
	}}})
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
	res := h.d.Deliver(context.Background(), message("reject@example.net", "ok@example.net", "hangup@example.net", "later@example.net"))
	if got := statuses(res); got != "permanent,temporary,temporary,temporary" {
		t.Fatalf("statuses = %s", got)
	}
	if u.Count() != 0 {
		t.Errorf("count = %d", u.Count())
	}
}
