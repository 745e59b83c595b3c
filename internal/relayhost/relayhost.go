// Package relayhost is a small, real SMTP relay host on loopback: a
// go-smtp server with its own CA, STARTTLS or implicit TLS, AUTH PLAIN
// and LOGIN against a set of accounts, and, with ClientCAs, TLS client
// certificates and AUTH EXTERNAL. `sealrelay demo` runs one as the
// relay it delivers to; the tests and the benchmark run it through
// internal/testing/upstream, which adds scripted replies and fault
// injection through the Faults hook. This package holds none of that: a
// relay host built from it alone behaves.
//
// It records what a relay host would see: per connection, whether TLS was
// used (and the client certificate's name), every AUTH attempt (mechanism, username, outcome; never the
// password) and every MAIL command with whether the connection was
// authenticated at that moment; and every accepted message. Accessors
// return copies. Counting is cheap (an atomic counter); with CountOnly no
// per-message record is kept at all, with DiscardBodies no body is kept.
//
// The package does not import "testing": the release binary links it.
package relayhost

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

// TLSMode says how the relay host offers TLS.
type TLSMode string

const (
	// StartTLS offers STARTTLS on a plaintext listener (the default).
	StartTLS TLSMode = "starttls"
	// Implicit speaks TLS from the first byte (port 465 style).
	Implicit TLSMode = "implicit"
	// NoTLS offers no TLS at all: STARTTLS is not advertised.
	NoTLS TLSMode = "none"
)

// Config sets up a relay host. The zero value is a STARTTLS relay host
// with AUTH PLAIN and LOGIN offered after TLS and no accounts.
type Config struct {
	// Addr is the listen address; default "127.0.0.1:0". Set it to restart
	// a relay host on the port a previous one used.
	Addr string
	// Hostname is the name in the greeting; default "upstream.test".
	Hostname string
	// TLS is the TLS mode; default StartTLS.
	TLS TLSMode
	// CA signs the server certificate; nil means a fresh CA. Pass the CA of
	// a previous relay host to keep a client's ca_file valid across a
	// restart.
	CA *CA
	// Certificate, if set, is served instead of one that CA issues (CA is
	// still what CAPEM returns).
	Certificate *tls.Certificate
	// ClientCAs, if set, makes the TLS handshake ask clients for a
	// certificate and verify one against these roots (a client may send
	// none; one that does not verify fails the handshake). A session with
	// a verified certificate is offered AUTH EXTERNAL, which logs it in
	// as the certificate's subject common name.
	ClientCAs *x509.CertPool
	// AllowInsecureAuth offers and accepts AUTH on a connection without TLS.
	AllowInsecureAuth bool
	// RequireAuth answers MAIL on an unauthenticated session with
	// 530 5.7.0; change it with SetRequireAuth.
	RequireAuth bool
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
	// Faults, if set, makes the relay host misbehave on purpose (see
	// Faults). Only tests set it.
	Faults Faults
}

// Errors the relay host answers with.
var (
	// ErrServiceNotAvailable is a 421 4.3.2.
	ErrServiceNotAvailable = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service not available, closing channel"}
	// ErrAuthRequired is the 530 5.7.0 of RequireAuth.
	ErrAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	// ErrEncryptionRequired answers AUTH without TLS (RFC 4954 538).
	ErrEncryptionRequired = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for requested authentication mechanism"}
)

// Server is a running relay host.
type Server struct {
	cfg     Config
	ca      *CA
	tlsConf *tls.Config
	smtp    *smtp.Server
	ln      net.Listener
	log     *slog.Logger
	faults  Faults

	requireAuth atomic.Bool
	accounts    sync.Map // username -> password

	done     chan struct{}
	closeOne sync.Once
	wg       sync.WaitGroup

	rec recorder
}

// Start starts a relay host listening on cfg.Addr (default 127.0.0.1:0).
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
	s := &Server{cfg: cfg, log: log, faults: cfg.Faults, done: make(chan struct{})}
	s.rec.init(cfg.DiscardBodies, cfg.CountOnly)
	s.requireAuth.Store(cfg.RequireAuth)
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
	cert := cfg.Certificate
	if cert == nil {
		c, err := s.ca.Issue()
		if err != nil {
			return nil, err
		}
		cert = &c
	}
	s.tlsConf = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	if cfg.ClientCAs != nil {
		s.tlsConf.ClientCAs, s.tlsConf.ClientAuth = cfg.ClientCAs, tls.VerifyClientCertIfGiven
	}

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

// Addr returns the host:port the relay host listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// CA returns the CA the client side should trust.
func (s *Server) CA() *CA { return s.ca }

// CAPEM returns the PEM of the CA the client side should trust.
func (s *Server) CAPEM() []byte { return s.ca.PEM() }

// WriteCA writes CAPEM to path, for a relay's ca_file.
func (s *Server) WriteCA(path string) error { return s.ca.WriteFile(path) }

// ClientTLSConfig returns a TLS configuration that trusts the relay
// host's CA, for clients that talk to it directly.
func (s *Server) ClientTLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// CertPool returns a pool holding the relay host's CA.
func (s *Server) CertPool() *x509.CertPool { return s.ca.Pool() }

// SetPassword sets (or adds) the account user with password pass; the next
// AUTH checks against it.
func (s *Server) SetPassword(user, pass string) { s.accounts.Store(user, pass) }

// SetRequireAuth changes Config.RequireAuth; sessions see it from their
// next MAIL on.
func (s *Server) SetRequireAuth(on bool) { s.requireAuth.Store(on) }

// Close stops listening and closes every connection.
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

// acceptLoop accepts TCP connections, wraps them for implicit TLS and for
// the faults, and hands them to go-smtp.
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

// admit hands one connection to go-smtp, through the faults' Admit.
func (s *Server) admit(rc *Conn, out chan<- net.Conn) {
	var c net.Conn = rc
	if s.cfg.TLS == Implicit {
		c = tls.Server(rc, s.tlsConf)
	}
	if s.faults != nil {
		var ok bool
		if c, ok = s.faults.Admit(rc, c); !ok {
			return
		}
	}
	select {
	case out <- c:
	case <-s.done:
		c.Close()
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

// WaitMessages waits until the relay host has accepted at least n
// messages since the last Reset. It fails, saying how many arrived, when
// timeout passes or the server is closed first.
func (s *Server) WaitMessages(n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.rec.wait(ctx, int64(n), s.done)
}
