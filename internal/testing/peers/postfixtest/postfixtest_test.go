package postfixtest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

const (
	upUser = "bench@upstream.test"
	upPass = "upstream-Pa55-not-in-logs"
)

// need fails the test (it does not skip) when Postfix cannot run here.
func need(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatal(err)
	}
}

func message(id string) string {
	return "From: app@client.test\r\nTo: user@example.net\r\nSubject: postfixtest\r\nMessage-ID: " + id + "\r\n\r\nHello.\r\n"
}

// submit sends one message to addr over plain SMTP.
func submit(addr, id string) error {
	return rig.Send(addr, "client.test", "app@client.test", []string{"user@example.net"}, message(id))
}

// TestClientRelaysAndStopsClean: two instances run at once, each relays
// what it accepts to its relayhost, and Stop leaves no process and no
// directory behind.
func TestClientRelaysAndStopsClean(t *testing.T) {
	need(t)
	up := testlib.StartUpstream(t, upstream.Config{TLS: upstream.NoTLS})
	a := StartT(t, Config{Relayhost: up.Addr()})
	b := StartT(t, Config{Relayhost: up.Addr()})
	if a.Addr() == b.Addr() || a.Dir() == b.Dir() {
		t.Fatalf("two instances share %s / %s", a.Addr(), a.Dir())
	}
	if err := submit(a.Addr(), "<a@postfixtest>"); err != nil {
		t.Fatalf("submit to instance a: %v", err)
	}
	if err := submit(b.Addr(), "<b@postfixtest>"); err != nil {
		t.Fatalf("submit to instance b: %v", err)
	}
	if err := up.WaitMessages(2, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, m := range up.Messages() {
		got[m.MessageID] = true
	}
	if !got["<a@postfixtest>"] || !got["<b@postfixtest>"] {
		t.Fatalf("upstream got %v, want both messages", got)
	}
	if _, err := a.WaitLog("status=sent", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	pids := a.PIDs()
	if len(pids) < 2 {
		t.Fatalf("instance a has processes %v, want master and children", pids)
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	// Independently of PIDs: each process seen before is gone (or a
	// zombie, or its PID reused outside the instance's session).
	for _, pid := range pids {
		if st, ok := readStat(pid); ok && st.state != "Z" && st.session == a.master {
			t.Errorf("process %d of the stopped instance still runs", pid)
		}
	}
	if _, err := os.Stat(a.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("instance directory %s still there after Stop: %v", a.Dir(), err)
	}
	// b is untouched by a's stop.
	if err := submit(b.Addr(), "<b2@postfixtest>"); err != nil {
		t.Fatalf("instance b after a stopped: %v", err)
	}
	if err := up.WaitMessages(3, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestSASLRelayHost: with SASL users, smtpd offers AUTH only after
// STARTTLS, accepts the right password (logging sasl_username), refuses a
// wrong one, and refuses to relay for a client that did not authenticate.
func TestSASLRelayHost(t *testing.T) {
	need(t)
	ca, err := upstream.NewCA("postfixtest CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue()
	if err != nil {
		t.Fatal(err)
	}
	up := testlib.StartUpstream(t, upstream.Config{TLS: upstream.NoTLS})
	p := StartT(t, Config{Relayhost: up.Addr(), TLSCert: &cert,
		SASLUsers: map[string]string{"relay@example.test": "Sasl-Pa55"}})
	tlsConf := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}

	dial := func(t *testing.T, starttls bool) *smtp.Client {
		t.Helper()
		var c *smtp.Client
		var err error
		if starttls {
			c, err = smtp.DialStartTLS(p.Addr(), tlsConf)
		} else {
			c, err = smtp.Dial(p.Addr())
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Hello("client.test"); err != nil {
			t.Fatal(err)
		}
		return c
	}

	t.Run("no AUTH before STARTTLS", func(t *testing.T) {
		c := dial(t, false)
		if ok, _ := c.Extension("AUTH"); ok {
			t.Fatal("AUTH offered on a plaintext connection")
		}
	})
	t.Run("unauthenticated relay refused", func(t *testing.T) {
		c := dial(t, true)
		if err := c.Mail("app@client.test", nil); err != nil {
			t.Fatal(err)
		}
		err := c.Rcpt("user@example.net", nil)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 554 || !strings.Contains(se.Message, "Access denied") {
			t.Fatalf("RCPT without AUTH: %v, want 554 Access denied", err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		c := dial(t, true)
		err := c.Auth(sasl.NewPlainClient("", "relay@example.test", "wrong"))
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 535 {
			t.Fatalf("AUTH with a wrong password: %v, want 535", err)
		}
	})
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		t.Run("relays after AUTH "+mech, func(t *testing.T) {
			before := up.Count()
			c := dial(t, true)
			var cl sasl.Client
			if mech == "PLAIN" {
				cl = sasl.NewPlainClient("", "relay@example.test", "Sasl-Pa55")
			} else {
				cl = sasl.NewLoginClient("relay@example.test", "Sasl-Pa55")
			}
			if err := c.Auth(cl); err != nil {
				t.Fatalf("AUTH %s: %v", mech, err)
			}
			id := "<" + mech + "@postfixtest>"
			if err := c.SendMail("app@client.test", []string{"user@example.net"}, strings.NewReader(message(id))); err != nil {
				t.Fatal(err)
			}
			c.Quit()
			if err := up.WaitMessages(before+1, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			if _, err := p.WaitLog("sasl_method="+mech+", sasl_username=relay@example.test", 10*time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
	var methods []string
	for _, l := range p.SASLLogins() {
		if l.Username != "relay@example.test" || l.Client != "localhost[127.0.0.1]" || l.QueueID == "" {
			t.Errorf("logged login %+v, want relay@example.test from localhost[127.0.0.1] with a queue ID", l)
		}
		methods = append(methods, l.Method)
	}
	if strings.Join(methods, " ") != "PLAIN LOGIN" {
		t.Errorf("SASLLogins has methods %v, want PLAIN then LOGIN", methods)
	}
	if strings.Contains(p.Log(), "Sasl-Pa55") {
		t.Fatal("the SASL password is in Postfix's log")
	}
}

// TestClientCertificate: with ClientCAPEM, smtpd relays for a client whose
// certificate that CA signed, without AUTH, and for no other client (no
// certificate, one from another CA, no TLS), and says which it saw.
func TestClientCertificate(t *testing.T) {
	need(t)
	serverCA, err := upstream.NewCA("postfixtest CA")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := serverCA.Issue()
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := upstream.NewCA("postfixtest client CA")
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := upstream.NewCA("postfixtest other CA")
	if err != nil {
		t.Fatal(err)
	}
	good, err := clientCA.IssueClient("relay1.sealrelay.test")
	if err != nil {
		t.Fatal(err)
	}
	bad, err := otherCA.IssueClient("relay1.sealrelay.test")
	if err != nil {
		t.Fatal(err)
	}
	up := testlib.StartUpstream(t, upstream.Config{TLS: upstream.NoTLS})
	p := StartT(t, Config{Relayhost: up.Addr(), TLSCert: &serverCert, ClientCAPEM: clientCA.PEM()})

	// send submits one message, with STARTTLS and cert (if not nil), or
	// without TLS; the client presents cert whatever CAs smtpd names.
	send := func(id string, starttls bool, cert *tls.Certificate) error {
		conf := &tls.Config{RootCAs: serverCA.Pool(), ServerName: "localhost",
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if cert == nil {
					return &tls.Certificate{}, nil
				}
				return cert, nil
			}}
		var c *smtp.Client
		var err error
		if starttls {
			c, err = smtp.DialStartTLS(p.Addr(), conf)
		} else {
			c, err = smtp.Dial(p.Addr())
		}
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Hello("client.test"); err != nil {
			return err
		}
		return c.SendMail("app@client.test", []string{"user@example.net"}, strings.NewReader(message(id)))
	}
	for _, tc := range []struct {
		name     string
		starttls bool
		cert     *tls.Certificate
		log      string
	}{
		{"no certificate", true, nil, "Anonymous TLS connection established"},
		{"a certificate from another CA", true, &bad, "Untrusted TLS connection established"},
		{"no TLS", false, nil, ""},
	} {
		err := send("<refused@postfixtest>", tc.starttls, tc.cert)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 554 || !strings.Contains(se.Message, "Access denied") {
			t.Errorf("relay with %s: %v, want 554 Access denied", tc.name, err)
		}
		if tc.log != "" {
			if _, err := p.WaitLog(tc.log, 10*time.Second); err != nil {
				t.Error(err)
			}
		}
	}
	if err := send("<cert@postfixtest>", true, &good); err != nil {
		t.Fatalf("relay with the right certificate: %v", err)
	}
	if err := up.WaitMessages(1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range up.Messages() {
		ids = append(ids, m.MessageID)
	}
	if len(ids) != 1 || ids[0] != "<cert@postfixtest>" {
		t.Fatalf("upstream got %v, want only the message sent with the right certificate", ids)
	}
	if _, err := p.WaitLog("Trusted TLS connection established", 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestTunedSmarthost: the benchmark's contender authenticates to a
// STARTTLS+AUTH PLAIN upstream over TLS and reuses its connections.
func TestTunedSmarthost(t *testing.T) {
	need(t)
	up := testlib.StartUpstream(t, upstream.Config{Accounts: map[string]string{upUser: upPass},
		Behavior: upstream.Behavior{RequireAuth: true}})
	p := StartT(t, Config{Relayhost: up.Addr(), RelayCAPEM: up.CAPEM(),
		RelayUser: upUser, RelayPassword: upPass, Tuned: true})
	const n = 10
	for i := range n {
		if err := submit(p.Addr(), fmt.Sprintf("<%d@tuned>", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := up.WaitMessages(n, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, m := range up.Messages() {
		if !m.TLS || m.Username != upUser {
			t.Fatalf("message %s came with TLS=%v user=%q, want TLS and %s", m.MessageID, m.TLS, m.Username, upUser)
		}
	}
	for _, s := range up.Sessions() {
		if s.UnauthenticatedMail() {
			t.Fatalf("session %d sent MAIL before AUTH", s.ID)
		}
	}
	// Whether Postfix reuses a connection depends on its queue at that
	// moment (it caches on demand, when mail backs up), so the count is
	// reported, not asserted; the settings that allow reuse are asserted.
	t.Logf("%d upstream sessions for %d messages", len(up.Sessions()), n)
	for param, want := range map[string]string{
		"smtp_tls_connection_reuse":       "yes",
		"smtp_connection_cache_on_demand": "yes",
		"smtp_tls_security_level":         "encrypt",
		"smtp_sasl_auth_enable":           "yes",
	} {
		out, err := exec.Command("/usr/sbin/postconf", "-c", p.ConfigDir(), "-h", param).Output()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("postconf %s = %q, %v; want %s", param, strings.TrimSpace(string(out)), err, want)
		}
	}
	master, err := os.ReadFile(p.ConfigDir() + "/master.cf")
	if err != nil || !regexp.MustCompile(`(?m)^tlsproxy\s+unix\s`).Match(master) {
		t.Errorf("master.cf has no tlsproxy service (needed for smtp_tls_connection_reuse): %v", err)
	}
	info, err := os.Stat(p.ConfigDir() + "/sasl_passwd")
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("password map mode %v, want 0600", info.Mode().Perm())
	}
	if strings.Contains(p.Log(), upPass) {
		t.Fatal("the relay password is in Postfix's log")
	}
}

// TestConfigErrors: what Start refuses, with a message naming the field.
func TestConfigErrors(t *testing.T) {
	need(t)
	cert := &tls.Certificate{}
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "Relayhost is required"},
		{Config{Relayhost: "127.0.0.1"}, `relayhost "127.0.0.1"`},
		{Config{Relayhost: "127.0.0.1:25", SASLUsers: map[string]string{"a@b": "c"}}, "SASLUsers needs a TLSCert"},
		{Config{Relayhost: "127.0.0.1:25", RelayUser: "u"}, "RelayUser and RelayPassword go together"},
		{Config{Relayhost: "127.0.0.1:25", TLSCert: cert, SASLUsers: map[string]string{"nodomain": "c"}}, `SASL user "nodomain" is not user@domain`},
		{Config{Relayhost: "127.0.0.1:25", DovecotSASL: "/run/auth"}, "DovecotSASL needs a TLSCert"},
		{Config{Relayhost: "127.0.0.1:25", TLSCert: cert, DovecotSASL: "run/auth"}, `DovecotSASL "run/auth" is not an absolute path`},
		{Config{Relayhost: "127.0.0.1:25", TLSCert: cert, DovecotSASL: "/run/auth", SASLUsers: map[string]string{"a@b": "c"}}, "SASLUsers and DovecotSASL exclude each other"},
		{Config{Relayhost: "127.0.0.1:25", ClientCAPEM: []byte("x")}, "ClientCAPEM needs a TLSCert"},
	}
	for _, tc := range cases {
		_, err := Start(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}

// TestAvailableSaysHowToInstall: on a machine without Postfix, or not as
// root, the error says what is missing and that make test installs it.
func TestAvailableSaysHowToInstall(t *testing.T) {
	err := available([]string{"/nonexistent/sbin/postfix"}, 0)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/sbin/postfix not found") ||
		!strings.Contains(err.Error(), "make test installs Postfix") || !strings.Contains(err.Error(), "tools/deps.sh") {
		t.Fatalf("available without postfix: %v", err)
	}
	need(t) // the rest needs the postfix user
	err = available(nil, 1000)
	if err == nil || !strings.Contains(err.Error(), "must be started as root (uid is 1000)") {
		t.Fatalf("available as uid 1000: %v", err)
	}
}
