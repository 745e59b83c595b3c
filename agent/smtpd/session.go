package smtpd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Replies the session gives. None of them names anything internal.
var (
	errTooManyErrors = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "too many errors, closing connection"}
	errShuttingDown = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2},
		Message: "service shutting down, closing connection"}
	errIdle = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
		Message: "idle timeout, closing connection"}
	errBadHelo = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4},
		Message: "invalid HELO/EHLO name"}
	errTooManyRcpts = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3},
		Message: "too many recipients"}
	errBareLF = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "bare CR or LF in message; only CRLF line endings are accepted"}
	errLineTooLong = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 4, 0},
		Message: "line too long in message"}
	errPersist = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "temporary failure storing the message, try again later"}
	errReadTimeout = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
		Message: "timeout reading the message, closing connection"}
	errReadFailed = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 0},
		Message: "error reading the message, closing connection"}
)

// backend is the go-smtp Backend: one session per HELO/EHLO (go-smtp
// starts a new one after STARTTLS).
type backend struct{ s *Server }

var _ smtp.Backend = backend{}

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	tc := connOf(c)
	if tc == nil {
		// Every connection comes through our listener; this cannot happen.
		return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "internal error"}
	}
	sess := &session{srv: b.s, c: c, tc: tc}
	if !validHelo(c.Hostname()) {
		return nil, sess.fail(ReasonHelo, errBadHelo)
	}
	return sess, nil
}

// connOf finds our conn under go-smtp's (and under TLS after STARTTLS).
func connOf(c *smtp.Conn) *conn {
	nc := c.Conn()
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	tc, _ := nc.(*conn)
	return tc
}

// session is one go-smtp Session. Data may run on go-smtp's BDAT goroutine
// while the connection's goroutine calls Reset, hence mu.
type session struct {
	srv *Server
	c   *smtp.Conn
	tc  *conn

	mu   sync.Mutex
	from string
	to   []string
	utf8 bool // MAIL FROM said SMTPUTF8: non-ASCII addresses are allowed
}

var _ smtp.Session = (*session)(nil)

// fail counts a refusal and returns the reply for it: e, or 421 4.7.0 if
// this was the MaxErrors-th error in a row, after which the session ends.
func (s *session) fail(r Reason, e *smtp.SMTPError) error {
	s.srv.reject(r)
	if s.tc.noteError() {
		s.srv.reject(ReasonTooManyErrors)
		s.srv.log.Warn("too many errors, closing connection", "session", s.tc.id, "client", s.tc.addr.String())
		s.tc.stop(io.EOF)
		return errTooManyErrors
	}
	return e
}

// closing returns the reply for a command that go-smtp had already read
// when the session was told to end.
func (s *session) closing() error {
	if e := s.tc.stopReads.Load(); e != nil {
		switch *e {
		case io.EOF:
			return errTooManyErrors
		case os.ErrDeadlineExceeded:
			return errShuttingDown
		}
		// The read timeout conn.read recorded: this reply is the last,
		// and go-smtp's next read ends the session without another.
		eof := io.EOF
		s.tc.stopReads.Store(&eof)
		return errIdle
	}
	return nil
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if err := s.closing(); err != nil {
		return err
	}
	if !validHelo(s.c.Hostname()) { // a second EHLO does not call NewSession
		return s.fail(ReasonHelo, errBadHelo)
	}
	utf8 := opts != nil && opts.UTF8
	if from != "" {
		var e *smtp.SMTPError
		if from, e = NormalizeAddress(from, false, utf8); e != nil {
			return s.fail(ReasonAddress, e)
		}
	}
	s.mu.Lock()
	s.from, s.to, s.utf8 = from, nil, utf8
	s.mu.Unlock()
	s.tc.noteSuccess()
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := s.closing(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	addr, e := NormalizeAddress(to, true, s.utf8)
	if e != nil {
		return s.fail(ReasonAddress, e)
	}
	if slices.Contains(s.to, addr) {
		return nil // the same recipient twice gets the message once
	}
	if len(s.to) >= s.srv.opt.MaxRecipients {
		// Not an error in a row: a client with many recipients sends
		// the rest in another transaction (RFC 5321 section 4.5.3.1.10).
		s.srv.reject(ReasonRecipients)
		return errTooManyRcpts
	}
	s.to = append(s.to, addr)
	s.tc.noteSuccess()
	return nil
}

func (s *session) Data(r io.Reader) error {
	if err := s.closing(); err != nil {
		return err
	}
	if !s.tc.beginData() {
		return errShuttingDown
	}
	defer s.tc.endData()

	s.mu.Lock()
	from, to, utf8 := s.from, slices.Clone(s.to), s.utf8
	s.mu.Unlock()

	timeout := s.srv.opt.ReadTimeout
	body := &strictCRLFReader{r: r, beforeRead: func() {
		s.tc.SetReadDeadline(time.Now().Add(timeout))
	}}
	hdr := s.received(time.Now(), utf8)
	id, err := s.srv.q.Put(s.srv.ctx, from, to, io.MultiReader(strings.NewReader(hdr), body))

	if body.err != nil && body.err != io.EOF {
		if err == nil {
			s.srv.log.Error("queue stored a message whose body failed to read; it must not be delivered",
				"session", s.tc.id, "id", id, "err", body.err)
		}
		return s.bodyError(body.err)
	}
	if err != nil {
		s.srv.reject(ReasonPersist)
		s.srv.log.Error("queueing message failed, answered 451", "session", s.tc.id, "err", err)
		return errPersist
	}
	s.srv.accepted.Add(1)
	s.tc.noteSuccess()
	s.srv.log.Info("message queued", "session", s.tc.id, "id", id, "from", from, "recipients", len(to))
	return nil
}

// bodyError turns an error from reading the message into the reply.
func (s *session) bodyError(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, errBareLineEnding):
		s.srv.log.Warn("message refused: bare CR or LF", "session", s.tc.id, "client", s.tc.addr.String())
		return s.fail(ReasonBareLineEnding, errBareLF)
	case errors.Is(err, smtp.ErrDataTooLarge):
		return s.fail(ReasonSize, &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
			Message: fmt.Sprintf("message exceeds the maximum size of %d bytes", s.srv.opt.MaxMessageBytes)})
	case errors.Is(err, smtp.ErrTooLongLine):
		// go-smtp closes the session after this reply.
		return s.fail(ReasonLineTooLong, errLineTooLong)
	case errors.Is(err, smtp.ErrDataReset):
		return err // BDAT transfer aborted by RSET or the client leaving; no reply is read
	case errors.As(err, &ne) && ne.Timeout():
		s.srv.reject(ReasonReadError)
		s.srv.log.Info("client stalled during DATA, closing connection", "session", s.tc.id)
		s.tc.stop(io.EOF) // the rest of the message would be read as commands
		return errReadTimeout
	default:
		s.srv.reject(ReasonReadError)
		s.srv.log.Info("reading message failed, closing connection", "session", s.tc.id, "err", err)
		s.tc.stop(io.EOF)
		return errReadFailed
	}
}

// received returns the Received header for a message of this session.
func (s *session) received(now time.Time, utf8 bool) string {
	proto := "ESMTP"
	if utf8 {
		proto = "UTF8SMTP" // RFC 6531 section 3.7.7
	}
	if _, ok := s.c.TLSConnectionState(); ok {
		proto += "S"
	}
	ip := "unknown"
	if a := s.tc.addr; a.IsValid() {
		if a.Is4() {
			ip = "[" + a.String() + "]"
		} else {
			ip = "[IPv6:" + a.String() + "]"
		}
	}
	return fmt.Sprintf("Received: from %s (%s)\r\n\tby %s (sealrelay) with %s id %s;\r\n\t%s\r\n",
		s.c.Hostname(), ip, s.srv.opt.Hostname, proto, s.tc.id, now.Format(time.RFC1123Z))
}

func (s *session) Reset() {
	s.mu.Lock()
	s.from, s.to, s.utf8 = "", nil, false
	s.mu.Unlock()
}

func (s *session) Logout() error { return nil }
