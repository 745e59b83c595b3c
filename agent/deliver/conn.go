package deliver

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"

	gosasl "github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/deliver/sasl"
	"github.com/sealrelay/sealrelay/secrets"
)

// Stage names the step of setting up a relay connection that failed.
type Stage string

// The stages, in the order a connection goes through them.
const (
	StageConnect  Stage = "TCP connect" // dialing the relay
	StageGreeting Stage = "greeting"    // the relay's 220 (or its refusal)
	StageEHLO     Stage = "EHLO"        // EHLO, before or after TLS
	StageStartTLS Stage = "STARTTLS"    // STARTTLS missing or refused
	StageTLS      Stage = "TLS"         // handshake or certificate verification
	StageAuth     Stage = "AUTH"        // the auth policy could not be met
)

// ConnError is a failure to get a connection to a relay ready for mail.
// Deliver tries the next relay after one and reports the delivery as
// Temporary if every relay fails.
type ConnError struct {
	Stage Stage
	Err   error
}

func (e *ConnError) Error() string { return string(e.Stage) + ": " + describe(e.Err) }

// Unwrap returns the underlying error (often an *smtp.SMTPError).
func (e *ConnError) Unwrap() error { return e.Err }

// describe formats err, showing a relay reply as "535 5.7.8 text".
func describe(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) && err == error(se) {
		return reply(se)
	}
	return err.Error()
}

func reply(se *smtp.SMTPError) string {
	if se.EnhancedCode == smtp.NoEnhancedCode || se.EnhancedCode == (smtp.EnhancedCode{}) {
		return fmt.Sprintf("%d %s", se.Code, se.Message)
	}
	e := se.EnhancedCode
	return fmt.Sprintf("%d %d.%d.%d %s", se.Code, e[0], e[1], e[2], se.Message)
}

// replyError is a relay's answer to one command.
type replyError struct {
	cmd string
	err error
}

func (e *replyError) Error() string { return e.cmd + ": " + describe(e.err) }
func (e *replyError) Unwrap() error { return e.err }

// credUse says how a connection's credential relates to its session.
type credUse int

const (
	credNone        credUse = iota // AUTH was not attempted with a credential
	credUsed                       // AUTH was attempted with conn.cred
	credUnavailable                // the credential could not be read
)

// conn is one SMTP session with a relay, owned by one goroutine at a time.
type conn struct {
	r        *relay
	raw      net.Conn // the TCP connection; closing it aborts any command
	wire     net.Conn // what c writes to: raw, or TLS over it
	c        *smtp.Client
	tlsState *tls.ConnectionState // nil without TLS

	authed  bool
	mech    string
	cred    secrets.Credential
	credUse credUse

	clientCert    secrets.Credential // the client certificate the handshake showed
	clientCertUse credUse

	idleSince time.Time
	broken    bool // unusable: close, never reuse
	// inTransaction: MAIL was accepted and no reply to the data ended the
	// transaction; the connection is not pooled again.
	inTransaction bool
}

// watch closes the connection when ctx ends; call the returned function
// when the guarded work is done. It marks the connection broken if ctx
// fired.
func (cn *conn) watch(ctx context.Context) func() {
	stop := context.AfterFunc(ctx, func() { cn.raw.Close() })
	return func() {
		if !stop() {
			cn.broken = true
		}
	}
}

// fail records that err may have left the session unusable: anything but
// a relay reply means the connection is gone or out of step.
func (cn *conn) fail(err error) {
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		cn.broken = true
	}
}

// close closes the connection without QUIT.
func (cn *conn) close() {
	if cn.c != nil {
		cn.c.Close() //nolint:errcheck // closing anyway
	} else {
		cn.raw.Close()
	}
}

// quit ends the session politely if it is usable, then closes it.
func (cn *conn) quit() {
	if !cn.broken && cn.c != nil {
		cn.c.CommandTimeout = min(cn.r.cfg.CommandTimeout, 10*time.Second)
		if cn.c.Quit() == nil {
			return
		}
	}
	cn.close()
}

// dial opens a connection to the relay and brings it to the state where
// AUTH or MAIL can follow: TCP, greeting, TLS as the relay's mode says,
// EHLO. It never authenticates.
func (r *relay) dial(ctx context.Context) (*conn, error) {
	dialer := net.Dialer{Timeout: r.cfg.ConnectTimeout}
	raw, err := dialer.DialContext(ctx, "tcp", r.cfg.Address)
	if err != nil {
		return nil, &ConnError{StageConnect, err}
	}
	cn := &conn{r: r, raw: newWireConn(raw)}
	done := cn.watch(ctx)
	err = cn.handshake(ctx)
	done()
	if err == nil && cn.broken {
		err = &ConnError{StageConnect, ctx.Err()}
	}
	if err != nil {
		err = cn.refusedCertificate(err)
		cn.close()
		if ctx.Err() != nil {
			var ce *ConnError
			if errors.As(err, &ce) {
				ce.Err = fmt.Errorf("%w (%w)", ctx.Err(), ce.Err)
			}
		}
		return nil, err
	}
	return cn, nil
}

func (cn *conn) handshake(ctx context.Context) error {
	r := cn.r
	var c net.Conn = cn.raw
	deadline := func() { c.SetDeadline(time.Now().Add(r.cfg.CommandTimeout)) } //nolint:errcheck // a closed conn fails the next read

	if r.cfg.TLS == TLSImplicit {
		tc, err := cn.startTLS(ctx)
		if err != nil {
			return err
		}
		c = tc
	}

	// The greeting, and for STARTTLS the plaintext EHLO and STARTTLS, are
	// read here rather than by go-smtp's Client: its STARTTLS helper would
	// say EHLO localhost and hide which step failed.
	br := bufio.NewReader(c)
	text := textproto.NewReader(br)
	deadline()
	_, greeting, err := text.ReadResponse(220)
	if err != nil {
		return &ConnError{StageGreeting, protoErr(err)}
	}
	first, _, _ := strings.Cut(greeting, "\n")
	replay := "220 " + first + "\r\n"

	if r.cfg.TLS == TLSStartTLS {
		deadline()
		if _, err := fmt.Fprintf(c, "EHLO %s\r\n", r.d.hostname); err != nil {
			return &ConnError{StageEHLO, err}
		}
		_, ehlo, err := text.ReadResponse(250)
		if err != nil {
			return &ConnError{StageEHLO, protoErr(err)}
		}
		if !hasExtension(ehlo, "STARTTLS") {
			r.d.st.tlsFailures.Add(1)
			return &ConnError{StageStartTLS, errors.New(`not offered by the relay, and tls = "starttls" requires it`)}
		}
		deadline()
		if _, err := io.WriteString(c, "STARTTLS\r\n"); err != nil {
			return &ConnError{StageStartTLS, err}
		}
		if _, _, err := text.ReadResponse(220); err != nil {
			r.d.st.tlsFailures.Add(1)
			return &ConnError{StageStartTLS, protoErr(err)}
		}
		if br.Buffered() > 0 {
			r.d.st.tlsFailures.Add(1)
			return &ConnError{StageStartTLS, errors.New("the relay sent data after its STARTTLS reply (possible command injection)")}
		}
		tc, err := cn.startTLS(ctx)
		if err != nil {
			return err
		}
		c = tc
		replay = "220 " + r.cfg.Name + " (TLS established)\r\n"
	} else if n := br.Buffered(); n > 0 {
		extra, _ := br.Peek(n) //nolint:errcheck // n bytes are buffered
		replay += string(extra)
	}
	c.SetDeadline(time.Time{}) //nolint:errcheck // see deadline

	cn.wire = c
	cl := smtp.NewClient(&replayConn{Conn: c, pending: []byte(replay)})
	cl.CommandTimeout = r.cfg.CommandTimeout
	cl.SubmissionTimeout = 2 * r.cfg.CommandTimeout
	cn.c = cl
	if err := cl.Hello(r.d.hostname); err != nil {
		return &ConnError{StageEHLO, err}
	}
	return nil
}

// startTLS runs the TLS handshake on the raw connection.
func (cn *conn) startTLS(ctx context.Context) (*tls.Conn, error) {
	r := cn.r
	tc := tls.Client(cn.raw, cn.tlsConfig())
	cn.raw.SetDeadline(time.Now().Add(r.cfg.CommandTimeout)) //nolint:errcheck // a closed conn fails the handshake
	if err := tc.HandshakeContext(ctx); err != nil {
		r.d.st.tlsFailures.Add(1)
		var verr *tls.CertificateVerificationError
		if errors.As(err, &verr) {
			return nil, &ConnError{StageTLS, fmt.Errorf("certificate verification failed for %q: %w", r.tlsConf.ServerName, verr.Err)}
		}
		return nil, &ConnError{StageTLS, fmt.Errorf("handshake failed: %w", err)}
	}
	st := tc.ConnectionState()
	cn.tlsState = &st
	return tc, nil
}

// hasExtension reports whether an EHLO reply (lines joined by "\n", the
// first being the greeting line) lists ext.
func hasExtension(ehlo, ext string) bool {
	lines := strings.Split(ehlo, "\n")
	for _, l := range lines[1:] {
		name, _, _ := strings.Cut(strings.TrimSpace(l), " ")
		if strings.EqualFold(name, ext) {
			return true
		}
	}
	return false
}

// protoErr turns a textproto reply error into an *smtp.SMTPError.
func protoErr(err error) error {
	var pe *textproto.Error
	if !errors.As(err, &pe) {
		return err
	}
	se := &smtp.SMTPError{Code: pe.Code, EnhancedCode: smtp.NoEnhancedCode, Message: strings.ReplaceAll(pe.Msg, "\n", " ")}
	if code, rest, ok := strings.Cut(pe.Msg, " "); ok {
		var e smtp.EnhancedCode
		if n, _ := fmt.Sscanf(code, "%d.%d.%d", &e[0], &e[1], &e[2]); n == 3 {
			se.EnhancedCode, se.Message = e, strings.ReplaceAll(rest, "\n", " ")
		}
	}
	return se
}

// replayConn gives go-smtp's Client a greeting that was already read (and,
// after STARTTLS, stands in for the one a server does not send again).
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// establishment is what setting up a connection found, for Check.
type establishment struct {
	fallback error // AuthEnabled went on without AUTH because of this
}

// establish returns a connection ready for MAIL under the relay's auth
// policy, or a *ConnError.
func (r *relay) establish(ctx context.Context) (*conn, establishment, error) {
	var est establishment
	cn, err := r.dial(ctx)
	if err != nil || r.cfg.Auth == AuthDisabled {
		return cn, est, err
	}
	err = r.authenticate(ctx, &cn)
	if err == nil {
		return cn, est, nil
	}
	if r.cfg.Auth == AuthRequired {
		if cn != nil {
			cn.quit()
		}
		return nil, est, err
	}
	// AuthEnabled: go on without AUTH, on a fresh session if this one is
	// unusable.
	est.fallback = err
	if cn == nil || cn.broken {
		if cn != nil {
			cn.close()
		}
		if cn, err = r.dial(ctx); err != nil {
			return nil, est, err
		}
	}
	return cn, est, nil
}

// authenticate runs AUTH on *cnp. After a 535 it refreshes the credential
// once and, if that gave a different secret, retries once, on the same
// session if it is still usable, else on a new one (which replaces *cnp,
// and may leave it nil if the new one fails).
func (r *relay) authenticate(ctx context.Context, cnp **conn) error {
	cn := *cnp
	name := r.cfg.authCredential()
	cred, err := r.d.creds.Get(name)
	if err != nil {
		cn.credUse = credUnavailable
		return &ConnError{StageAuth, fmt.Errorf("not attempted: %w", err)}
	}
	if cred.Kind() == secrets.KindOAuth2 {
		return r.authenticateBearer(ctx, cnp, cred)
	}
	for retried := false; ; retried = true {
		mech, err := r.canAuth(cn, cred)
		if err != nil {
			return err
		}
		err = cn.auth(ctx, mech, cred)
		if err == nil {
			return nil
		}
		if retried {
			return &ConnError{StageAuth, fmt.Errorf("%w (after refreshing credential %q)", err, name)}
		}
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 535 {
			return &ConnError{StageAuth, err}
		}
		fresh, rerr := r.d.creds.Refresh(ctx, name, cred)
		if rerr != nil {
			return &ConnError{StageAuth, fmt.Errorf("%w; refreshing credential %q failed: %w", err, name, rerr)}
		}
		if fresh.SameSecret(cred) {
			return &ConnError{StageAuth, fmt.Errorf("%w; credential %q has no newer secret in its source", err, name)}
		}
		r.d.st.authRetries.Add(1)
		r.d.log.Info("relay rejected the credential; retrying with the refreshed one",
			"relay", r.cfg.Name, "credential", name, "username", fresh.Username, "version", fresh.Version)
		cred = fresh
		if cn.broken || certificateKind(fresh) {
			cn.quit()
			*cnp = nil
			if cn, err = r.dial(ctx); err != nil {
				return err
			}
			*cnp = cn
		}
	}
}

// canAuth checks that AUTH may and can be sent on cn, and picks the
// mechanism for cred.
func (r *relay) canAuth(cn *conn, cred secrets.Credential) (string, error) {
	if cn.tlsState == nil && !r.cfg.AllowPlaintextAuth {
		return "", &ConnError{StageAuth, errors.New("not sent: the connection has no TLS and allow_plaintext_auth is off")}
	}
	if ok, _ := cn.c.Extension("AUTH"); !ok {
		return "", &ConnError{StageAuth, errors.New("not offered by the relay")}
	}
	mech, err := r.chooseMech(cn, cred)
	if err != nil {
		return "", &ConnError{StageAuth, err}
	}
	return mech, nil
}

// auth runs one AUTH exchange with cred.
func (cn *conn) auth(ctx context.Context, mech string, cred secrets.Credential) error {
	client, err := saslClient(mech, cred)
	if err != nil {
		return err
	}
	return cn.exchange(ctx, mech, cred, client)
}

// exchange runs AUTH with client, which speaks mech with cred's secret.
func (cn *conn) exchange(ctx context.Context, mech string, cred secrets.Credential, client gosasl.Client) error {
	cn.mech, cn.cred, cn.credUse = mech, cred, credUsed
	done := cn.watch(ctx)
	err := cn.c.Auth(client)
	done()
	if err == nil {
		// SCRAM: the relay must have proved it knows the password.
		if err = sasl.Verify(client); err != nil {
			cn.broken = true
		}
	}
	if err != nil {
		cn.fail(err)
		cn.r.d.st.authFailures.Add(1)
		return &replyError{cmd: authAs(mech, cred) + " rejected", err: withholdText(err)}
	}
	cn.authed = true
	cn.r.d.st.authOK.Add(1)
	return nil
}

// withholdText replaces the text of a relay's reply to AUTH with a fixed
// description of its code. Some relays quote what the client sent in that
// text (the base64 PLAIN or LOGIN payload, or its decoded form), and the
// text travels far: the log, the spool's last error, `queue list`, `check`
// and the DSN to the sender. The code and the enhanced code are kept.
// Other errors (network, SASL, base64) are built by Go and the SASL client
// from fixed strings and never hold a payload or a challenge.
func withholdText(err error) error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return err
	}
	return &smtp.SMTPError{Code: se.Code, EnhancedCode: se.EnhancedCode, Message: authReplyText(se.Code) + " (relay's text withheld)"}
}

// authReplyText describes a reply code to AUTH (RFC 4954 section 6, RFC
// 5321).
func authReplyText(code int) string {
	switch code {
	case 432:
		return "a password transition is needed"
	case 454:
		return "temporary authentication failure"
	case 500:
		return "authentication exchange line too long, or command not recognized"
	case 501:
		return "syntax error in the authentication exchange"
	case 502:
		return "AUTH not implemented"
	case 503:
		return "AUTH out of sequence"
	case 504:
		return "unrecognized authentication mechanism"
	case 530:
		return "authentication required"
	case 534:
		return "authentication mechanism is too weak"
	case 535:
		return "authentication credentials invalid"
	case 538:
		return "encryption required for the requested authentication mechanism"
	}
	if code >= 400 && code < 500 {
		return "authentication failed temporarily"
	}
	return "authentication refused"
}
