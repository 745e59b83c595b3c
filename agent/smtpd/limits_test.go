package smtpd

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func TestMaxSessions(t *testing.T) {
	s, addr, logs := startServer(t, Options{MaxSessions: 3, MaxSessionsPerClient: 10}, &recQueue{})
	var open []*client
	for range 3 {
		c := dial(t, addr)
		c.cmd("EHLO client.example", 250, "")
		open = append(open, c)
	}
	for range 2 {
		c := connect(t, addr, "")
		c.expect(421, "4.7.0 too many sessions, try again later")
		c.expectClosed()
	}
	st := s.Stats()
	if st.Rejected[ReasonMaxSessions] != 2 || st.SessionsOpen != 3 || st.Sessions != 3 {
		t.Errorf("after 2 refusals: %+v", st)
	}
	if n := strings.Count(logs.String(), "session limit reached, refusing new connections"); n != 1 {
		t.Errorf("%d warnings for reaching the limit, want 1:\n%s", n, logs)
	}

	// The sessions already open go on; when one ends, a new one is accepted.
	open[1].cmd("NOOP", 250, "")
	open[0].cmd("QUIT", 221, "")
	open[0].expectClosed()
	waitUntil(t, "the closed session to be forgotten", func() bool { return s.Stats().SessionsOpen == 2 })
	c := dial(t, addr)
	c.cmd("EHLO client.example", 250, "")
	c = connect(t, addr, "")
	c.expect(421, "4.7.0 too many sessions")
	c.expectClosed()
	if n := strings.Count(logs.String(), "session limit reached, refusing new connections"); n != 2 {
		t.Errorf("%d warnings for reaching the limit twice, want 2", n)
	}
}

func TestMaxSessionsCountsRefusedNetworks(t *testing.T) {
	if !canBind127002(t) {
		t.Skip("127.0.0.2 is not usable as a source address here")
	}
	s, addr, _ := startServer(t, Options{MaxSessions: 2, AllowedNetworks: only127001}, &recQueue{})
	denied := dialFrom(t, addr, "127.0.0.2") // served by the refusal loop, holding a slot
	denied.cmd("MAIL FROM:<a@example.com>", 550, "5.7.1 ")
	dial(t, addr)
	c := connect(t, addr, "")
	c.expect(421, "4.7.0 too many sessions")
	c.expectClosed()
	denied.cmd("QUIT", 221, "")
	waitUntil(t, "the refused client's session to be forgotten", func() bool { return s.Stats().SessionsOpen == 1 })
	dial(t, addr)
}

func TestMaxSessionsPerClient(t *testing.T) {
	s, addr, logs := startServer(t, Options{MaxSessions: 10, MaxSessionsPerClient: 2}, &recQueue{})
	a := dial(t, addr)
	dial(t, addr)
	for range 2 {
		c := connect(t, addr, "")
		c.expect(421, "4.7.0 too many sessions from your address, try again later")
		c.expectClosed()
	}
	if canBind127002(t) {
		other := dialFrom(t, addr, "127.0.0.2") // another client is not limited by this one
		other.cmd("EHLO other.example", 250, "")
	}
	if n := s.Stats().Rejected[ReasonMaxPerClient]; n != 2 {
		t.Errorf("Rejected[max_sessions_per_client] = %d, want 2", n)
	}
	if n := strings.Count(logs.String(), "per-client session limit reached, refusing"); n != 1 {
		t.Errorf("%d warnings for the client reaching its limit, want 1", n)
	}

	a.cmd("QUIT", 221, "")
	a.expectClosed()
	waitUntil(t, "the closed session to be forgotten", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.perClient[a.conn.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()].n == 1
	})
	c := dial(t, addr)
	c.cmd("EHLO client.example", 250, "")
}

// TestSessionLimitDefaults: without options, 20 sessions per client and
// 100 in all.
func TestSessionLimitDefaults(t *testing.T) {
	_, addr, _ := startServer(t, Options{}, &recQueue{})
	for range 20 {
		dial(t, addr)
	}
	c := connect(t, addr, "")
	c.expect(421, "4.7.0 ")
	c.expectClosed()

	if !canBind127002(t) {
		t.Skip("127.0.0.2 and up are not usable as source addresses here")
	}
	for i := 2; i <= 5; i++ {
		for range 20 {
			dialFrom(t, addr, fmt.Sprintf("127.0.0.%d", i))
		}
	}
	c = connect(t, addr, "127.0.0.6")
	c.expect(421, "4.7.0 too many sessions, try again later")
	c.expectClosed()
}

func TestIdleTimeout(t *testing.T) {
	opt := Options{IdleTimeout: 200 * time.Millisecond, ReadTimeout: time.Hour}

	t.Run("silent client", func(t *testing.T) {
		s, addr, logs := startServer(t, opt, &recQueue{})
		c := dial(t, addr)
		c.expect(421, "4.4.2 ")
		c.expectClosed()
		if n := s.Stats().Rejected[ReasonIdle]; n != 1 {
			t.Errorf("Rejected[idle] = %d, want 1", n)
		}
		if !strings.Contains(logs.String(), `msg="session idle, closing connection"`) {
			t.Errorf("idle close not logged:\n%s", logs)
		}
	})
	t.Run("after a command", func(t *testing.T) {
		_, addr, _ := startServer(t, opt, &recQueue{})
		c := dial(t, addr)
		c.cmd("EHLO client.example", 250, "")
		c.expect(421, "4.4.2 ")
		c.expectClosed()
	})
	t.Run("a command dripped byte by byte", func(t *testing.T) {
		_, addr, _ := startServer(t, opt, &recQueue{})
		c := dial(t, addr)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for range 1000 { // far more bytes than the timeout lets through
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := c.conn.Write([]byte("x")); err != nil {
					return
				}
			}
		}()
		// The bytes that came before the timeout may be answered as a
		// command (bufio.Reader.ReadLine returns a partial line without
		// its error); then the session ends.
		for i := 0; ; i++ {
			code, msg := c.reply()
			if code == 421 && strings.HasPrefix(msg, "4.4.2 ") {
				break
			}
			if code/100 != 5 || i == 3 {
				t.Fatalf("reply %d %s, want 421 4.4.2", code, msg)
			}
		}
		c.expectClosed()
	})
	t.Run("a partial MAIL before the timeout", func(t *testing.T) {
		q := &recQueue{}
		_, addr, _ := startServer(t, opt, q)
		c := dial(t, addr)
		c.cmd("EHLO client.example", 250, "")
		c.write("MAIL FROM:<app@example.com>")
		c.expect(421, "4.4.2 idle timeout, closing connection")
		c.expectClosed()
	})
	t.Run("slow message", func(t *testing.T) {
		// Inside a message, each read gets ReadTimeout: a message that
		// takes longer than IdleTimeout in all, but keeps coming, is
		// accepted.
		q := &recQueue{}
		_, addr, _ := startServer(t, Options{IdleTimeout: 200 * time.Millisecond, ReadTimeout: 10 * time.Second}, q)
		c := dial(t, addr)
		c.cmd("EHLO client.example", 250, "")
		c.cmd("MAIL FROM:<app@example.com>", 250, "")
		c.cmd("RCPT TO:<a@example.org>", 250, "")
		c.cmd("DATA", 354, "")
		c.write("Subject: slow\r\n\r\n")
		for i := range 8 {
			time.Sleep(100 * time.Millisecond)
			c.write(fmt.Sprintf("line %d\r\n", i))
		}
		c.write(".\r\n")
		c.expect(250, "")
		if n := len(q.all()); n != 1 {
			t.Errorf("queued %d messages, want 1", n)
		}
	})
	t.Run("disallowed client", func(t *testing.T) {
		if !canBind127002(t) {
			t.Skip("127.0.0.2 is not usable as a source address here")
		}
		// Bounded by IdleTimeout, or by ReadTimeout if shorter.
		for _, o := range []Options{opt, {ReadTimeout: 200 * time.Millisecond}} {
			o.AllowedNetworks = only127001
			_, addr, _ := startServer(t, o, &recQueue{})
			c := dialFrom(t, addr, "127.0.0.2")
			c.expect(421, "4.4.2 ")
			c.expectClosed()
		}
	})
}

// TestConnectionReset: a TCP probe that connects and resets is counted and
// logged at debug level, not as a warning.
func TestConnectionReset(t *testing.T) {
	s, addr, logs := startServer(t, Options{}, &recQueue{})
	for range 2 {
		c := dial(t, addr)
		c.conn.(*net.TCPConn).SetLinger(0) // close sends RST
		c.conn.Close()
	}
	waitUntil(t, "the resets to be counted", func() bool { return s.Stats().ConnectionErrors == 2 })
	waitUntil(t, "the sessions to be forgotten", func() bool { return s.Stats().SessionsOpen == 0 })
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("a reset was logged as a warning:\n%s", logs)
	}
	if n := strings.Count(logs.String(), `level=DEBUG msg="client connection error"`); n != 2 {
		t.Errorf("%d debug lines for 2 resets:\n%s", n, logs)
	}
}

// Unknown MAIL FROM and RCPT TO parameters, and those of extensions not
// offered, answer 555 (RFC 5321 section 4.1.1.11), in a plaintext session
// and inside STARTTLS alike.
func TestUnknownParameters(t *testing.T) {
	cfg, pool := testTLS(t)
	for _, tlsSession := range []bool{false, true} {
		t.Run(map[bool]string{false: "plaintext", true: "STARTTLS"}[tlsSession], func(t *testing.T) {
			q := &recQueue{}
			_, addr, _ := startServer(t, Options{MaxErrors: 100, TLSConfig: cfg}, q)
			c := dial(t, addr)
			c.cmd("EHLO client.example", 250, "")
			if tlsSession {
				c.cmd("STARTTLS", 220, "")
				c.startTLS(pool)
				c.cmd("EHLO client.example", 250, "")
			}
			c.cmd("MAIL FROM:<app@example.com> FOO=BAR", 555, "5.5.4 MAIL FROM parameter not recognized")
			c.cmd("MAIL FROM:<app@example.com> SMTPUTF8", 250, "") // offered (RFC 6531)
			c.cmd("RSET", 250, "")
			c.cmd("MAIL FROM:<app@example.com> RET=FULL", 555, "5.5.4 RET is not implemented")
			c.cmd("MAIL FROM:<app@example.com> BODY=BINARYMIME", 555, "5.5.4 BINARYMIME is not implemented")
			c.cmd("MAIL FROM:<app@example.com> SIZE=100 BODY=8BITMIME", 250, "")
			c.cmd("RCPT TO:<a@example.org> FOO=1", 555, "5.5.4 RCPT TO parameter not recognized")
			c.cmd("RCPT TO:<a@example.org> NOTIFY=NEVER", 555, "5.5.4 NOTIFY is not implemented")
			c.cmd("RCPT TO:<a@example.org> ORCPT=rfc822;a@example.org", 555, "5.5.4 ORCPT is not implemented")
			c.cmd("RCPT TO:<a@example.org>", 250, "")
			c.cmd("DATA", 354, "")
			c.write("Subject: x\r\n\r\nx\r\n.\r\n")
			c.expect(250, "")
			if got := q.all(); len(got) != 1 || got[0].to[0] != "a@example.org" {
				t.Errorf("queued %+v", got)
			}
		})
	}
}
