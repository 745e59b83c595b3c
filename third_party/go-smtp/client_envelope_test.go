package smtp

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// writeLog keeps each Write call apart.
type writeLog struct{ writes []string }

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *writeLog) all() string { return strings.Join(w.writes, "") }

// envelopeClient is a Client past EHLO with the extensions ext, reading
// server's replies and logging its writes.
func envelopeClient(server string, ext map[string]string) (*Client, *writeLog) {
	wrote := &writeLog{}
	var fake faker
	fake.ReadWriter = struct {
		io.Reader
		io.Writer
	}{strings.NewReader(strings.ReplaceAll(server, "\n", "\r\n")), wrote}
	c := NewClient(fake)
	c.didHello = true
	c.ext = ext
	return c, wrote
}

func smtpCode(err error) int {
	var se *SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestSendEnvelopePipelined(t *testing.T) {
	c, wrote := envelopeClient("250 sender ok\n250 rcpt ok\n550 5.1.1 no such user\n354 go ahead\n250 queued\n",
		map[string]string{"PIPELINING": "", "SIZE": "1000"})
	w, replies, err := c.SendEnvelope("a@example.org", &MailOptions{Size: 5}, []string{"b@example.org", "c@example.org"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "MAIL FROM:<a@example.org> SIZE=5\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"
	if len(wrote.writes) != 1 || wrote.writes[0] != want {
		t.Fatalf("writes = %q, want one write of %q", wrote.writes, want)
	}
	if replies.Mail != nil || len(replies.Rcpt) != 2 || replies.Rcpt[0] != nil || smtpCode(replies.Rcpt[1]) != 550 || replies.Data != nil {
		t.Fatalf("replies = %+v, want MAIL and the first RCPT accepted, 550 to the second, 354 to DATA", replies)
	}
	if w == nil {
		t.Fatal("no DataCommand after a 354")
	}
	if _, err := io.WriteString(w, "Hi\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := wrote.all(); got != want+"Hi\r\n.\r\n" {
		t.Errorf("wrote %q", got)
	}
	if len(c.rcpts) != 1 || c.rcpts[0] != "b@example.org" {
		t.Errorf("recipients of the transaction = %q, want the accepted one", c.rcpts)
	}
}

// A refused MAIL FROM: the replies to RCPT and DATA are read too, so the
// next command gets its own reply.
func TestSendEnvelopePipelinedMailRefused(t *testing.T) {
	c, wrote := envelopeClient("451 4.3.0 try later\n503 5.5.1 need MAIL\n503 5.5.1 need RCPT\n250 noop\n",
		map[string]string{"PIPELINING": ""})
	w, replies, err := c.SendEnvelope("a@example.org", nil, []string{"b@example.org"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w != nil || smtpCode(replies.Mail) != 451 || replies.Rcpt != nil || replies.Data != nil {
		t.Fatalf("w = %v, replies = %+v; want no writer and only MAIL's 451", w, replies)
	}
	if err := c.Noop(); err != nil {
		t.Fatalf("NOOP after the refused envelope: %v (replies out of step)", err)
	}
	if got := wrote.all(); got != "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nNOOP\r\n" {
		t.Errorf("wrote %q", got)
	}
}

// Every recipient refused and DATA refused: no writer, each refusal
// reported.
func TestSendEnvelopePipelinedNoRecipient(t *testing.T) {
	c, _ := envelopeClient("250 ok\n550 no\n551 no\n554 5.5.1 no valid recipients\n",
		map[string]string{"PIPELINING": ""})
	w, replies, err := c.SendEnvelope("a@example.org", nil, []string{"b@example.org", "c@example.org"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w != nil || replies.Mail != nil || smtpCode(replies.Rcpt[0]) != 550 || smtpCode(replies.Rcpt[1]) != 551 || smtpCode(replies.Data) != 554 {
		t.Fatalf("w = %v, replies = %+v", w, replies)
	}
}

// A server that answers DATA with 354 although it took no recipient gets
// the dot of an empty message, and its reply is read.
func TestSendEnvelopePipelinedDataWithoutRecipients(t *testing.T) {
	c, wrote := envelopeClient("250 ok\n550 no\n354 go ahead\n554 no recipients\n250 noop\n",
		map[string]string{"PIPELINING": ""})
	w, replies, err := c.SendEnvelope("a@example.org", nil, []string{"b@example.org"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w != nil || smtpCode(replies.Rcpt[0]) != 550 || replies.Data != nil {
		t.Fatalf("w = %v, replies = %+v", w, replies)
	}
	if err := c.Noop(); err != nil {
		t.Fatalf("NOOP: %v", err)
	}
	if got := wrote.all(); !strings.HasSuffix(got, "DATA\r\n.\r\nNOOP\r\n") {
		t.Errorf("wrote %q, want the lone dot after DATA", got)
	}
}

// Without PIPELINING each command waits for its reply: a refused MAIL
// sends nothing more, and DATA waits for an accepted recipient.
func TestSendEnvelopeInTurn(t *testing.T) {
	c, wrote := envelopeClient("550 no\n", map[string]string{})
	w, replies, err := c.SendEnvelope("a@example.org", nil, []string{"b@example.org"}, nil)
	if err != nil || w != nil || smtpCode(replies.Mail) != 550 {
		t.Fatalf("w = %v, replies = %+v, err = %v", w, replies, err)
	}
	if got := wrote.all(); got != "MAIL FROM:<a@example.org>\r\n" {
		t.Errorf("after a refused MAIL, wrote %q", got)
	}

	c, wrote = envelopeClient("250 ok\n550 no\n", map[string]string{})
	w, replies, err = c.SendEnvelope("a@example.org", nil, []string{"b@example.org"}, nil)
	if err != nil || w != nil || smtpCode(replies.Rcpt[0]) != 550 || replies.Data != nil {
		t.Fatalf("w = %v, replies = %+v, err = %v", w, replies, err)
	}
	if got := wrote.all(); got != "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n" {
		t.Errorf("with no recipient accepted, wrote %q", got)
	}

	c, wrote = envelopeClient("250 ok\n250 ok\n354 go\n", map[string]string{})
	w, _, err = c.SendEnvelope("a@example.org", nil, []string{"b@example.org"}, nil)
	if err != nil || w == nil {
		t.Fatalf("w = %v, err = %v", w, err)
	}
	if len(wrote.writes) != 3 {
		t.Errorf("writes = %q, want one per command", wrote.writes)
	}
}

// A connection that ends mid-envelope is an error, not a refusal, and the
// replies read before it are kept.
func TestSendEnvelopeConnectionLost(t *testing.T) {
	for _, ext := range []map[string]string{{"PIPELINING": ""}, {}} {
		c, _ := envelopeClient("250 ok\n421 4.3.2 shutting down\n", ext)
		_, replies, err := c.SendEnvelope("a@example.org", nil, []string{"b@example.org", "c@example.org"}, nil)
		if err == nil || smtpCode(err) != 0 {
			t.Errorf("%v: err = %v, want a read error", ext, err)
		}
		if replies.Mail != nil || len(replies.Rcpt) != 1 || smtpCode(replies.Rcpt[0]) != 421 {
			t.Errorf("%v: replies = %+v, want MAIL accepted and the first RCPT's 421", ext, replies)
		}

		// Lost after MAIL's 250: Rcpt is empty, not nil.
		c, _ = envelopeClient("250 ok\n", ext)
		_, replies, err = c.SendEnvelope("a@example.org", nil, []string{"b@example.org"}, nil)
		if err == nil || replies.Mail != nil || replies.Rcpt == nil || len(replies.Rcpt) != 0 {
			t.Errorf("%v: lost after MAIL: err = %v, replies = %+v, want MAIL accepted and no RCPT reply", ext, err, replies)
		}

		// Lost before MAIL's reply: nothing is known.
		c, _ = envelopeClient("", ext)
		_, replies, err = c.SendEnvelope("a@example.org", nil, []string{"b@example.org"}, nil)
		if err == nil || replies.Mail != nil || replies.Rcpt != nil {
			t.Errorf("%v: lost before MAIL's reply: err = %v, replies = %+v", ext, err, replies)
		}
	}
}

func TestSendEnvelopeBadArguments(t *testing.T) {
	for _, tc := range []struct {
		from  string
		to    []string
		ropts []*RcptOptions
	}{
		{"a@example.org\r\nRSET", []string{"b@example.org"}, nil},
		{"a@example.org", []string{"b@example.org\r\nRSET"}, nil},
		{"a@example.org", []string{"b@example.org"}, []*RcptOptions{nil, nil}},
	} {
		c, wrote := envelopeClient("", map[string]string{"PIPELINING": ""})
		if _, _, err := c.SendEnvelope(tc.from, nil, tc.to, tc.ropts); err == nil {
			t.Errorf("%q %q: no error", tc.from, tc.to)
		}
		if len(wrote.writes) != 0 {
			t.Errorf("%q %q: wrote %q", tc.from, tc.to, wrote.writes)
		}
	}
}
