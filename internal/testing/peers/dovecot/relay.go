package dovecot

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/testing/peers/postfixtest"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// Relay is a relay host a test's SMTP client submits to: Postfix offering
// STARTTLS, then AUTH checked by Dovecot, relaying only for clients that
// authenticated (or, with postfixtest.Config.ClientCAPEM, that showed a
// client certificate) to Upstream.
type Relay struct {
	Dovecot *Server
	Postfix *postfixtest.Instance
	// Upstream receives what Postfix relays, unless the
	// postfixtest.Config given to StartRelay named a Relayhost.
	Upstream *upstream.Server
	// CA signed Postfix's certificate, unless the postfixtest.Config gave
	// one.
	CA *upstream.CA
}

// Dial connects to the relay, says EHLO, does STARTTLS, and returns the
// client (closed when the test ends) and the mechanisms AUTH offers.
func (r *Relay) Dial(t testing.TB) (*smtp.Client, []string) {
	t.Helper()
	c, err := smtp.DialStartTLS(r.Addr(), r.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	ok, mechs := c.Extension("AUTH")
	if !ok {
		t.Fatal("no AUTH offered after STARTTLS")
	}
	return c, strings.Fields(mechs)
}

// Logins counts the sessions Postfix logged as authenticated with mech as
// user (Dovecot lower-cases the name).
func (r *Relay) Logins(mech, user string) int {
	n := 0
	for _, l := range r.Postfix.SASLLogins() {
		if l.Method == mech && l.Username == strings.ToLower(user) {
			n++
		}
	}
	return n
}

// StartOAuth2Relay is StartRelay with an oauth2 passdb that accepts the
// tokens introspectionURL says are active and carry the scope smtp, as
// the OAuth2 tests use it; it fails the test if Dovecot or Postfix cannot
// run here.
func StartOAuth2Relay(t testing.TB, introspectionURL string) *Relay {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	return StartRelay(t, Config{OAuth2: &OAuth2{IntrospectionURL: introspectionURL, Scope: "smtp"}}, postfixtest.Config{})
}

// Addr is Postfix's smtpd, host:port on 127.0.0.1.
func (r *Relay) Addr() string { return r.Postfix.Addr() }

// TLSConfig is what a client needs to verify Postfix's certificate
// (when StartRelay made it).
func (r *Relay) TLSConfig() *tls.Config {
	if r.CA == nil {
		return nil
	}
	return &tls.Config{RootCAs: r.CA.Pool(), ServerName: "localhost"}
}

// StartRelay starts Dovecot with cfg, then Postfix with pf using it
// (pf.DovecotSASL), with a certificate for localhost and 127.0.0.1 from a
// fresh CA if pf.TLSCert is nil, and an upstream (no TLS, no AUTH) as the
// relayhost if pf.Relayhost is empty. Everything stops when the test
// ends; a test that failed gets Postfix's log.
func StartRelay(t testing.TB, cfg Config, pf postfixtest.Config) *Relay {
	t.Helper()
	if err := postfixtest.Available(); err != nil {
		t.Fatal(err)
	}
	r := &Relay{Dovecot: Start(t, cfg)}
	if pf.TLSCert == nil {
		ca, err := upstream.NewCA("dovecot relay test CA")
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Issue()
		if err != nil {
			t.Fatal(err)
		}
		r.CA, pf.TLSCert = ca, &cert
	}
	if pf.Relayhost == "" {
		up, err := upstream.Start(upstream.Config{TLS: upstream.NoTLS})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { up.Close() })
		r.Upstream, pf.Relayhost = up, up.Addr()
	}
	pf.DovecotSASL = r.Dovecot.SocketPath()
	p, err := postfixtest.Start(pf)
	if err != nil {
		t.Fatal(err)
	}
	r.Postfix = p
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfix log %s:\n%s", p.LogFile(), p.Log())
		}
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return r
}
