// Package upstream is a real SMTP relay host for tests, for `sealrelay demo`
// and for the benchmark: a go-smtp server on loopback with its own CA,
// STARTTLS or implicit TLS, AUTH PLAIN and LOGIN, scriptable replies and
// fault injection.
//
// It records what a relay host would see: per connection, whether TLS was
// used, every AUTH attempt (mechanism, username, outcome; never the
// password) and every MAIL command with whether the connection was
// authenticated at that moment; and every accepted message. Accessors
// return copies. Counting is cheap (an atomic counter); with CountOnly no
// per-message record is kept at all, with DiscardBodies no body is kept.
//
// The package does not import "testing": it is a library that tests, the
// CLI and the benchmark share.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// TLSMode says how the upstream offers TLS.
type TLSMode string

const (
	// StartTLS offers STARTTLS on a plaintext listener (the default).
	StartTLS TLSMode = "starttls"
	// Implicit speaks TLS from the first byte (port 465 style).
	Implicit TLSMode = "implicit"
	// NoTLS offers no TLS at all: STARTTLS is not advertised.
	NoTLS TLSMode = "none"
)

// StallPoint says where a stalled session waits.
type StallPoint string

const (
	// StallData waits after reading the message, before the reply to DATA
	// (the default).
	StallData StallPoint = "data"
	// StallGreeting waits before sending the greeting.
	StallGreeting StallPoint = "greeting"
)

// Config sets up an upstream. The zero value is a STARTTLS upstream with
// AUTH PLAIN and LOGIN offered after TLS and no accounts.
type Config struct {
	// Addr is the listen address; default "127.0.0.1:0". Set it to restart
	// an upstream on the port a previous one used.
	Addr string
	// Hostname is the name in the greeting; default "upstream.test".
	Hostname string
	// TLS is the TLS mode; default StartTLS.
	TLS TLSMode
	// CA signs the server certificate; nil means a fresh CA. Pass the CA of
	// a previous upstream to keep a client's ca_file valid across a restart.
	CA *CA
	// UntrustedCert serves a certificate signed by a second, fresh CA that
	// CAPEM does not return, so a client trusting CAPEM fails verification.
	UntrustedCert bool
	// AllowInsecureAuth offers and accepts AUTH on a connection without TLS.
	AllowInsecureAuth bool
	// Accounts maps usernames to passwords; change them with SetPassword.
	Accounts map[string]string
	// DiscardBodies keeps message records without their data.
	DiscardBodies bool
	// CountOnly keeps no message records at all, only the count (for the
	// benchmark). Sessions are still recorded.
	CountOnly bool
	// SMTPUTF8 offers the SMTPUTF8 extension (RFC 6531): UTF-8 addresses
	// in transactions that ask for it.
	SMTPUTF8 bool
	// MaxMessageBytes is the SIZE limit; default 64 MiB.
	MaxMessageBytes int64
	// ReadTimeout and WriteTimeout bound each command; default 1 minute.
	ReadTimeout, WriteTimeout time.Duration
	// Logger receives go-smtp's internal errors at Debug level; default
	// discards them.
	Logger *slog.Logger

	// Behavior is the initial scriptable behaviour; change it with
	// SetBehavior while the server runs.
	Behavior Behavior
}

// Rule scripts the reply to one command for matching addresses.
type Rule struct {
	// Command is "MAIL", "RCPT" or "DATA".
	Command string
	// Contains matches the sender (MAIL), the recipient (RCPT) or any
	// accepted recipient (DATA) that contains it; "" matches all.
	Contains string
	// Reply is sent instead of the normal success.
	Reply *smtp.SMTPError
	// Drop closes the connection instead of replying.
	Drop bool
}

// Behavior is what the upstream does, settable at run time.
type Behavior struct {
	// Greeting, if set, is sent instead of the 220 greeting, and the
	// connection is closed (e.g. 421 or 554).
	Greeting *smtp.SMTPError
	// NoAuth stops offering AUTH; an AUTH command is still recorded and
	// answered 502.
	NoAuth bool
	// RequireAuth answers MAIL on an unauthenticated session with
	// 530 5.7.0.
	RequireAuth bool
	// AuthReply, if set, answers every AUTH with it (535 or 454, say)
	// whatever the credentials.
	AuthReply *smtp.SMTPError
	// DropOnAuthFailure closes the connection instead of answering a
	// failed AUTH, leaving the client's session unusable.
	DropOnAuthFailure bool
	// EchoAuth makes a failed AUTH's reply quote what the client sent, as
	// some relays do: each SASL response, base64 as sent, then decoded
	// ("535 5.7.8 ... for AUTH PLAIN AHVzZXIAcGFzcw== (decoded: user
	// pass)"). It tests that the client keeps such replies to itself.
	EchoAuth bool
	// EHLOReply, if set, answers every EHLO and HELO with it (a 5xx, say).
	// RejectRepeatedHelo answers an EHLO or HELO after the first on a
	// session with ErrAlreadyIdentified, as OpenSMTPD does. STARTTLSReply,
	// if set, answers STARTTLS with it. These three read the plaintext
	// stream: they see nothing under TLS (after STARTTLS, or implicit), and
	// apply to connections made after they are set.
	EHLOReply          *smtp.SMTPError
	RejectRepeatedHelo bool
	STARTTLSReply      *smtp.SMTPError
	// Rules script replies; the first match for a command wins.
	Rules []Rule
	// TempFailAfterData answers this fraction (0..1) of transactions
	// 451 4.3.0 after their data; the message is not kept.
	TempFailAfterData float64
	// DropAfterData closes this fraction of connections right after the
	// data, before any reply; the message is not kept.
	DropAfterData float64
	// Stall makes this fraction of sessions (greeting) or transactions
	// (data) wait StallDuration at StallAt. Close ends every stall.
	Stall         float64
	StallDuration time.Duration
	StallAt       StallPoint
}

// Errors that the behaviour fields commonly use.
var (
	// ErrRejectRcpt is a 550 5.1.1 for a RCPT rule.
	ErrRejectRcpt = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	// ErrTempFail is the 451 4.3.0 of TempFailAfterData.
	ErrTempFail = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure, try again later"}
	// ErrServiceNotAvailable is a 421 4.3.2 greeting.
	ErrServiceNotAvailable = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service not available, closing channel"}
	// ErrAuthRequired is the 530 5.7.0 of RequireAuth.
	ErrAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	// ErrAuthTemporary is a 454 4.7.0 for AuthReply.
	ErrAuthTemporary = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	// ErrAlreadyIdentified is OpenSMTPD's answer to a second EHLO, for
	// RejectRepeatedHelo.
	ErrAlreadyIdentified = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Invalid command: Already identified"}
	// ErrEncryptionRequired answers AUTH without TLS (RFC 4954 538).
	ErrEncryptionRequired = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for requested authentication mechanism"}
)

// Server is a running upstream.
type Server struct {
	cfg     Config
	ca      *CA
	tlsConf *tls.Config
	smtp    *smtp.Server
	ln      net.Listener
	log     *slog.Logger

	behavior atomic.Pointer[Behavior]
	accounts sync.Map // username -> password

	done     chan struct{}
	closeOne sync.Once
	wg       sync.WaitGroup

	rec recorder
}

// Start starts an upstream listening on cfg.Addr (default 127.0.0.1:0).
func Start(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "upstream.test"
	}
	if cfg.TLS == "" {
		cfg.TLS = StartTLS
	}
	switch cfg.TLS {
	case StartTLS, Implicit, NoTLS:
	default:
		return nil, fmt.Errorf("upstream: unknown TLS mode %q", cfg.TLS)
	}
	if cfg.Behavior.RejectRepeatedHelo && cfg.TLS != NoTLS {
		return nil, errors.New("upstream: RejectRepeatedHelo needs TLS = NoTLS: it reads the plaintext stream")
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 64 << 20
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = time.Minute
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, done: make(chan struct{})}
	s.rec.init(cfg.DiscardBodies, cfg.CountOnly)
	b := cfg.Behavior
	s.behavior.Store(&b)
	for u, p := range cfg.Accounts {
		s.accounts.Store(u, p)
	}

	var err error
	s.ca = cfg.CA
	if s.ca == nil {
		if s.ca, err = NewCA("sealrelay test upstream CA"); err != nil {
			return nil, err
		}
	}
	issuer := s.ca
	if cfg.UntrustedCert {
		if issuer, err = NewCA("sealrelay untrusted CA"); err != nil {
			return nil, err
		}
	}
	cert, err := issuer.Issue()
	if err != nil {
		return nil, err
	}
	s.tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("upstream: listen on %s: %w", cfg.Addr, err)
	}
	s.ln = ln

	srv := smtp.NewServer(backend{s})
	srv.Domain = cfg.Hostname
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = 1000
	srv.EnableSMTPUTF8 = cfg.SMTPUTF8
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	// The session enforces TLS before AUTH itself, so that an AUTH sent in
	// the clear is recorded rather than refused unseen by go-smtp.
	srv.AllowInsecureAuth = true
	srv.ErrorLog = errorLog{log}
	if cfg.TLS == StartTLS {
		srv.TLSConfig = s.tlsConf
	}
	s.smtp = srv

	conns := make(chan net.Conn)
	s.wg.Add(2)
	go s.acceptLoop(conns)
	go func() {
		defer s.wg.Done()
		srv.Serve(&chanListener{conns: conns, done: s.done, addr: ln.Addr()}) //nolint:errcheck // ends at Close
	}()
	return s, nil
}

// Addr returns the host:port the upstream listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// CA returns the CA the client side should trust.
func (s *Server) CA() *CA { return s.ca }

// CAPEM returns the PEM of the CA the client side should trust.
func (s *Server) CAPEM() []byte { return s.ca.PEM() }

// WriteCA writes CAPEM to path, for a relay's ca_file.
func (s *Server) WriteCA(path string) error { return s.ca.WriteFile(path) }

// ClientTLSConfig returns a TLS configuration that trusts the upstream's CA,
// for clients that talk to it directly.
func (s *Server) ClientTLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// CertPool returns a pool holding the upstream's CA.
func (s *Server) CertPool() *x509.CertPool { return s.ca.Pool() }

// SetPassword sets (or adds) the account user with password pass; the next
// AUTH checks against it.
func (s *Server) SetPassword(user, pass string) { s.accounts.Store(user, pass) }

// Behavior returns the current behaviour.
func (s *Server) Behavior() Behavior { return *s.behavior.Load() }

// SetBehavior replaces the behaviour; sessions see it from their next
// command on.
func (s *Server) SetBehavior(b Behavior) { s.behavior.Store(&b) }

// UpdateBehavior changes the behaviour with f.
func (s *Server) UpdateBehavior(f func(*Behavior)) {
	b := s.Behavior()
	f(&b)
	s.SetBehavior(b)
}

// Close stops listening, closes every connection and ends every stall.
func (s *Server) Close() error {
	var err error
	s.closeOne.Do(func() {
		close(s.done)
		err = s.ln.Close()
		s.smtp.Close() //nolint:errcheck // closes our chanListener, already ending
		s.wg.Wait()
	})
	return err
}

// acceptLoop accepts TCP connections, applies the greeting faults and the
// implicit TLS wrapping, and hands the connections to go-smtp.
func (s *Server) acceptLoop(out chan<- net.Conn) {
	defer s.wg.Done()
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Debug("upstream accept failed", "err", err)
			return
		}
		rc := s.rec.track(raw)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.admit(rc, out)
		}()
	}
}

// admit applies the greeting-time behaviour to one connection.
func (s *Server) admit(rc *recConn, out chan<- net.Conn) {
	b := s.Behavior()
	var c net.Conn = rc
	if s.cfg.TLS == Implicit {
		c = tls.Server(rc, s.tlsConf)
	} else if s.guards(&b) {
		c = &guardConn{Conn: rc, rc: rc, s: s}
	}
	if b.StallAt == StallGreeting && s.rec.fire(&s.rec.stallPace, b.Stall) {
		s.rec.update(rc.id, func(r *Session) { r.Stalled = true })
		if !s.sleep(b.StallDuration) {
			c.Close()
			return
		}
	}
	if g := b.Greeting; g != nil {
		s.rec.update(rc.id, func(r *Session) { r.Greeting = g.Code })
		c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)) //nolint:errcheck // best effort
		fmt.Fprintf(c, "%d %d.%d.%d %s\r\n", g.Code, g.EnhancedCode[0], g.EnhancedCode[1], g.EnhancedCode[2], g.Message)
		c.Close()
		return
	}
	select {
	case out <- c:
	case <-s.done:
		c.Close()
	}
}

// sleep waits d or until Close; it reports whether the server still runs.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// chanListener is the net.Listener go-smtp serves: it yields the
// connections acceptLoop admitted.
type chanListener struct {
	conns <-chan net.Conn
	done  <-chan struct{}
	addr  net.Addr
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// errorLog hands go-smtp's internal errors to slog at Debug level.
type errorLog struct{ log *slog.Logger }

func (e errorLog) Printf(format string, v ...any) {
	e.log.Debug("upstream smtp server", "msg", fmt.Sprintf(format, v...))
}

func (e errorLog) Println(v ...any) {
	e.log.Debug("upstream smtp server", "msg", fmt.Sprint(v...))
}

// WaitMessages waits until the upstream has accepted at least n messages
// since the last Reset. It fails, saying how many arrived, when timeout
// passes or the server is closed first.
func (s *Server) WaitMessages(n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.rec.wait(ctx, int64(n), s.done)
}
