package upstream

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

type backend struct{ s *Server }

// NewSession is called at the first EHLO, and again after STARTTLS.
func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	sess := &session{s: b.s, conn: c}
	raw := c.Conn()
	if _, ok := raw.(*tls.Conn); ok {
		sess.tls = true
	}
	if rc := recConnOf(raw); rc != nil {
		sess.rc = rc
		sess.id = rc.id
	}
	helo := c.Hostname()
	b.s.rec.update(sess.id, func(r *Session) {
		r.Helo = helo
		r.TLS = r.TLS || sess.tls
	})
	return sess, nil
}

// session is one go-smtp session (one per connection, renewed by STARTTLS).
type session struct {
	s    *Server
	conn *smtp.Conn
	rc   *recConn
	id   int
	tls  bool

	user   string // authenticated username, "" if none
	from   string
	to     []string
	inData bool // a Reset right after Data is go-smtp's own, not RSET
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

func (ss *session) authAllowed() bool { return ss.tls || ss.s.cfg.AllowInsecureAuth }

func (ss *session) AuthMechanisms() []string {
	if ss.s.Behavior().NoAuth || !ss.authAllowed() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	b := ss.s.Behavior()
	a := &authRecorder{ss: ss, attempt: AuthAttempt{Mechanism: mech, TLS: ss.tls}}
	switch {
	case b.NoAuth:
		return nil, a.finish(smtp.ErrAuthUnsupported)
	case !ss.authAllowed():
		return nil, a.finish(ErrEncryptionRequired)
	}
	switch mech {
	case sasl.Plain:
		a.inner = sasl.NewPlainServer(func(identity, username, password string) error {
			a.attempt.Username = username
			if identity != "" && identity != username {
				return smtp.ErrAuthFailed
			}
			return ss.check(username, password)
		})
	case sasl.Login:
		a.inner = &loginServer{authenticate: func(username, password string) error {
			a.attempt.Username = username
			return ss.check(username, password)
		}}
	default:
		return nil, a.finish(smtp.ErrAuthUnknownMechanism)
	}
	return a, nil
}

// check verifies a username and password, unless the behaviour forces
// the AUTH reply.
func (ss *session) check(username, password string) error {
	if r := ss.s.Behavior().AuthReply; r != nil {
		return r
	}
	want, ok := ss.s.accounts.Load(username)
	if !ok || want.(string) != password {
		return smtp.ErrAuthFailed
	}
	ss.user = username
	return nil
}

// authRecorder wraps a SASL server to record the attempt when it ends.
type authRecorder struct {
	ss      *session
	inner   sasl.Server
	attempt AuthAttempt
	done    bool
	// responses are what the client sent, kept only for Behavior.EchoAuth
	// and never recorded.
	responses [][]byte
}

func (a *authRecorder) Next(response []byte) ([]byte, bool, error) {
	if response != nil && a.ss.s.Behavior().EchoAuth {
		a.responses = append(a.responses, bytes.Clone(response))
	}
	challenge, done, err := a.inner.Next(response)
	if err != nil || done {
		err = a.finish(err)
	}
	return challenge, done, err
}

// finish records the attempt with the outcome err and returns err.
func (a *authRecorder) finish(err error) error {
	if a.done {
		return err
	}
	a.done = true
	if se, ok := err.(*smtp.SMTPError); ok && a.ss.s.Behavior().EchoAuth {
		err = a.echo(se)
	}
	a.attempt.OK = err == nil
	switch e := err.(type) {
	case nil:
		a.attempt.Code = 235
	case *smtp.SMTPError:
		a.attempt.Code = e.Code
	default:
		a.attempt.Code = 454 // go-smtp's answer to a non-SMTP error
	}
	at := a.attempt
	drop := err != nil && a.ss.s.Behavior().DropOnAuthFailure && a.ss.rc != nil
	a.ss.s.rec.update(a.ss.id, func(r *Session) {
		r.Auths = append(r.Auths, at)
		r.Dropped = r.Dropped || drop
	})
	if drop {
		a.ss.rc.Close()
	}
	return err
}

// echo returns se with the client's SASL responses appended to its text,
// base64 as sent and decoded (NULs and line breaks as spaces).
func (a *authRecorder) echo(se *smtp.SMTPError) *smtp.SMTPError {
	var enc, dec []string
	for _, r := range a.responses {
		enc = append(enc, base64.StdEncoding.EncodeToString(r))
		dec = append(dec, strings.Map(func(r rune) rune {
			if r == 0 || r == '\r' || r == '\n' {
				return ' '
			}
			return r
		}, string(r)))
	}
	msg := fmt.Sprintf("%s for AUTH %s %s (decoded: %s)", se.Message, a.attempt.Mechanism, strings.Join(enc, " "), strings.Join(dec, " "))
	return &smtp.SMTPError{Code: se.Code, EnhancedCode: se.EnhancedCode, Message: msg}
}

// rule returns the reply of the first rule for cmd whose Contains matches
// one of addrs, or nil. A Drop rule closes the connection instead.
func (ss *session) rule(b *Behavior, cmd string, addrs ...string) *smtp.SMTPError {
	for _, r := range b.Rules {
		if !strings.EqualFold(r.Command, cmd) {
			continue
		}
		for _, a := range addrs {
			if !strings.Contains(a, r.Contains) {
				continue
			}
			if r.Drop {
				ss.s.rec.update(ss.id, func(s *Session) { s.Dropped = true })
				if ss.rc != nil {
					ss.rc.Close()
				}
				return ErrServiceNotAvailable // never reaches the client
			}
			return r.Reply
		}
	}
	return nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	b := ss.s.Behavior()
	mc := MailCommand{From: from, Authenticated: ss.user != "", Username: ss.user, TLS: ss.tls, Code: 250}
	var err *smtp.SMTPError
	switch {
	case b.RequireAuth && ss.user == "":
		err = ErrAuthRequired
	default:
		err = ss.rule(&b, "MAIL", from)
	}
	if err != nil {
		mc.Code = err.Code
	}
	ss.s.rec.update(ss.id, func(r *Session) { r.Mails = append(r.Mails, mc) })
	if err != nil {
		return err
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	b := ss.s.Behavior()
	if err := ss.rule(&b, "RCPT", to); err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) (reply error) {
	ss.inData = true
	b := ss.s.Behavior()
	m := Message{Session: ss.id, From: ss.from, To: ss.to, Username: ss.user, TLS: ss.tls}
	cr := &countReader{r: r}
	var err error
	switch {
	case ss.s.cfg.CountOnly:
		_, err = io.Copy(io.Discard, cr)
	case ss.s.cfg.DiscardBodies:
		br := bufio.NewReader(cr)
		m.MessageID = messageID(br)
		_, err = io.Copy(io.Discard, br)
	default:
		m.Data, err = io.ReadAll(cr)
		m.MessageID = messageID(bufio.NewReader(bytes.NewReader(m.Data)))
	}
	if err != nil {
		return err
	}
	m.Size = cr.n
	at := Attempt{Session: ss.id, MessageID: m.MessageID, Time: time.Now()}
	if !ss.s.cfg.CountOnly {
		defer func() { ss.s.rec.attempts.add(at, reply) }()
	}

	if (b.StallAt == "" || b.StallAt == StallData) && ss.s.rec.fire(&ss.s.rec.stallPace, b.Stall) {
		at.Stalled = true
		ss.s.rec.update(ss.id, func(r *Session) { r.Stalled = true })
		if !ss.s.sleep(b.StallDuration) {
			return ErrServiceNotAvailable
		}
	}
	if ss.s.rec.fire(&ss.s.rec.dropPace, b.DropAfterData) {
		at.Dropped = true
		ss.s.rec.update(ss.id, func(r *Session) { r.Dropped = true })
		if ss.rc != nil {
			ss.rc.Close()
		}
		return ErrServiceNotAvailable // never reaches the client
	}
	if ss.s.rec.fire(&ss.s.rec.failPace, b.TempFailAfterData) {
		return ErrTempFail
	}
	if err := ss.rule(&b, "DATA", ss.to...); err != nil {
		return err
	}
	m.Time = time.Now()
	ss.s.rec.addMessage(m)
	return nil
}

// Reset is called for RSET, for a repeated EHLO, and by go-smtp itself
// after every DATA; only the first two are counted.
func (ss *session) Reset() {
	if ss.inData {
		ss.inData = false
	} else {
		ss.s.rec.update(ss.id, func(r *Session) { r.Resets++ })
	}
	ss.from, ss.to = "", nil
}

func (ss *session) Logout() error { return nil }

// messageID reads a message header and returns its Message-ID value.
func messageID(br *bufio.Reader) string {
	h, _ := textproto.NewReader(br).ReadMIMEHeader() //nolint:errcheck // a partial header is fine
	return strings.TrimSpace(h.Get("Message-Id"))
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
