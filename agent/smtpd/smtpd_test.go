package smtpd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

var receivedRE = regexp.MustCompile(`^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n` +
	`\tby mx\.test \(sealrelay\) with (ESMTPS?) id ([0-9a-f]{16});\r\n` +
	`\t([^\r\n]+)\r\n`)

// splitReceived checks the Received header at the start of a stored
// message and returns the protocol and the rest of the message.
func splitReceived(t *testing.T, body string) (proto, rest string) {
	t.Helper()
	m := receivedRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("stored message does not start with a well-formed Received header:\n%q", body)
	}
	if _, err := time.Parse(time.RFC1123Z, m[3]); err != nil {
		t.Errorf("Received date %q is not an RFC 5322 date: %v", m[3], err)
	}
	return m[1], body[len(m[0]):]
}

func TestHappyPathGoSMTPClient(t *testing.T) {
	q := &recQueue{}
	s, addr, _ := startServer(t, Options{}, q)

	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("app@example.com", nil); err != nil {
		t.Fatal(err)
	}
	for _, rcpt := range []string{"a@example.org", "b@example.org"} {
		if err := c.Rcpt(rcpt, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	msg := "Subject: hello\r\n\r\nline one\r\n.line starting with a dot\r\n\r\nlast\r\n"
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	got := q.all()
	if len(got) != 1 {
		t.Fatalf("queued %d messages, want 1", len(got))
	}
	if got[0].from != "app@example.com" || !slices.Equal(got[0].to, []string{"a@example.org", "b@example.org"}) {
		t.Errorf("envelope = %q -> %q", got[0].from, got[0].to)
	}
	proto, rest := splitReceived(t, got[0].body)
	if proto != "ESMTP" {
		t.Errorf("protocol %q, want ESMTP", proto)
	}
	if rest != msg {
		t.Errorf("stored body\n%q\nwant\n%q", rest, msg)
	}
	if st := s.Stats(); st.Accepted != 1 {
		t.Errorf("Stats().Accepted = %d, want 1", st.Accepted)
	}
}

func TestExactBytesAndNullSender(t *testing.T) {
	q := &recQueue{}
	_, addr, _ := startServer(t, Options{}, q)
	c := dial(t, addr)
	c.cmd("EHLO client.example", 250, "")
	// Dot-stuffed on the wire; stored unstuffed, CRLF kept, trailing
	// spaces and empty lines kept.
	code, msg := c.send("", "postmaster@example.org",
		"From: <>\r\n\r\n..leading dot\r\n \r\n\r\ntrailing space \r\n")
	if code != 250 {
		t.Fatalf("DATA reply %d %s", code, msg)
	}
	c.cmd("QUIT", 221, "")
	got := q.all()
	if len(got) != 1 {
		t.Fatalf("queued %d messages, want 1", len(got))
	}
	if got[0].from != "" {
		t.Errorf("from = %q, want the null sender", got[0].from)
	}
	_, rest := splitReceived(t, got[0].body)
	if want := "From: <>\r\n\r\n.leading dot\r\n \r\n\r\ntrailing space \r\n"; rest != want {
		t.Errorf("stored %q, want %q", rest, want)
	}
}

func TestSessionsOpen(t *testing.T) {
	s, addr, _ := startServer(t, Options{}, &recQueue{})
	c := dial(t, addr)
	c.cmd("NOOP", 250, "")
	if st := s.Stats(); st.SessionsOpen != 1 || st.Sessions != 1 {
		t.Errorf("with one client: %+v", st)
	}
	c.cmd("QUIT", 221, "")
	c.expectClosed()
	// The server forgets the connection just after closing it.
	waitUntil(t, "SessionsOpen to be 0 after QUIT", func() bool { return s.Stats().SessionsOpen == 0 })
}

func TestDisallowedNetwork(t *testing.T) {
	if !canBind127002(t) {
		t.Skip("127.0.0.2 is not usable as a source address here")
	}
	q := &recQueue{}
	s, addr, logs := startServer(t, Options{AllowedNetworks: only127001, MaxErrors: 50}, q)
	c := dialFrom(t, addr, "127.0.0.2")

	c.cmd("EHLO client.example", 250, "")
	for _, line := range []string{
		"MAIL FROM:<app@example.com>",
		"RCPT TO:<victim@example.org>",
		"DATA",
		"VRFY root",
		"EXPN staff",
		"ETRN example.org",
		"AUTH PLAIN AHVzZXIAcGFzcw==",
		"STARTTLS",
		"HELP",
		"BDAT 5 LAST",
	} {
		msg := c.cmd(line, 550, "5.7.1 ")
		if msg != "5.7.1 relay access denied" {
			t.Errorf("%s: reply %q names more than relay access denied", line, msg)
		}
		if strings.HasPrefix(line, "BDAT") {
			c.write("hello") // the chunk, which the server skips
		}
	}
	c.cmd("NOOP", 250, "")
	c.cmd("RSET", 250, "")
	c.cmd("HELO client.example", 250, "")
	c.cmd("XYZZY", 500, "5.5.2 ")
	c.cmd("QUIT", 221, "")
	c.expectClosed()

	if n := len(q.all()); n != 0 {
		t.Errorf("queued %d messages from a disallowed client", n)
	}
	if n := strings.Count(logs.String(), "relay access denied"); n != 1 {
		t.Errorf("relay access denied logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "127.0.0.2") {
		t.Errorf("log does not name the client:\n%s", logs)
	}
	if got := s.Stats().Rejected[ReasonNetwork]; got != 1 {
		t.Errorf("Rejected[network] = %d, want 1", got)
	}

	// The allowed address still works on the same server.
	c2 := dialFrom(t, addr, "127.0.0.1")
	c2.cmd("EHLO client.example", 250, "")
	if code, msg := c2.send("app@example.com", "a@example.org", "Subject: ok\r\n\r\nok\r\n"); code != 250 {
		t.Fatalf("allowed client: %d %s", code, msg)
	}
}

func TestDisallowedNetworkLimits(t *testing.T) {
	if !canBind127002(t) {
		t.Skip("127.0.0.2 is not usable as a source address here")
	}
	_, addr, _ := startServer(t, Options{AllowedNetworks: only127001, MaxErrors: 3}, &recQueue{})

	t.Run("too many errors", func(t *testing.T) {
		c := dialFrom(t, addr, "127.0.0.2")
		c.cmd("MAIL FROM:<a@example.com>", 550, "5.7.1 ")
		c.cmd("NOOP", 250, "") // does not reset the count for a denied client
		c.cmd("RCPT TO:<b@example.com>", 550, "5.7.1 ")
		c.cmd("DATA", 421, "4.7.0 ")
		c.expectClosed()
	})
	t.Run("http", func(t *testing.T) {
		c := dialFrom(t, addr, "127.0.0.2")
		c.write("POST / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.expect(554, "5.7.0 this is an SMTP server, not a web server")
		c.expectClosed()
	})
	t.Run("long line", func(t *testing.T) {
		c := dialFrom(t, addr, "127.0.0.2")
		c.write("NOOP " + strings.Repeat("x", 3000) + "\r\n")
		c.expect(500, "5.5.2 ")
		c.expectClosed()
	})
	t.Run("bad BDAT size", func(t *testing.T) {
		c := dialFrom(t, addr, "127.0.0.2")
		c.cmd("BDAT 99999999999 LAST", 550, "5.7.1 ")
		c.expectClosed()
	})
}

func TestMessageTooLarge(t *testing.T) {
	q := &recQueue{}
	s, addr, _ := startServer(t, Options{MaxMessageBytes: 100}, q)
	c := dial(t, addr)
	c.cmd("EHLO client.example", 250, "")

	code, msg := c.send("app@example.com", "a@example.org", "Subject: big\r\n\r\n"+strings.Repeat("0123456789\r\n", 20))
	if code != 552 || !strings.HasPrefix(msg, "5.3.4 ") {
		t.Fatalf("oversize DATA: %d %s, want 552 5.3.4", code, msg)
	}
	// The session goes on.
	if code, msg := c.send("app@example.com", "a@example.org", "Subject: small\r\n\r\nok\r\n"); code != 250 {
		t.Fatalf("next transaction: %d %s", code, msg)
	}
	// SIZE= over the limit is refused at MAIL by go-smtp.
	c.cmd("MAIL FROM:<app@example.com> SIZE=1000", 552, "5.3.4 ")

	got := q.all()
	if len(got) != 1 || !strings.Contains(got[0].body, "Subject: small") {
		t.Fatalf("queued %d messages, want only the small one", len(got))
	}
	if n := s.Stats().Rejected[ReasonSize]; n != 1 {
		t.Errorf("Rejected[size] = %d, want 1", n)
	}
}

func TestTooManyRecipients(t *testing.T) {
	q := &recQueue{}
	s, addr, _ := startServer(t, Options{MaxRecipients: 2, MaxErrors: 2}, q)
	c := dial(t, addr)
	c.cmd("EHLO client.example", 250, "")
	c.cmd("MAIL FROM:<app@example.com>", 250, "")
	c.cmd("RCPT TO:<a@example.org>", 250, "")
	c.cmd("RCPT TO:<a@example.org>", 250, "") // a duplicate is accepted once
	c.cmd("RCPT TO:<b@example.org>", 250, "")
	// Excess recipients do not count as errors in a row (MaxErrors 2).
	for i := 0; i < 4; i++ {
		c.cmd("RCPT TO:<c@example.org>", 452, "4.5.3 ")
	}
	c.cmd("DATA", 354, "")
	c.write("Subject: x\r\n\r\nx\r\n.\r\n")
	c.expect(250, "")

	got := q.all()
	if len(got) != 1 || !slices.Equal(got[0].to, []string{"a@example.org", "b@example.org"}) {
		t.Fatalf("queued %+v, want one message to a and b", got)
	}
	if n := s.Stats().Rejected[ReasonRecipients]; n != 4 {
		t.Errorf("Rejected[recipients] = %d, want 4", n)
	}
}

// TestSmuggling sends each SMTP smuggling variant inside DATA, then one
// honest message, and checks exactly what was queued and that no smuggled
// command ran (every later reply lines up with its command).
//
// Two cases show go-smtp's DATA state machine, which differs from
// net/textproto's: after "\r\r\n" it is not at the start of a line, so
// "\r\r\n.\r\n" does not end the message (what follows is message data,
// not commands); and it drops ".\r" at the start of a line when no LF
// follows, so that CR never reaches our check. Both are safe here: the
// stored message is still one message with CRLF line endings only.
func TestSmuggling(t *testing.T) {
	const pre = "Subject: test\r\n\r\n"
	sm := func(eol string) string {
		return strings.ReplaceAll("MAIL FROM:<evil@example.net>|RCPT TO:<victim@example.org>|DATA|Subject: smuggled||smuggled|", "|", eol)
	}
	cases := []struct {
		name   string
		data   string // everything after 354, up to what go-smtp takes as the end
		code   int
		stored string // for code 250: the stored message after Received
	}{
		{"bare LF", pre + "line one\nline two\r\n.\r\n", 550, ""},
		{"bare CR", pre + "line one\rline two\r\n.\r\n", 550, ""},
		{"lone LF line", pre + "\n\r\n.\r\n", 550, ""},
		{"LF.LF", pre + "x\n.\n" + sm("\n") + ".\n\r\n.\r\n", 550, ""},
		{"CR.CR", pre + "x\r.\r" + sm("\r") + ".\rtail\r\n.\r\n", 550, ""},
		{"LF.CRLF", pre + "x\n.\r\n" + sm("\r\n") + ".\r\n", 550, ""},
		{"CRLF.LF", pre + "x\r\n.\n" + sm("\n") + ".\n\r\n.\r\n", 550, ""},
		{"CR.CRLF", pre + "x\r.\r\n" + sm("\r\n") + ".\r\n", 550, ""},
		{"CR CR LF . CR LF", pre + "x\r\r\n.\r\n" + sm("\r\n") + ".\r\n", 550, ""},
		{"CRLF.CR", pre + "x\r\n.\r" + sm("\r\n") + ".\r\n", 250, pre + "x\r\n" + sm("\r\n")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := &recQueue{}
			s, addr, _ := startServer(t, Options{}, q)
			c := dial(t, addr)
			c.cmd("EHLO client.example", 250, "")
			c.cmd("MAIL FROM:<app@example.com>", 250, "")
			c.cmd("RCPT TO:<a@example.org>", 250, "")
			c.cmd("DATA", 354, "")
			c.write(tc.data)
			if tc.code == 550 {
				c.expect(550, "5.6.0 bare CR or LF in message; only CRLF line endings are accepted")
			} else {
				c.expect(tc.code, "")
			}

			if code, msg := c.send("app@example.com", "a@example.org", "Subject: honest\r\n\r\nhonest\r\n"); code != 250 {
				t.Fatalf("honest message after the attempt: %d %s", code, msg)
			}
			c.cmd("NOOP", 250, "")

			var want []string
			if tc.code == 250 {
				want = append(want, tc.stored)
			}
			want = append(want, "Subject: honest\r\n\r\nhonest\r\n")
			got := q.all()
			if len(got) != len(want) {
				t.Fatalf("queued %d messages, want %d: %+v", len(got), len(want), got)
			}
			for i, m := range got {
				if m.from != "app@example.com" || !slices.Equal(m.to, []string{"a@example.org"}) {
					t.Errorf("message %d: envelope %q -> %q", i, m.from, m.to)
				}
				if _, rest := splitReceived(t, m.body); rest != want[i] {
					t.Errorf("message %d: stored %q, want %q", i, rest, want[i])
				}
			}
			if n := s.Stats().Rejected[ReasonBareLineEnding]; tc.code == 550 && n != 1 {
				t.Errorf("Rejected[bare_line_ending] = %d, want 1", n)
			}
		})
	}
}

func TestBDAT(t *testing.T) {
	q := &recQueue{}
	_, addr, _ := startServer(t, Options{}, q)
	c := dial(t, addr)
	c.cmd("EHLO client.example", 250, "")

	// Bare LF in a chunk.
	c.cmd("MAIL FROM:<app@example.com>", 250, "")
	c.cmd("RCPT TO:<a@example.org>", 250, "")
	bdat := func(chunk string, last bool) {
		cmd := "BDAT " + strconv.Itoa(len(chunk))
		if last {
			cmd += " LAST"
		}
		c.write(cmd + "\r\n" + chunk)
	}
	bdat("Subject: x\r\n\r\nbare\nLF\r\n", true)
	c.expect(550, "5.6.0 ")

	// A CRLF split across two chunks is fine.
	c.cmd("MAIL FROM:<app@example.com>", 250, "")
	c.cmd("RCPT TO:<a@example.org>", 250, "")
	bdat("Subject: y\r\n\r\nz\r", false)
	c.expect(250, "")
	bdat("\n", true)
	c.expect(250, "")
	c.cmd("NOOP", 250, "")

	got := q.all()
	if len(got) != 1 {
		t.Fatalf("queued %d messages, want 1", len(got))
	}
	if _, rest := splitReceived(t, got[0].body); rest != "Subject: y\r\n\r\nz\r\n" {
		t.Errorf("queued %q", rest)
	}
}

func TestPutFailure(t *testing.T) {
	q := &recQueue{}
	q.setFail(errors.New("fsync /var/lib/sealrelay/spool/tmp/x: no space left on device"))
	s, addr, logs := startServer(t, Options{MaxErrors: 1}, q)
	c := dial(t, addr)
	c.cmd("EHLO client.example", 250, "")
	code, msg := c.send("app@example.com", "a@example.org", "Subject: x\r\n\r\nx\r\n")
	if code != 451 || msg != "4.3.0 temporary failure storing the message, try again later" {
		t.Fatalf("DATA with a failing queue: %d %q, want 451 4.3.0", code, msg)
	}
	if len(q.all()) != 0 {
		t.Fatal("a message was queued")
	}
	if !strings.Contains(logs.String(), "no space left on device") {
		t.Errorf("the cause is not logged:\n%s", logs)
	}
	if n := s.Stats().Rejected[ReasonPersist]; n != 1 {
		t.Errorf("Rejected[persist] = %d, want 1", n)
	}
	// Not the client's error (MaxErrors 1 would have closed the session),
	// and once the queue recovers the same session delivers.
	q.setFail(nil)
	if code, msg := c.send("app@example.com", "a@example.org", "Subject: x\r\n\r\nx\r\n"); code != 250 {
		t.Fatalf("after recovery: %d %s", code, msg)
	}
}

func TestStartTLSInjection(t *testing.T) {
	cfg, pool := testTLS(t)
	q := &recQueue{}
	_, addr, _ := startServer(t, Options{TLSConfig: cfg}, q)
	c := dial(t, addr)
	if msg := c.cmd("EHLO client.example", 250, ""); !strings.Contains(msg, "STARTTLS") {
		t.Fatalf("EHLO does not offer STARTTLS:\n%s", msg)
	}
	// The injection probe: a command pipelined after STARTTLS in the same
	// write must be discarded, not run inside the TLS session.
	c.write("STARTTLS\r\nRSET\r\n")
	c.expect(220, "")
	c.startTLS(pool)
	msg := c.cmd("EHLO client.example", 250, "")
	if !strings.HasPrefix(msg, "Hello client.example") {
		t.Fatalf("first reply inside TLS is %q, not the reply to EHLO: the pipelined RSET ran", msg)
	}
	if strings.Contains(msg, "STARTTLS") {
		t.Errorf("STARTTLS offered again inside TLS")
	}
	c.cmd("NOOP", 250, "")
	if code, msg := c.send("app@example.com", "a@example.org", "Subject: tls\r\n\r\nx\r\n"); code != 250 {
		t.Fatalf("DATA over TLS: %d %s", code, msg)
	}
	got := q.all()
	if len(got) != 1 {
		t.Fatalf("queued %d messages, want 1", len(got))
	}
	if proto, _ := splitReceived(t, got[0].body); proto != "ESMTPS" {
		t.Errorf("Received says %s, want ESMTPS", proto)
	}
}

func TestReadTimeout(t *testing.T) {
	q := &recQueue{}
	opt := Options{ReadTimeout: 200 * time.Millisecond}

	t.Run("idle", func(t *testing.T) {
		// The wait for a command is the shorter of ReadTimeout and
		// IdleTimeout (see also TestIdleTimeout).
		_, addr, _ := startServer(t, opt, q)
		c := dial(t, addr)
		c.expect(421, "4.4.2 ")
		c.expectClosed()
	})
	t.Run("stalled in DATA", func(t *testing.T) {
		s, addr, _ := startServer(t, opt, q)
		c := dial(t, addr)
		c.cmd("EHLO client.example", 250, "")
		c.cmd("MAIL FROM:<app@example.com>", 250, "")
		c.cmd("RCPT TO:<a@example.org>", 250, "")
		c.cmd("DATA", 354, "")
		c.write("Subject: stalled\r\n\r\nand then nothing")
		c.expect(421, "4.4.2 timeout reading the message")
		c.expectClosed()
		if n := len(q.all()); n != 0 {
			t.Errorf("queued %d messages", n)
		}
		if n := s.Stats().Rejected[ReasonReadError]; n != 1 {
			t.Errorf("Rejected[read_error] = %d, want 1", n)
		}
	})
}

func TestMaxErrors(t *testing.T) {
	s, addr, _ := startServer(t, Options{MaxErrors: 3}, &recQueue{})
	c := dial(t, addr)
	c.cmd("EHLO client.example", 250, "")
	// Two errors, then a success resets the count.
	c.cmd("MAIL FROM:<bad@@example.com>", 501, "5.1.7 ")
	c.cmd("MAIL FROM:<bad@@example.com>", 501, "5.1.7 ")
	c.cmd("MAIL FROM:<app@example.com>", 250, "")
	c.cmd("RCPT TO:<x@bad..domain>", 501, "5.1.3 ")
	c.cmd("RCPT TO:<x@bad..domain>", 501, "5.1.3 ")
	c.cmd("RCPT TO:<x@bad..domain>", 421, "4.7.0 too many errors")
	c.expectClosed()
	if n := s.Stats().Rejected[ReasonTooManyErrors]; n != 1 {
		t.Errorf("Rejected[too_many_errors] = %d, want 1", n)
	}
}

func TestHTTPRequest(t *testing.T) {
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
		"POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 40\r\n\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n",
		"CONNECT mail.example.org:25 HTTP/1.1\r\n\r\n",
	} {
		q := &recQueue{}
		s, addr, _ := startServer(t, Options{}, q)
		c := dial(t, addr)
		c.write(req)
		c.expect(554, "5.7.0 this is an SMTP server, not a web server")
		c.expectClosed()
		if s.Stats().Rejected[ReasonHTTP] != 1 {
			t.Errorf("%q: not counted as an HTTP request", req[:10])
		}
	}

	// The same words later in a session, or as the start of a message
	// line, are not HTTP.
	q := &recQueue{}
	_, addr, _ := startServer(t, Options{}, q)
	c := dial(t, addr)
	c.cmd("EHLO client.example", 250, "")
	if code, _ := c.send("app@example.com", "a@example.org", "GET / HTTP/1.1\r\n"); code != 250 {
		t.Fatalf("a message line starting with GET was refused: %d", code)
	}
	c.cmd("GET / HTTP/1.1", 501, "") // go-smtp: not a command
}

func TestAddresses(t *testing.T) {
	q := &recQueue{}
	_, addr, _ := startServer(t, Options{MaxErrors: 100}, q)
	c := dial(t, addr)
	c.cmd("EHLO client.example", 250, "")

	// Accepted, and stored as shown.
	for _, tc := range []struct{ path, stored string }{
		{"<@a.example,@b.example:user@c.example>", "user@c.example"}, // source route stripped
		{"<user%other.example@c.example>", "user%other.example@c.example"},
		{`<"john doe"@example.org>`, `"john doe"@example.org`},
		{`<"a\"b"@example.org>`, `"a\"b"@example.org`},
		{"<x@[192.0.2.1]>", "x@[192.0.2.1]"},
		{"<x@[IPv6:2001:db8::1]>", "x@[IPv6:2001:db8::1]"},
		{"x@example.org", "x@example.org"}, // without brackets
		{"<x@xn--mnchen-3ya.example>", "x@xn--mnchen-3ya.example"},
		{"<x@XN--MNCHEN-3YA.example>", "x@XN--MNCHEN-3YA.example"},
	} {
		c.cmd("MAIL FROM:<app@example.com>", 250, "")
		c.cmd("RCPT TO:"+tc.path, 250, "")
		c.cmd("DATA", 354, "")
		c.write("Subject: x\r\n\r\nx\r\n.\r\n")
		c.expect(250, "")
		got := q.all()
		if last := got[len(got)-1]; !slices.Equal(last.to, []string{tc.stored}) {
			t.Errorf("RCPT TO:%s stored as %q, want %q", tc.path, last.to, tc.stored)
		}
	}

	// Refused, with the reply shown.
	c.cmd("MAIL FROM:<app@example.com>", 250, "")
	for _, tc := range []struct{ path, reply string }{
		{"<a\x00b@example.org>", "5.1.3 control character in address"},
		{"<a@exam\x01ple.org>", "5.1.3 control character in address"},
		{"<j\xc3\xb6rg@example.org>", "5.6.7 non-ASCII address requires the SMTPUTF8 parameter"},
		{"<a@b@example.org>", "5.1.3 address has more than one @"},
		{"<a@-bad!domain>", "5.1.3 invalid domain in address"},
		{"<a@example..org>", "5.1.3 invalid domain in address"},
		{"<a@xn-->", "5.1.3 invalid internationalized (xn--) label in address domain"},
		{"<a@xn---.example>", "5.1.3 invalid internationalized (xn--) label in address domain"},
		{"<a@mail.xn--zz.example>", "5.1.3 invalid internationalized (xn--) label in address domain"},
		{"<a@[1.2.3.4>", ""}, // go-smtp: missing '>'
		{"<postmaster>", ""}, // no domain: go-smtp refuses
		{"<" + strings.Repeat("a", 250) + "@example.org>", "5.1.3 address too long"},
	} {
		code, msg := c.send2("RCPT TO:" + tc.path)
		if code/100 != 5 || !strings.HasPrefix(msg, tc.reply) {
			t.Errorf("RCPT TO:%q: %d %q, want 5xx %q", tc.path, code, msg, tc.reply)
		}
	}
	c.cmd("MAIL FROM:<a\x00b@example.org>", 501, "5.1.7 control character")
	c.cmd("MAIL FROM:<a@xn--->", 501, "5.1.7 invalid internationalized (xn--) label")

	// NUL or control characters in EHLO. go-smtp starts a session at the
	// first EHLO (refused here) and only resets it at a later one, so a
	// bad later name is refused at MAIL.
	c2 := dial(t, addr)
	c2.cmd("EHLO client\x00.example", 501, "5.5.4 ")
	c2.cmd("HELO client\x1b.example", 501, "5.5.4 ")
	c2.cmd("MAIL FROM:<app@example.com>", 502, "") // no session
	c2.cmd("EHLO client.example", 250, "")
	c2.cmd("EHLO client(x).example", 250, "")
	c2.cmd("MAIL FROM:<app@example.com>", 501, "5.5.4 ")
	c2.cmd("EHLO client.example", 250, "")
	c2.cmd("MAIL FROM:<app@example.com>", 250, "")
}

// send2 sends a line and returns the reply, whatever it is.
func (c *client) send2(line string) (int, string) {
	c.t.Helper()
	if err := c.tp.PrintfLine("%s", line); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

func TestLongLines(t *testing.T) {
	q := &recQueue{}
	_, addr, _ := startServer(t, Options{}, q)

	// go-smtp may act on the part of an over-long line it read before
	// noticing; then it answers 500 5.4.0 and closes.
	c := dial(t, addr)
	c.write("NOOP " + strings.Repeat("a", 3000) + "\r\n")
	if code, msg := c.reply(); code != 500 {
		if code != 250 {
			t.Fatalf("long NOOP: %d %s", code, msg)
		}
		c.expect(500, "5.4.0 ")
	} else if !strings.HasPrefix(msg, "5.4.0 ") {
		t.Fatalf("long NOOP: %d %s", code, msg)
	}
	c.expectClosed()

	c = dial(t, addr)
	c.cmd("EHLO client.example", 250, "")
	c.cmd("MAIL FROM:<app@example.com>", 250, "")
	c.cmd("RCPT TO:<a@example.org>", 250, "")
	c.cmd("DATA", 354, "")
	c.write("Subject: x\r\n\r\n" + strings.Repeat("y", 3000) + "\r\n.\r\n")
	c.expect(500, "5.4.0 line too long in message")
	if n := len(q.all()); n != 0 {
		t.Errorf("queued %d messages", n)
	}
}

func TestShutdown(t *testing.T) {
	q := &recQueue{started: make(chan struct{}, 1)}
	s, addr, _ := startServer(t, Options{}, q)

	idle := dial(t, addr)
	idle.cmd("EHLO client.example", 250, "")

	busy := dial(t, addr)
	busy.cmd("EHLO client.example", 250, "")
	busy.cmd("MAIL FROM:<app@example.com>", 250, "")
	busy.cmd("RCPT TO:<a@example.org>", 250, "")
	busy.cmd("DATA", 354, "")
	busy.write("Subject: in flight\r\n\r\nfirst half\r\n")
	<-q.started // the message is being received

	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()

	// The idle session is ended with a 421.
	idle.expect(421, "4.4.2 ")
	idle.expectClosed()

	// The message in flight completes and is acknowledged, then the
	// session ends.
	busy.write("second half\r\n.\r\n")
	busy.expect(250, "")
	busy.expect(421, "4.4.2 ")
	busy.expectClosed()

	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := q.all(); len(got) != 1 || !strings.HasSuffix(got[0].body, "first half\r\nsecond half\r\n") {
		t.Fatalf("queued %+v", got)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still accepting connections after Shutdown")
	}
}

func TestShutdownDeadline(t *testing.T) {
	q := &recQueue{started: make(chan struct{}, 1)}
	s, addr, _ := startServer(t, Options{}, q)
	busy := dial(t, addr)
	busy.cmd("EHLO client.example", 250, "")
	busy.cmd("MAIL FROM:<app@example.com>", 250, "")
	busy.cmd("RCPT TO:<a@example.org>", 250, "")
	busy.cmd("DATA", 354, "")
	busy.write("Subject: never finished\r\n")
	<-q.started

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	busy.expectClosed()
	if n := len(q.all()); n != 0 {
		t.Errorf("queued %d messages", n)
	}
}

func TestNewErrors(t *testing.T) {
	q := &recQueue{}
	for _, tc := range []struct {
		opt  Options
		q    Queue
		want string
	}{
		{Options{Hostname: "mx.test"}, nil, "smtpd: no queue"},
		{Options{Hostname: "mx test\r\n"}, q, `smtpd: invalid hostname "mx test\r\n"`},
		{Options{Hostname: "mx.test", MaxMessageBytes: -1}, q, "smtpd: max message bytes is negative"},
		{Options{Hostname: "mx.test", ReadTimeout: -1}, q, "smtpd: read timeout is negative"},
		{Options{Hostname: "mx.test", MaxErrors: -1}, q, "smtpd: max errors is negative"},
		{Options{Hostname: "mx.test", IdleTimeout: -1}, q, "smtpd: idle timeout is negative"},
		{Options{Hostname: "mx.test", MaxSessions: -1}, q, "smtpd: max sessions is negative"},
		{Options{Hostname: "mx.test", MaxSessionsPerClient: -1}, q, "smtpd: max sessions per client is negative"},
		{Options{Hostname: "mx.test", AllowedNetworks: only127001[:1:1]}, q, ""},
	} {
		_, err := New(tc.opt, tc.q)
		if tc.want == "" {
			if err != nil {
				t.Errorf("New(%+v): %v", tc.opt, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("New: %v, want %q", err, tc.want)
		}
	}

	s, err := New(Options{Hostname: "mx.test"}, q)
	if err != nil {
		t.Fatal(err)
	}
	if s.smtp.Debug != nil {
		t.Error("go-smtp Debug writer is set")
	}
	if s.smtp.ReadTimeout != DefaultIdleTimeout || s.smtp.WriteTimeout != DefaultTimeout ||
		s.smtp.MaxMessageBytes != DefaultMaxMessageBytes {
		t.Errorf("defaults not applied: read %v write %v size %d", s.smtp.ReadTimeout, s.smtp.WriteTimeout, s.smtp.MaxMessageBytes)
	}
	if !slices.Equal(s.opt.AllowedNetworks, DefaultAllowedNetworks) {
		t.Errorf("default networks %v", s.opt.AllowedNetworks)
	}

	// An IPv4-mapped prefix matches IPv4 clients.
	s, err = New(Options{Hostname: "mx.test", AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("::ffff:10.1.2.0/120")}}, q)
	if err != nil {
		t.Fatal(err)
	}
	if !s.allowed(netip.MustParseAddr("10.1.2.3")) || s.allowed(netip.MustParseAddr("10.1.3.3")) {
		t.Errorf("mapped prefix became %v", s.opt.AllowedNetworks)
	}
}

// Large messages, and commands pipelined after one (RFC 2920): the
// listener reads ahead of go-smtp while a message streams in, and every
// byte must still reach the message or the command it belongs to, in
// order. The second message is dot-stuffed where reads fall.
func TestLargeMessagesPipelined(t *testing.T) {
	q := &recQueue{}
	_, addr, _ := startServer(t, Options{}, q)
	c := dial(t, addr)
	c.cmd("EHLO client.example", 250, "")
	line := func(i int) string { return fmt.Sprintf("line %06d %s\r\n", i, strings.Repeat("x", 60)) }
	var b1, b2 strings.Builder
	b1.WriteString("Subject: one\r\n\r\n")
	b2.WriteString("Subject: two\r\n\r\n")
	for i := range 6000 { // about 450 KB each
		b1.WriteString(line(i))
		if i%7 == 0 {
			b2.WriteString("." + line(i))
		} else {
			b2.WriteString(line(i))
		}
	}
	c.cmd("MAIL FROM:<app@example.com>", 250, "")
	c.cmd("RCPT TO:<a@example.org>", 250, "")
	c.cmd("DATA", 354, "")
	// The end of the first message and the next transaction's commands
	// in one write.
	c.write(b1.String() + ".\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
	c.expect(250, "")
	c.expect(250, "")
	c.expect(250, "")
	c.expect(354, "")
	c.write(strings.ReplaceAll(b2.String(), "\r\n.", "\r\n..") + ".\r\nQUIT\r\n")
	c.expect(250, "")
	c.expect(221, "")
	got := q.all()
	if len(got) != 2 {
		t.Fatalf("queued %d messages, want 2", len(got))
	}
	for i, want := range []string{b1.String(), b2.String()} {
		body := got[i].body[strings.Index(got[i].body, "Subject: "):] // after the Received header
		if body != want {
			t.Errorf("message %d: %d bytes queued, want %d (first difference at %d)", i+1, len(body), len(want), firstDiff(body, want))
		}
	}
	if got[1].to[0] != "b@example.org" {
		t.Errorf("second message to %v", got[1].to)
	}
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
