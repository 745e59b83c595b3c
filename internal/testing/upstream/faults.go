package upstream

import (
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/relayhost"
)

// faults is the relay host's Faults: what Behavior scripts, read anew at
// each point of a session.
type faults struct{ s *Server }

var _ relayhost.Faults = faults{}

// Admit applies the greeting-time behaviour to one connection: the guard
// that answers EHLO and STARTTLS, a stall before the greeting, a scripted
// greeting.
func (f faults) Admit(rc *relayhost.Conn, c net.Conn) (net.Conn, bool) {
	s := f.s
	b := s.Behavior()
	if s.tlsMode != Implicit && s.guards(&b) {
		c = &guardConn{Conn: rc, rc: rc, s: s}
	}
	if b.StallAt == StallGreeting && s.fire(&s.stallPace, b.Stall) {
		rc.Record(func(r *Session) { r.Stalled = true })
		if !s.sleep(b.StallDuration) {
			c.Close()
			return nil, false
		}
	}
	if g := b.Greeting; g != nil {
		rc.Record(func(r *Session) { r.Greeting = g.Code })
		c.SetWriteDeadline(time.Now().Add(s.writeTimeout)) //nolint:errcheck // best effort
		fmt.Fprintf(c, "%d %d.%d.%d %s\r\n", g.Code, g.EnhancedCode[0], g.EnhancedCode[1], g.EnhancedCode[2], g.Message)
		c.Close()
		return nil, false
	}
	return c, true
}

func (f faults) AuthWithdrawn() bool        { return f.s.Behavior().NoAuth }
func (f faults) AuthReply() *smtp.SMTPError { return f.s.Behavior().AuthReply }
func (f faults) KeepAuthResponses() bool    { return f.s.Behavior().EchoAuth }

// AuthFailed quotes the client's responses in the reply (EchoAuth) and
// drops the connection (DropOnAuthFailure).
func (f faults) AuthFailed(mech string, responses [][]byte, err error) (bool, error) {
	b := f.s.Behavior()
	if se, ok := err.(*smtp.SMTPError); ok && b.EchoAuth {
		err = echo(se, mech, responses)
	}
	return b.DropOnAuthFailure, err
}

// echo returns se with the client's SASL responses appended to its text,
// base64 as sent and decoded (NULs and line breaks as spaces).
func echo(se *smtp.SMTPError, mech string, responses [][]byte) *smtp.SMTPError {
	var enc, dec []string
	for _, r := range responses {
		enc = append(enc, base64.StdEncoding.EncodeToString(r))
		dec = append(dec, strings.Map(func(r rune) rune {
			if r == 0 || r == '\r' || r == '\n' {
				return ' '
			}
			return r
		}, string(r)))
	}
	msg := fmt.Sprintf("%s for AUTH %s %s (decoded: %s)", se.Message, mech, strings.Join(enc, " "), strings.Join(dec, " "))
	return &smtp.SMTPError{Code: se.Code, EnhancedCode: se.EnhancedCode, Message: msg}
}

// Reply answers MAIL and RCPT by the rules.
func (f faults) Reply(c *relayhost.Conn, cmd string, addrs ...string) *smtp.SMTPError {
	b := f.s.Behavior()
	return rule(&b, c, cmd, addrs...)
}

// rule returns the reply of the first rule for cmd whose Contains matches
// one of addrs, or nil. A Drop rule closes the connection instead.
func rule(b *Behavior, c *relayhost.Conn, cmd string, addrs ...string) *smtp.SMTPError {
	for _, r := range b.Rules {
		if !strings.EqualFold(r.Command, cmd) {
			continue
		}
		for _, a := range addrs {
			if !strings.Contains(a, r.Contains) {
				continue
			}
			if r.Drop {
				if c != nil {
					c.Record(func(s *Session) { s.Dropped = true })
					c.Close()
				}
				return ErrServiceNotAvailable // never reaches the client
			}
			return r.Reply
		}
	}
	return nil
}

// Data stalls, drops, fails or refuses a transaction whose data was read,
// as the behaviour says, in that order.
func (f faults) Data(c *relayhost.Conn, at *relayhost.Attempt, to []string) error {
	s := f.s
	b := s.Behavior()
	if (b.StallAt == "" || b.StallAt == StallData) && s.fire(&s.stallPace, b.Stall) {
		at.Stalled = true
		c.Record(func(r *Session) { r.Stalled = true })
		if !s.sleep(b.StallDuration) {
			return ErrServiceNotAvailable
		}
	}
	if s.fire(&s.dropPace, b.DropAfterData) {
		at.Dropped = true
		if c != nil {
			c.Record(func(r *Session) { r.Dropped = true })
			c.Close()
		}
		return ErrServiceNotAvailable // never reaches the client
	}
	if s.fire(&s.failPace, b.TempFailAfterData) {
		return ErrTempFail
	}
	if err := rule(&b, c, "DATA", to...); err != nil {
		return err
	}
	return nil
}
