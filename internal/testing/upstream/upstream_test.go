package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

const (
	testUser = "relay@example.com"
	testPass = "correct horse battery staple"
)

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Accounts == nil {
		cfg.Accounts = map[string]string{testUser: testPass}
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dialTLS(t *testing.T, s *Server) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(s.Addr(), s.ClientTLSConfig())
	if err != nil {
		t.Fatalf("STARTTLS to upstream: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func msg(id string) string {
	return "Message-ID: <" + id + ">\r\nSubject: test\r\n\r\nhello\r\n"
}

func send(c *smtp.Client, from string, to []string, body string) error {
	return c.SendMail(from, to, strings.NewReader(body))
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestStartTLSAuthPlainAndLogin(t *testing.T) {
	for _, mech := range []string{sasl.Plain, sasl.Login} {
		t.Run(mech, func(t *testing.T) {
			s := start(t, Config{})
			c := dialTLS(t, s)
			if ok, params := c.Extension("AUTH"); !ok || params != "PLAIN LOGIN" {
				t.Fatalf("AUTH after STARTTLS: offered=%v %q, want PLAIN LOGIN", ok, params)
			}
			var a sasl.Client
			if mech == sasl.Plain {
				a = sasl.NewPlainClient("", testUser, testPass)
			} else {
				a = sasl.NewLoginClient(testUser, testPass)
			}
			if err := c.Auth(a); err != nil {
				t.Fatalf("AUTH %s: %v", mech, err)
			}
			if err := send(c, "a@example.com", []string{"b@example.net"}, msg("one@test")); err != nil {
				t.Fatalf("send: %v", err)
			}
			if err := c.Quit(); err != nil {
				t.Fatal(err)
			}
			if err := s.WaitMessages(1, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			m := s.Messages()[0]
			if m.Username != testUser || !m.TLS || m.From != "a@example.com" || m.To[0] != "b@example.net" ||
				m.MessageID != "<one@test>" || string(m.Data) != msg("one@test") || m.Size != int64(len(msg("one@test"))) {
				t.Errorf("message = %+v", m)
			}
			sess := s.Sessions()
			if len(sess) != 1 {
				t.Fatalf("sessions = %d, want 1", len(sess))
			}
			got := sess[0]
			if !got.TLS || len(got.Auths) != 1 || got.Auths[0] != (AuthAttempt{Mechanism: mech, Username: testUser, TLS: true, OK: true, Code: 235}) {
				t.Errorf("session = %+v", got)
			}
			if len(got.Mails) != 1 || !got.Mails[0].Authenticated || got.Mails[0].Username != testUser || got.UnauthenticatedMail() {
				t.Errorf("mails = %+v", got.Mails)
			}
			if got.Messages != 1 || got.Helo != "localhost" {
				t.Errorf("messages=%d helo=%q", got.Messages, got.Helo)
			}
		})
	}
}

func TestWrongPassword535AndPasswordChange(t *testing.T) {
	s := start(t, Config{})
	c := dialTLS(t, s)
	err := c.Auth(sasl.NewPlainClient("", testUser, "wrong"))
	if smtpCode(err) != 535 {
		t.Fatalf("AUTH with wrong password: %v, want 535", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("reply quotes the password: %v", err)
	}
	s.SetPassword(testUser, "rotated")
	if err := c.Auth(sasl.NewLoginClient(testUser, testPass)); smtpCode(err) != 535 {
		t.Fatalf("AUTH with the old password after rotation: %v, want 535", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", testUser, "rotated")); err != nil {
		t.Fatalf("AUTH with the new password: %v", err)
	}
	c.Quit()
	auths := waitClosed(t, s, 1)[0].Auths
	if len(auths) != 3 || auths[0].OK || auths[0].Code != 535 || auths[1].OK || !auths[2].OK {
		t.Errorf("auths = %+v", auths)
	}
	for _, a := range auths {
		if a.Username != testUser {
			t.Errorf("recorded username %q", a.Username)
		}
	}
}

// waitClosed waits until n sessions exist and all have ended, and
// returns them.
func waitClosed(t *testing.T, s *Server, n int) []Session {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ss := s.Sessions()
		done := len(ss) >= n
		for _, x := range ss {
			done = done && !x.End.IsZero()
		}
		if done {
			return ss
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions did not end: %+v", ss)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNoAuthBeforeTLS(t *testing.T) {
	s := start(t, Config{})
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered before TLS")
	}
	err = c.Auth(sasl.NewPlainClient("", testUser, testPass))
	if smtpCode(err) != 538 {
		t.Fatalf("AUTH in the clear: %v, want 538", err)
	}
	c.Quit()
	got := waitClosed(t, s, 1)[0]
	if got.TLS || len(got.Auths) != 1 || got.Auths[0].TLS || got.Auths[0].OK || got.Auths[0].Code != 538 {
		t.Errorf("session = %+v", got)
	}
}

func TestAllowInsecureAuth(t *testing.T) {
	s := start(t, Config{TLS: NoTLS, AllowInsecureAuth: true})
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered with TLS = none")
	}
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); err != nil {
		t.Fatalf("AUTH in the clear with AllowInsecureAuth: %v", err)
	}
}

func TestImplicitTLS(t *testing.T) {
	s := start(t, Config{TLS: Implicit})
	c, err := smtp.DialTLS(s.Addr(), s.ClientTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered on an implicit TLS connection")
	}
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@example.com", []string{"b@example.net"}, msg("x@y")); err != nil {
		t.Fatal(err)
	}
	if m := s.Messages(); len(m) != 1 || !m[0].TLS || m[0].Username != testUser {
		t.Errorf("messages = %+v", m)
	}
}

func TestUntrustedCertificate(t *testing.T) {
	s := start(t, Config{UntrustedCert: true})
	c, err := smtp.DialStartTLS(s.Addr(), s.ClientTLSConfig())
	if err == nil {
		// The handshake happens with the first command after STARTTLS.
		err = c.Noop()
		c.Close()
	}
	var verr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	if !errors.As(err, &verr) || !errors.As(err, &uerr) {
		t.Fatalf("STARTTLS to an untrusted certificate: %v, want an unknown authority error", err)
	}
}

func TestWriteCA(t *testing.T) {
	s := start(t, Config{})
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := s.WriteCA(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("CA file holds no certificate")
	}
	c, err := smtp.DialStartTLS(s.Addr(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err == nil {
		err = c.Noop()
	}
	if err != nil {
		t.Fatalf("STARTTLS trusting the written CA: %v", err)
	}
	c.Close()
	if err := s.WriteCA(filepath.Join(t.TempDir(), "missing", "ca.pem")); err == nil || !strings.Contains(err.Error(), "write upstream CA certificate") {
		t.Errorf("WriteCA to a missing directory: %v", err)
	}
}

func TestRestartWithSameCAAndAddr(t *testing.T) {
	s1 := start(t, Config{})
	addr, ca := s1.Addr(), s1.CA()
	s1.Close()
	s2 := start(t, Config{Addr: addr, CA: ca})
	if s2.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", s2.Addr(), addr)
	}
	c, err := smtp.DialStartTLS(addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err == nil {
		err = c.Noop()
	}
	if err != nil {
		t.Fatalf("the old CA does not verify the restarted upstream: %v", err)
	}
	c.Close()
}

func TestRequireAuthAndNoAuth(t *testing.T) {
	s := start(t, Config{Behavior: Behavior{RequireAuth: true}})
	c := dialTLS(t, s)
	if err := c.Mail("a@example.com", nil); smtpCode(err) != 530 {
		t.Fatalf("MAIL before AUTH: %v, want 530", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@example.com", nil); err != nil {
		t.Fatalf("MAIL after AUTH: %v", err)
	}
	c.Quit()
	got := waitClosed(t, s, 1)[0]
	if len(got.Mails) != 2 || got.Mails[0].Authenticated || got.Mails[0].Code != 530 || !got.Mails[1].Authenticated || !got.UnauthenticatedMail() {
		t.Errorf("mails = %+v", got.Mails)
	}

	s.Reset()
	s.UpdateBehavior(func(b *Behavior) { b.NoAuth = true })
	c = dialTLS(t, s)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered with NoAuth")
	}
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); smtpCode(err) != 502 {
		t.Fatalf("AUTH with NoAuth: %v, want 502", err)
	}
	c.Quit()
	if got := waitClosed(t, s, 1)[0]; len(got.Auths) != 1 || got.Auths[0].OK {
		t.Errorf("AUTH not recorded as refused: %+v", got.Auths)
	}
}

func TestForcedAuthReply(t *testing.T) {
	for _, reply := range []*smtp.SMTPError{smtp.ErrAuthFailed, ErrAuthTemporary} {
		t.Run(fmt.Sprint(reply.Code), func(t *testing.T) {
			s := start(t, Config{Behavior: Behavior{AuthReply: reply}})
			c := dialTLS(t, s)
			if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); smtpCode(err) != reply.Code {
				t.Fatalf("AUTH: %v, want %d", err, reply.Code)
			}
		})
	}
}

func TestGreetingReply(t *testing.T) {
	for _, mode := range []TLSMode{StartTLS, Implicit} {
		t.Run(string(mode), func(t *testing.T) {
			s := start(t, Config{TLS: mode, Behavior: Behavior{Greeting: ErrServiceNotAvailable}})
			var err error
			var c *smtp.Client
			if mode == Implicit {
				c, err = smtp.DialTLS(s.Addr(), s.ClientTLSConfig())
			} else {
				c, err = smtp.Dial(s.Addr())
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Hello("client.test"); smtpCode(err) != 421 {
				t.Fatalf("greeting: %v, want 421", err)
			}
			if got := waitClosed(t, s, 1)[0]; got.Greeting != 421 {
				t.Errorf("session = %+v", got)
			}
		})
	}
}

func TestRulesAndTempFail(t *testing.T) {
	s := start(t, Config{DiscardBodies: true, Behavior: Behavior{
		Rules: []Rule{
			{Command: "RCPT", Contains: "reject", Reply: ErrRejectRcpt},
			{Command: "MAIL", Contains: "spammer", Reply: &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "no"}},
			{Command: "DATA", Contains: "later", Reply: ErrTempFail},
		},
		TempFailAfterData: 0.5,
	}})
	c := dialTLS(t, s)
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("spammer@example.com", nil); smtpCode(err) != 553 {
		t.Fatalf("MAIL rule: %v", err)
	}
	c.Reset()
	if err := c.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("reject-me@example.net", nil); smtpCode(err) != 550 {
		t.Fatalf("RCPT rule: %v, want 550", err)
	}
	c.Reset()
	// TempFailAfterData 0.5 fails every second transaction: 1st ok, 2nd 451...
	var codes []int
	for i := range 4 {
		codes = append(codes, smtpCode(send(c, "a@example.com", []string{"ok@example.net"}, msg(fmt.Sprint(i)))))
	}
	if fmt.Sprint(codes) != "[0 451 0 451]" {
		t.Errorf("DATA replies with TempFailAfterData 0.5: %v, want [0 451 0 451]", codes)
	}
	s.UpdateBehavior(func(b *Behavior) { b.TempFailAfterData = 0 })
	if err := send(c, "a@example.com", []string{"ok@example.net", "later@example.net"}, msg("x")); smtpCode(err) != 451 {
		t.Errorf("DATA rule: %v, want 451", err)
	}
	if s.Count() != 2 {
		t.Errorf("Count = %d, want 2", s.Count())
	}
	for _, m := range s.Messages() {
		if m.Data != nil || m.Size == 0 || m.MessageID == "" {
			t.Errorf("DiscardBodies message = %+v", m)
		}
	}
}

func TestDropRule(t *testing.T) {
	s := start(t, Config{Behavior: Behavior{Rules: []Rule{{Command: "RCPT", Contains: "hangup", Drop: true}}}})
	c := dialTLS(t, s)
	if err := c.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("ok@example.net", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("hangup@example.net", nil); err == nil || smtpCode(err) != 0 {
		t.Fatalf("RCPT on a Drop rule: %v, want a network error", err)
	}
	if got := waitClosed(t, s, 1)[0]; !got.Dropped {
		t.Errorf("session = %+v", got)
	}
}

func TestDropAfterData(t *testing.T) {
	s := start(t, Config{Behavior: Behavior{DropAfterData: 1}})
	c := dialTLS(t, s)
	err := send(c, "a@example.com", []string{"b@example.net"}, msg("d"))
	if err == nil || smtpCode(err) != 0 {
		t.Fatalf("DATA on a dropped connection: %v, want a network error", err)
	}
	got := waitClosed(t, s, 1)[0]
	if !got.Dropped || s.Count() != 0 {
		t.Errorf("session = %+v, count = %d", got, s.Count())
	}
}

func TestStallEndsAtClose(t *testing.T) {
	s := start(t, Config{Behavior: Behavior{Stall: 1, StallDuration: time.Hour}})
	c := dialTLS(t, s)
	errc := make(chan error, 1)
	go func() { errc <- send(c, "a@example.com", []string{"b@example.net"}, msg("s")) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Sessions()) == 0 || !s.Sessions()[0].Stalled {
		if time.Now().After(deadline) {
			t.Fatal("session never stalled")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Close()
	if err := <-errc; err == nil {
		t.Fatal("a stalled transaction succeeded")
	}
	if s.Count() != 0 {
		t.Errorf("Count = %d", s.Count())
	}
}

func TestMaxConcurrentAndWait(t *testing.T) {
	s := start(t, Config{CountOnly: true})
	const n = 4
	var wg sync.WaitGroup
	clients := make([]*smtp.Client, n)
	for i := range clients {
		clients[i] = dialTLS(t, s)
	}
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := send(c, "a@example.com", []string{"b@example.net"}, msg(fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		}()
	}
	if err := s.WaitMessages(n, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if got := s.MaxConcurrent(); got != n {
		t.Errorf("MaxConcurrent = %d, want %d", got, n)
	}
	if len(s.Messages()) != 0 {
		t.Error("CountOnly kept message records")
	}
	if err := s.WaitMessages(n+1, 50*time.Millisecond); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d of %d messages", n, n+1)) {
		t.Errorf("WaitMessages beyond the count: %v", err)
	}
	for _, c := range clients {
		c.Quit()
	}
	waitClosed(t, s, n)
	s.Reset()
	if s.Count() != 0 || len(s.Sessions()) != 0 || s.MaxConcurrent() != 0 {
		t.Errorf("after Reset: count %d sessions %d max %d", s.Count(), len(s.Sessions()), s.MaxConcurrent())
	}
}

func TestResetsCounted(t *testing.T) {
	s := start(t, Config{})
	c := dialTLS(t, s)
	for i := range 3 {
		if err := send(c, "a@example.com", []string{"b@example.net"}, msg(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if err := c.Reset(); err != nil {
			t.Fatal(err)
		}
	}
	c.Quit()
	got := waitClosed(t, s, 1)[0]
	// Each go-smtp Client.Reset is RSET followed by a fresh EHLO.
	if got.Messages != 3 || len(got.Mails) != 3 || got.Resets != 6 {
		t.Errorf("messages=%d mails=%d resets=%d, want 3 3 6", got.Messages, len(got.Mails), got.Resets)
	}
}

func TestBadTLSMode(t *testing.T) {
	_, err := Start(Config{TLS: "sometimes"})
	if err == nil || !strings.Contains(err.Error(), `unknown TLS mode "sometimes"`) {
		t.Fatalf("Start with a bad TLS mode: %v", err)
	}
}

func TestDropOnAuthFailure(t *testing.T) {
	s := start(t, Config{Behavior: Behavior{DropOnAuthFailure: true}})
	c := dialTLS(t, s)
	err := c.Auth(sasl.NewPlainClient("", testUser, "wrong"))
	if err == nil || smtpCode(err) != 0 {
		t.Fatalf("failed AUTH with DropOnAuthFailure: %v, want a network error", err)
	}
	got := waitClosed(t, s, 1)[0]
	if !got.Dropped || len(got.Auths) != 1 || got.Auths[0].OK {
		t.Errorf("session = %+v", got)
	}
}

func TestStallAtGreeting(t *testing.T) {
	s := start(t, Config{Behavior: Behavior{Stall: 1, StallDuration: time.Hour, StallAt: StallGreeting}})
	errc := make(chan error, 1)
	go func() {
		c, err := smtp.Dial(s.Addr())
		if err == nil {
			err = c.Hello("client.test")
			c.Close()
		}
		errc <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Sessions()) == 0 || !s.Sessions()[0].Stalled {
		if time.Now().After(deadline) {
			t.Fatal("session never stalled")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-errc:
		t.Fatalf("the client got past a stalled greeting: %v", err)
	default:
	}
	s.Close()
	if err := <-errc; err == nil {
		t.Fatal("greeting succeeded after Close")
	}
}
