package deliver

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/testpki"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/secrets"
)

// certEntry returns a certificate entry named name holding leaf (signed
// by ca) and its key, as a source would hand it over.
func certEntry(t testing.TB, name string, leaf, ca testpki.Cert) secrets.Credential {
	t.Helper()
	c, err := secrets.ParseEntry(name, map[string]any{"kind": "certificate", "certificate": leaf.CertPEM(ca), "private_key": leaf.KeyPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// certRelay returns a relay to u that shows the client certificate entry
// "corp-cert", authenticates with EXTERNAL when external is set, and
// else does not authenticate.
func certRelay(u *upstream.Server, external bool) Relay {
	r := relayTo(u, "")
	r.Credential, r.ClientCertificate = "", "corp-cert"
	if external {
		r.Mechanisms = []string{"EXTERNAL"}
	}
	return r
}

// TestClientCertificateExternal: a relay that asks for the client
// certificate gets it from the store at the handshake, and AUTH EXTERNAL
// logs in as its subject; check reports both.
func TestClientCertificateExternal(t *testing.T) {
	ca := testpki.CA(t, "client CA")
	leaf := testpki.Leaf(t, ca, testpki.Options{CommonName: "relay1.sealrelay.test"})
	u := startUpstream(t, upstream.Config{ClientCAs: ca.Pool(), Behavior: upstream.Behavior{RequireAuth: true}})
	creds := newCreds(testPass)
	creds.setNamed("corp-cert", certEntry(t, "corp-cert", leaf, ca))
	h := newDeliverer(t, creds, certRelay(u, true))

	res := h.d.Deliver(context.Background(), message("a@example.net"))
	if statuses(res) != "delivered" {
		t.Fatalf("results %+v", res)
	}
	ss := u.Sessions()
	if len(ss) != 1 || ss[0].ClientCert != "relay1.sealrelay.test" || len(ss[0].Auths) != 1 ||
		ss[0].Auths[0].Mechanism != "EXTERNAL" || !ss[0].Auths[0].OK || u.Messages()[0].Username != "relay1.sealrelay.test" {
		t.Fatalf("sessions %+v, want one with the certificate and AUTH EXTERNAL as its name", ss)
	}
	cr := h.d.Check(context.Background())[0]
	if !cr.OK || cr.Mechanism != "EXTERNAL" || !strings.Contains(cr.Username, "CN=relay1.sealrelay.test") ||
		!strings.Contains(cr.String(), "client certificate CN=relay1.sealrelay.test") {
		t.Errorf("check: %+v\n%s", cr, cr)
	}
}

// TestClientCertificateRotated: a certificate rotated in the store is
// shown from the next connection on, and the pooled connection made with
// the old one is closed rather than reused.
func TestClientCertificateRotated(t *testing.T) {
	oldCA, newCA := testpki.CA(t, "old client CA"), testpki.CA(t, "new client CA")
	both := oldCA.Pool()
	both.AddCert(newCA.Cert)
	u := startUpstream(t, upstream.Config{ClientCAs: both})
	creds := newCreds(testPass)
	creds.setNamed("corp-cert", certEntry(t, "corp-cert", testpki.Leaf(t, oldCA, testpki.Options{CommonName: "old"}), oldCA))
	h := newDeliverer(t, creds, certRelay(u, false))

	for _, want := range []string{"old", "old", "new", "new"} {
		if want == "new" && h.d.Stats().StaleClosed == 0 {
			creds.setNamed("corp-cert", certEntry(t, "corp-cert", testpki.Leaf(t, newCA, testpki.Options{CommonName: "new"}), newCA))
		}
		if res := h.d.Deliver(context.Background(), message("a@example.net")); statuses(res) != "delivered" {
			t.Fatalf("results %+v", res)
		}
		msgs := u.Messages()
		s := u.Sessions()[msgs[len(msgs)-1].Session-1]
		if s.ClientCert != want {
			t.Errorf("message %d went on a session with certificate %q, want %q", len(msgs), s.ClientCert, want)
		}
	}
	st := h.d.Stats()
	if st.ConnectionsOpened != 2 || st.ConnectionsReused != 2 || st.StaleClosed != 1 {
		t.Errorf("stats %+v: want 2 opened, 2 reused, 1 closed as stale", st)
	}
}

// TestClientCertificateUnavailable: a certificate the store cannot hand
// over, or an entry of another kind, fails the handshake: deferred, with
// the reason, never a connection without it.
func TestClientCertificateUnavailable(t *testing.T) {
	ca := testpki.CA(t, "client CA")
	u := startUpstream(t, upstream.Config{ClientCAs: ca.Pool()})
	for _, tc := range []struct {
		name   string
		entry  secrets.Credential
		want   string
		reason string
	}{
		{"unavailable", secrets.Credential{}, `TLS: handshake failed: client certificate "corp-cert" not shown: credential "corp-cert" unavailable`, ReasonCredentials},
		{"a password entry", secrets.NewCredential("corp-cert", "u", "p", "1"), `client certificate "corp-cert" not shown: credential "corp-cert" is of kind password, not certificate`, ReasonTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			creds := newCreds(testPass)
			creds.setNamed("corp-cert", tc.entry)
			h := newDeliverer(t, creds, certRelay(u, false))
			res := h.d.Deliver(context.Background(), message("a@example.net"))
			if res[0].Status != spool.Temporary || res[0].Err == nil || !strings.Contains(res[0].Err.Error(), tc.want) || res[0].Reason != tc.reason {
				t.Errorf("result %+v (%v), want Temporary with %q, reason %s", res[0], res[0].Err, tc.want, tc.reason)
			}
			if cr := h.d.Check(context.Background())[0]; cr.OK || !strings.Contains(cr.String(), tc.want) {
				t.Errorf("check: %s", cr)
			}
		})
	}
	if n := u.Count(); n != 0 {
		t.Errorf("the relay got %d messages", n)
	}
}

// TestClientRefusedDefers: on a relay whose standing is the client
// certificate, 5.7.1 (Postfix's "Access denied") or 5.7.64 (Microsoft
// 365's "Relay Access Denied") to RCPT or MAIL refuses the client, not
// the message: deferred with reason auth, and check fails naming the
// certificate. Without a client certificate, or after AUTH, the same
// reply fails the recipient as before.
func TestClientRefusedDefers(t *testing.T) {
	ca := testpki.CA(t, "client CA")
	leaf := testpki.Leaf(t, ca, testpki.Options{CommonName: "relay1"})
	accessDenied := &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<a@example.net>: Recipient address rejected: Access denied"}
	tenant := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 64}, Message: "TenantAttribution; Relay Access Denied"}
	for _, tc := range []struct {
		name  string
		rule  upstream.Rule
		relay func(u *upstream.Server) Relay
		want  spool.Status
	}{
		{"RCPT 5.7.1, certificate only", upstream.Rule{Command: "RCPT", Reply: accessDenied}, func(u *upstream.Server) Relay { return certRelay(u, false) }, spool.Temporary},
		{"MAIL 5.7.64, certificate only", upstream.Rule{Command: "MAIL", Reply: tenant}, func(u *upstream.Server) Relay { return certRelay(u, false) }, spool.Temporary},
		{"RCPT 5.7.1, no certificate", upstream.Rule{Command: "RCPT", Reply: accessDenied}, func(u *upstream.Server) Relay { return relayTo(u, AuthDisabled) }, spool.Permanent},
		{"RCPT 5.7.1, certificate and AUTH", upstream.Rule{Command: "RCPT", Reply: accessDenied}, func(u *upstream.Server) Relay {
			r := relayTo(u, AuthRequired)
			r.ClientCertificate = "corp-cert"
			return r
		}, spool.Permanent},
		{"RCPT 5.1.1, certificate only", upstream.Rule{Command: "RCPT", Reply: upstream.ErrRejectRcpt}, func(u *upstream.Server) Relay { return certRelay(u, false) }, spool.Permanent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := startUpstream(t, upstream.Config{ClientCAs: ca.Pool(), Behavior: upstream.Behavior{Rules: []upstream.Rule{tc.rule}}})
			creds := newCreds(testPass)
			creds.setNamed("corp-cert", certEntry(t, "corp-cert", leaf, ca))
			h := newDeliverer(t, creds, tc.relay(u))
			res := h.d.Deliver(context.Background(), message("a@example.net"))[0]
			if res.Status != tc.want {
				t.Fatalf("result %+v (%v), want %s", res, res.Err, tc.want)
			}
			var cr *ClientRefusedError
			if refused := errors.As(res.Err, &cr); refused != (tc.want == spool.Temporary) {
				t.Errorf("error %v: ClientRefusedError %v", res.Err, refused)
			}
			if tc.want != spool.Temporary {
				return
			}
			if res.Reason != ReasonAuth || !strings.Contains(res.Err.Error(), `does it trust the client certificate "corp-cert"?`) {
				t.Errorf("result %+v: %v", res, res.Err)
			}
			check := h.d.Check(context.Background())[0]
			if check.OK || !strings.Contains(check.String(), "FAILED: relaying: ") || !strings.Contains(check.String(), `client certificate "corp-cert"`) {
				t.Errorf("check: %s", check)
			}
		})
	}
}

// TestCheckRelayingPasses: check asks a certificate-only relay whether it
// would relay, sends no mail, and a refusal that is not about this
// client (a relay verifying recipients) does not fail it.
func TestCheckRelayingPasses(t *testing.T) {
	ca := testpki.CA(t, "client CA")
	for _, rules := range [][]upstream.Rule{nil, {{Command: "RCPT", Reply: upstream.ErrRejectRcpt}}} {
		u := startUpstream(t, upstream.Config{ClientCAs: ca.Pool(), Behavior: upstream.Behavior{Rules: rules}})
		creds := newCreds(testPass)
		creds.setNamed("corp-cert", certEntry(t, "corp-cert", testpki.Leaf(t, ca, testpki.Options{CommonName: "relay1"}), ca))
		h := newDeliverer(t, creds, certRelay(u, false))
		cr := h.d.Check(context.Background())[0]
		if !cr.OK || cr.Certificate != "CN=relay1,O=sealrelay test only" {
			t.Errorf("check with rules %v: %s", rules, cr)
		}
		s := waitSessionsEnded(t, u, 1)[0]
		if len(s.Mails) != 1 || s.Mails[0].From != "" || u.Count() != 0 || s.ClientCert != "relay1" || s.Dropped {
			t.Errorf("session %+v, want MAIL FROM:<> and no message", s)
		}
	}
}

// TestClientCertificateRefusedInHandshake: a relay that refuses the
// certificate with a TLS alert (here after a TLS 1.3 handshake, at the
// first read) defers, and the error names the certificate.
func TestClientCertificateRefusedInHandshake(t *testing.T) {
	ca, other := testpki.CA(t, "client CA"), testpki.CA(t, "another CA")
	u := startUpstream(t, upstream.Config{ClientCAs: ca.Pool()})
	creds := newCreds(testPass)
	creds.setNamed("corp-cert", certEntry(t, "corp-cert", testpki.Leaf(t, other, testpki.Options{CommonName: "relay1"}), other))
	h := newDeliverer(t, creds, certRelay(u, false))
	res := h.d.Deliver(context.Background(), message("a@example.net"))[0]
	want := `EHLO: remote error: tls: unknown certificate authority (the relay refused the client certificate "corp-cert", CN=relay1,O=sealrelay test only)`
	if res.Status != spool.Temporary || !strings.Contains(res.Err.Error(), want) || res.Reason != ReasonTLS {
		t.Errorf("result %+v: %v\nwant Temporary, reason tls, with %q", res, res.Err, want)
	}
	if u.Count() != 0 {
		t.Error("the relay took a message")
	}
}
