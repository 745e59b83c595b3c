package relayhost

import (
	"bufio"
	"bytes"
	"crypto/tls"
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
	if tc, ok := raw.(*tls.Conn); ok {
		sess.tls = true
		if st := tc.ConnectionState(); len(st.VerifiedChains) > 0 {
			sess.certCN = st.PeerCertificates[0].Subject.CommonName
		}
	}
	if rc := recConnOf(raw); rc != nil {
		sess.rc = rc
		sess.id = rc.id
	}
	helo := c.Hostname()
	b.s.rec.update(sess.id, func(r *Session) {
		r.Helo = helo
		r.TLS = r.TLS || sess.tls
		if sess.certCN != "" {
			r.ClientCert = sess.certCN
		}
	})
	return sess, nil
}

// session is one go-smtp session (one per connection, renewed by STARTTLS).
type session struct {
	s    *Server
	conn *smtp.Conn
	rc   *Conn
	id   int
	tls  bool
	// certCN is the subject common name of the client's verified
	// certificate, "" for none.
	certCN string

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

// authWithdrawn reports whether the faults withdraw AUTH.
func (ss *session) authWithdrawn() bool {
	return ss.s.faults != nil && ss.s.faults.AuthWithdrawn()
}

func (ss *session) AuthMechanisms() []string {
	if ss.authWithdrawn() || !ss.authAllowed() {
		return nil
	}
	if ss.certCN != "" {
		return []string{sasl.Plain, sasl.Login, sasl.External}
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	a := &authRecorder{ss: ss, attempt: AuthAttempt{Mechanism: mech, TLS: ss.tls}}
	switch {
	case ss.authWithdrawn():
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
	case sasl.External:
		a.inner = sasl.NewExternalServer(func(identity string) error {
			a.attempt.Username = ss.certCN
			return ss.external(identity)
		})
	default:
		return nil, a.finish(smtp.ErrAuthUnknownMechanism)
	}
	return a, nil
}

// check verifies a username and password, unless the faults force the
// AUTH reply.
func (ss *session) check(username, password string) error {
	if f := ss.s.faults; f != nil {
		if r := f.AuthReply(); r != nil {
			return r
		}
	}
	want, ok := ss.s.accounts.Load(username)
	if !ok || want.(string) != password {
		return smtp.ErrAuthFailed
	}
	ss.user = username
	return nil
}

// external logs in as the client certificate's common name, unless the
// faults force the AUTH reply: with no certificate, or an authorization
// identity other than that name, the login fails.
func (ss *session) external(identity string) error {
	if f := ss.s.faults; f != nil {
		if r := f.AuthReply(); r != nil {
			return r
		}
	}
	if ss.certCN == "" || (identity != "" && identity != ss.certCN) {
		return smtp.ErrAuthFailed
	}
	ss.user = ss.certCN
	return nil
}

// authRecorder wraps a SASL server to record the attempt when it ends.
type authRecorder struct {
	ss      *session
	inner   sasl.Server
	attempt AuthAttempt
	done    bool
	// responses are what the client sent, kept only when the faults ask
	// for them (Faults.KeepAuthResponses) and never recorded.
	responses [][]byte
}

func (a *authRecorder) Next(response []byte) ([]byte, bool, error) {
	if f := a.ss.s.faults; response != nil && f != nil && f.KeepAuthResponses() {
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
	drop := false
	if f := a.ss.s.faults; err != nil && f != nil {
		drop, err = f.AuthFailed(a.attempt.Mechanism, a.responses, err)
		drop = drop && a.ss.rc != nil
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
	a.ss.s.rec.update(a.ss.id, func(r *Session) {
		r.Auths = append(r.Auths, at)
		r.Dropped = r.Dropped || drop
	})
	if drop {
		a.ss.rc.Close()
	}
	return err
}

// reply returns the faults' reply to cmd for one of addrs, or nil.
func (ss *session) reply(cmd string, addrs ...string) *smtp.SMTPError {
	if ss.s.faults == nil {
		return nil
	}
	return ss.s.faults.Reply(ss.rc, cmd, addrs...)
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	mc := MailCommand{From: from, Authenticated: ss.user != "", Username: ss.user, TLS: ss.tls, Code: 250}
	var err *smtp.SMTPError
	switch {
	case ss.s.requireAuth.Load() && ss.user == "":
		err = ErrAuthRequired
	default:
		err = ss.reply("MAIL", from)
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
	if err := ss.reply("RCPT", to); err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) (reply error) {
	ss.inData = true
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

	if f := ss.s.faults; f != nil {
		if err := f.Data(ss.rc, &at, ss.to); err != nil {
			return err
		}
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
