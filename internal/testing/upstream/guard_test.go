package upstream

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// dialog talks to an upstream line by line.
type dialog struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, s *Server) *dialog {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	d := &dialog{t: t, c: c, br: bufio.NewReader(c)}
	d.reply() // greeting
	return d
}

// reply reads one (possibly multi-line) reply and returns its last line.
func (d *dialog) reply() string {
	d.t.Helper()
	for {
		l, err := d.br.ReadString('\n')
		if err != nil {
			d.t.Fatalf("reading reply: %v", err)
		}
		if len(l) < 4 || l[3] != '-' {
			return strings.TrimRight(l, "\r\n")
		}
	}
}

// cmd sends line and returns the last line of its reply.
func (d *dialog) cmd(line string) string {
	d.t.Helper()
	if _, err := fmt.Fprintf(d.c, "%s\r\n", line); err != nil {
		d.t.Fatal(err)
	}
	return d.reply()
}

func TestRejectRepeatedHelo(t *testing.T) {
	s := start(t, Config{TLS: NoTLS, Behavior: Behavior{RejectRepeatedHelo: true}})
	d := dial(t, s)
	if r := d.cmd("EHLO client.test"); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("first EHLO: %q", r)
	}
	if r := d.cmd("MAIL FROM:<a@example.com>"); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("MAIL: %q", r)
	}
	if r := d.cmd("RSET"); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("RSET: %q", r)
	}
	if r := d.cmd("EHLO client.test"); r != "503 5.5.1 Invalid command: Already identified" {
		t.Fatalf("second EHLO: %q", r)
	}
	if r := d.cmd("helo client.test"); !strings.HasPrefix(r, "503 5.5.1") {
		t.Fatalf("HELO after EHLO: %q", r)
	}
	// Message content that looks like commands is content.
	d.cmd("MAIL FROM:<a@example.com>")
	d.cmd("RCPT TO:<b@example.net>")
	if r := d.cmd("DATA"); !strings.HasPrefix(r, "354") {
		t.Fatalf("DATA: %q", r)
	}
	if r := d.cmd("Subject: x\r\n\r\nEHLO inside the body\r\nSTARTTLS\r\n."); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("end of data: %q", r)
	}
	d.cmd("QUIT")
	got := waitClosed(t, s, 1)[0]
	if got.Helos != 3 || got.Messages != 1 {
		t.Errorf("Helos = %d, Messages = %d, want 3 and 1", got.Helos, got.Messages)
	}
	if m := s.Messages(); len(m) != 1 || !strings.Contains(string(m[0].Data), "EHLO inside the body\r\nSTARTTLS\r\n") {
		t.Errorf("messages = %+v", m)
	}
}

func TestRejectRepeatedHeloNeedsPlaintext(t *testing.T) {
	_, err := Start(Config{Behavior: Behavior{RejectRepeatedHelo: true}})
	if err == nil || !strings.Contains(err.Error(), "RejectRepeatedHelo needs TLS = NoTLS") {
		t.Fatalf("Start: %v", err)
	}
}

// TestGoSMTPClientResetSaysEHLOAgain documents why a client must not rely
// on RSET to reuse a session with a strict relay: go-smtp's Client.Reset
// forgets its EHLO, so the next MAIL says EHLO again, and the relay
// refuses it.
func TestGoSMTPClientResetSaysEHLOAgain(t *testing.T) {
	s := start(t, Config{TLS: NoTLS, Behavior: Behavior{RejectRepeatedHelo: true}})
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@example.com", nil); smtpCode(err) != 503 {
		t.Fatalf("MAIL after Reset: %v, want the 503 of the second EHLO", err)
	}
}

func TestScriptedEHLOAndSTARTTLSReplies(t *testing.T) {
	refused := &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "go away"}
	t.Run("EHLO", func(t *testing.T) {
		for _, mode := range []TLSMode{NoTLS, StartTLS} {
			s := start(t, Config{TLS: mode, Behavior: Behavior{EHLOReply: refused}})
			d := dial(t, s)
			if r := d.cmd("EHLO client.test"); r != "554 5.7.0 go away" {
				t.Errorf("%s: EHLO: %q", mode, r)
			}
			if r := d.cmd("HELO client.test"); r != "554 5.7.0 go away" {
				t.Errorf("%s: HELO: %q", mode, r)
			}
		}
	})
	t.Run("STARTTLS", func(t *testing.T) {
		s := start(t, Config{Behavior: Behavior{STARTTLSReply: refused}})
		d := dial(t, s)
		if r := d.cmd("EHLO client.test"); !strings.HasPrefix(r, "250 ") {
			t.Fatalf("EHLO: %q", r)
		}
		if r := d.cmd("STARTTLS"); r != "554 5.7.0 go away" {
			t.Errorf("STARTTLS: %q", r)
		}
		if r := d.cmd("NOOP"); !strings.HasPrefix(r, "250 ") {
			t.Errorf("NOOP after a refused STARTTLS: %q", r)
		}
	})
	t.Run("STARTTLS accepted", func(t *testing.T) {
		// The connection is guarded (its behaviour scripted STARTTLS when
		// it came); the script is lifted, and STARTTLS, EHLO and AUTH
		// then work through the guard.
		s := start(t, Config{Behavior: Behavior{STARTTLSReply: refused}})
		d := dial(t, s)
		s.SetBehavior(Behavior{})
		d.cmd("EHLO client.test")
		if r := d.cmd("STARTTLS"); !strings.HasPrefix(r, "220 ") {
			t.Fatalf("STARTTLS: %q", r)
		}
		tc := tls.Client(d.c, s.ClientTLSConfig())
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		d.c, d.br = tc, bufio.NewReader(tc)
		d.cmd("EHLO client.test")
		plain := base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00" + testPass))
		if r := d.cmd("AUTH PLAIN " + plain); !strings.HasPrefix(r, "235 ") {
			t.Fatalf("AUTH after STARTTLS: %q", r)
		}
		d.cmd("QUIT")
		if got := waitClosed(t, s, 1)[0]; !got.TLS || !got.Authenticated() {
			t.Errorf("session = %+v", got)
		}
	})
}

func TestEchoAuth(t *testing.T) {
	s := start(t, Config{Behavior: Behavior{EchoAuth: true}})
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		c := dialTLS(t, s)
		var cl sasl.Client = sasl.NewPlainClient("", testUser, "wrong-Pa55")
		want := base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00wrong-Pa55"))
		if mech == "LOGIN" {
			cl = sasl.NewLoginClient(testUser, "wrong-Pa55")
			want = base64.StdEncoding.EncodeToString([]byte("wrong-Pa55"))
		}
		err := c.Auth(cl)
		if smtpCode(err) != 535 || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "wrong-Pa55") {
			t.Errorf("%s: reply %v, want a 535 quoting %s and the password", mech, err, want)
		}
	}
	// A successful AUTH is not affected.
	c := dialTLS(t, s)
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); err != nil {
		t.Fatal(err)
	}
}
