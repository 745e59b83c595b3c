package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// pySend is a Python smtplib client: it sends the message on standard
// input from argv[3] to argv[4] with the SMTPUTF8 option, as an
// application would.
const pySend = `
import smtplib, sys
host, port, sender, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
msg = sys.stdin.buffer.read()
with smtplib.SMTP(host, port) as s:
    s.ehlo("client.test")
    if not s.has_extn("smtputf8"):
        sys.exit("the server does not offer SMTPUTF8")
    s.sendmail(sender, [rcpt], msg, mail_options=["SMTPUTF8"])
`

func python3(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	p, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is not installed; run make deps (tools/deps.sh installs it)")
	}
	return p
}

const utf8Message = "From: Absender <absender@example.com>\r\n" +
	"To: =?utf-8?q?J=C3=B6rg?= <jörg@münchen.example>\r\n" +
	"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n" +
	"Message-ID: <utf8-1@test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hallo Jörg,\r\nschöne Grüße.\r\n"

// TestSMTPUTF8Python: Python's smtplib hands a message for a UTF-8
// address to the listener with SMTPUTF8; a relay that offers SMTPUTF8
// receives it, authenticated, with its address, Message-ID and body
// unchanged; a relay that does not gets nothing for that recipient, and
// the sender gets a DSN with status 5.6.7 naming it (no downgrade).
func TestSMTPUTF8Python(t *testing.T) {
	py := python3(t)
	for _, offered := range []bool{true, false} {
		name := "relay offers SMTPUTF8"
		if !offered {
			name = "relay without SMTPUTF8"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			rigFiles(t, dir, rigUser, rigPass)
			up := startUpstream(t, dir, upstream.Config{SMTPUTF8: offered, Behavior: upstream.Behavior{RequireAuth: true}})
			a := startAgent(t, rigConfig(t, dir, up.Addr(), relayOpts{}, ""))
			host, port, _ := strings.Cut(a.Addr().String(), ":")
			cmd := exec.Command(py, "-c", pySend, host, port, "absender@example.com", "jörg@münchen.example")
			cmd.Stdin = strings.NewReader(utf8Message)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("python smtplib: %v\n%s", err, out)
			}
			if err := up.WaitMessages(1, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			m := up.Messages()[0]
			if m.Username != rigUser {
				t.Errorf("the relay got it on a session as %q", m.Username)
			}
			if offered {
				if m.From != "absender@example.com" || len(m.To) != 1 || m.To[0] != "jörg@münchen.example" || m.MessageID != "<utf8-1@test>" ||
					!bytes.HasSuffix(m.Data, []byte("\r\n\r\nHallo Jörg,\r\nschöne Grüße.\r\n")) || !bytes.Contains(m.Data, []byte(" with UTF8SMTP id ")) {
					t.Errorf("relayed %q -> %q:\n%s", m.From, m.To, m.Data)
				}
				return
			}
			// The DSN, from <> to the sender.
			if m.From != "" || len(m.To) != 1 || m.To[0] != "absender@example.com" {
				t.Fatalf("the relay got %q -> %q, want only the DSN to the sender:\n%s", m.From, m.To, m.Data)
			}
			for _, want := range []string{
				"Final-Recipient: utf-8; j\\x{F6}rg@m\\x{FC}nchen.example\r\n",
				"Status: 5.6.7\r\n",
				"does not offer SMTPUTF8,",
				"Message-ID: <utf8-1@test>\r\n",
			} {
				if !bytes.Contains(m.Data, []byte(want)) {
					t.Errorf("the DSN lacks %q:\n%s", want, m.Data)
				}
			}
			// Nothing is left to retry: the recipient failed for good.
			waitFor(t, 10*time.Second, "the queue to empty", func() bool { return a.Queue().Stats().Queued == 0 })
			if n, st := len(up.Messages()), a.Queue().Stats(); n != 1 || st.Failed != 1 || st.Bounced != 1 {
				t.Errorf("the relay got %d messages, stats %+v; want the DSN only, one failure", n, st)
			}
		})
	}
}
