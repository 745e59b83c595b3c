package smtpd

import (
	"slices"
	"strings"
	"testing"
)

// TestSMTPUTF8: the listener offers SMTPUTF8 (RFC 6531); a transaction
// whose MAIL FROM says SMTPUTF8 may use UTF-8 addresses, queued as they
// are and marked UTF8SMTP in the Received header; without the parameter
// a UTF-8 address is refused with 553 5.6.7, and the next transaction of
// the session starts without it again.
func TestSMTPUTF8(t *testing.T) {
	q := &recQueue{}
	_, addr, _ := startServer(t, Options{}, q)
	c := dial(t, addr)
	if ehlo := c.cmd("EHLO client.example", 250, ""); !strings.Contains(ehlo, "SMTPUTF8") {
		t.Errorf("EHLO reply does not offer SMTPUTF8: %q", ehlo)
	}
	c.cmd("MAIL FROM:<jörg@münchen.example> SMTPUTF8", 250, "")
	c.cmd("RCPT TO:<用户@例子.广告>", 250, "")
	c.cmd("RCPT TO:<ascii@example.org>", 250, "")
	c.cmd("DATA", 354, "")
	c.write("Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nhallo\r\n.\r\n")
	c.expect(250, "")

	c.cmd("MAIL FROM:<app@example.com>", 250, "")
	c.cmd("RCPT TO:<jörg@example.org>", 553, "5.6.7 non-ASCII address requires the SMTPUTF8 parameter of MAIL FROM")
	c.cmd("RSET", 250, "")
	c.cmd("MAIL FROM:<jörg@example.org>", 553, "5.6.7 non-ASCII address requires the SMTPUTF8 parameter")

	got := q.all()
	if len(got) != 1 {
		t.Fatalf("queued %d messages, want 1", len(got))
	}
	m := got[0]
	if m.from != "jörg@münchen.example" || !slices.Equal(m.to, []string{"用户@例子.广告", "ascii@example.org"}) {
		t.Errorf("queued from %q to %q", m.from, m.to)
	}
	if !strings.Contains(m.body, " with UTF8SMTP id ") {
		t.Errorf("Received header does not say UTF8SMTP:\n%s", m.body)
	}
}
