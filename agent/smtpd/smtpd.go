// Package smtpd holds sealrelay's inbound SMTP listener: a go-smtp server
// that accepts mail from local applications and hands each message to a
// Queue.
//
// What it promises:
//   - Only clients in AllowedNetworks can send. Any other client is served
//     by a small refusal loop that never reaches go-smtp: 550 5.7.1 "relay
//     access denied" to MAIL, RCPT, DATA, BDAT and every other command that
//     would do or reveal something, 250 to HELO/EHLO/NOOP/RSET, 221 to QUIT.
//     It is logged once per connection and nothing is ever queued.
//   - A message is acknowledged (250) only after Queue.Put returned, that
//     is, after it is on stable storage. A Put failure answers 451 4.3.0.
//   - Only CRLF line endings are accepted in DATA and BDAT: a bare CR or
//     bare LF anywhere answers 550 5.6.0 and nothing is queued (the SMTP
//     smuggling defence; go-smtp passes them through). The check streams;
//     the message is never buffered whole.
//   - Limits: MaxMessageBytes answers 552 5.3.4, MaxRecipients answers
//     452 4.5.3 to the excess recipients; the session goes on. Read and
//     write timeouts are always set (go-smtp's defaults are unlimited); in
//     DATA the read timeout applies to each read, not to the whole message.
//   - Sessions are capped before go-smtp spends anything on them: above
//     MaxSessions open connections, or MaxSessionsPerClient from one client
//     address, a new connection gets 421 4.7.0 and is closed at once.
//     Refused connections from outside AllowedNetworks count too.
//   - A session that sends no command for IdleTimeout (or ReadTimeout, if
//     shorter) is closed with 421 4.4.2. The whole command line must
//     arrive within that time, so dripping one byte at a time does not
//     keep a session open.
//   - A client that resets its connection (a TCP probe) is counted in
//     Stats.ConnectionErrors and logged at debug level, not as a warning.
//   - Unknown MAIL FROM and RCPT TO parameters, and those of extensions
//     not offered, answer 555 5.5.4 (RFC 5321 section 4.1.1.11), inside
//     STARTTLS too (go-smtp answers them, with the change in
//     docs/patches/go-smtp-0002-reply-555-to-unknown-parameters.patch).
//   - MaxErrors errors in a row close the session with 421 4.7.0. (go-smtp
//     itself also closes a session after its fourth unparsable command,
//     with 500 5.5.1.)
//   - An HTTP request line as the first line is answered 554 5.7.0 and the
//     connection closed at once.
//   - The stored message is the client's bytes, dot-unstuffed, with a
//     Received header prepended.
//   - go-smtp's Debug writer, which would copy raw traffic, is never set.
//
// Addresses are checked as described in address.go: source routes are
// accepted and stripped, '%' is not interpreted, control characters are
// refused, and non-ASCII (UTF-8) addresses are accepted only in a
// transaction whose MAIL FROM has the SMTPUTF8 parameter (RFC 6531),
// which the server offers.
package smtpd

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// Queue is where accepted messages go. agent/spool implements it.
type Queue interface {
	// Put stores the message durably and returns its id; it returns only
	// after the message is on stable storage. It reads body to EOF, and
	// if reading body fails it stores nothing and returns an error.
	Put(ctx context.Context, from string, to []string, body io.Reader) (id string, err error)
}

// Defaults for the zero values of Options.
const (
	DefaultMaxMessageBytes = 36700160 // 35 MiB
	DefaultMaxRecipients   = 100
	DefaultTimeout         = 5 * time.Minute
	DefaultIdleTimeout     = time.Minute
	DefaultMaxErrors       = 10

	DefaultMaxSessions          = 100
	DefaultMaxSessionsPerClient = 20
)

// maxLineLength is the longest command or message line accepted, CRLF
// included (go-smtp's default: twice RFC 5321's 1000).
const maxLineLength = 2000

// DefaultAllowedNetworks is loopback.
var DefaultAllowedNetworks = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// Options configures a Server. Zero values take the defaults above.
type Options struct {
	// Hostname is announced in the greeting and the Received header.
	// Default: os.Hostname().
	Hostname string
	// AllowedNetworks are the client networks that may send.
	// Default (nil or empty): DefaultAllowedNetworks.
	AllowedNetworks []netip.Prefix
	// MaxMessageBytes is the largest message accepted, as sent by the
	// client. Default DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// MaxRecipients per message. Default DefaultMaxRecipients.
	MaxRecipients int
	// ReadTimeout bounds each read: of a command line, or of a piece of a
	// message, so a slow client that keeps sending a message is not cut
	// off. WriteTimeout bounds each reply. Default DefaultTimeout each.
	ReadTimeout, WriteTimeout time.Duration
	// IdleTimeout is how long the server waits for the next command line,
	// whole; a session that sends nothing for that long is closed with
	// 421 4.4.2. The wait for a command is the shorter of IdleTimeout and
	// ReadTimeout. Default DefaultIdleTimeout (RFC 5321 section 4.5.3.2
	// suggests 5 minutes between commands for mail exchangers on the
	// internet; local applications send their commands at once).
	IdleTimeout time.Duration
	// MaxSessions is how many connections may be open at once, and
	// MaxSessionsPerClient how many from one client IP address; above
	// either, a new connection is answered 421 4.7.0 and closed. Defaults
	// DefaultMaxSessions and DefaultMaxSessionsPerClient.
	MaxSessions, MaxSessionsPerClient int
	// TLSConfig, if set, enables STARTTLS (see LoadTLS).
	TLSConfig *tls.Config
	// MaxErrors is how many errors in a row close a session. Default
	// DefaultMaxErrors.
	MaxErrors int
	// Logger receives the listener's logs. Default: discard.
	Logger *slog.Logger
}

// Reason names why something was refused, for Stats.
type Reason string

// Reasons for refusals.
const (
	ReasonNetwork        Reason = "network"          // a connection from outside AllowedNetworks
	ReasonSize           Reason = "size"             // message over MaxMessageBytes
	ReasonRecipients     Reason = "recipients"       // a recipient over MaxRecipients
	ReasonBareLineEnding Reason = "bare_line_ending" // bare CR or LF in a message
	ReasonLineTooLong    Reason = "line_too_long"    // a message line over 2000 bytes
	ReasonAddress        Reason = "address"          // an invalid MAIL FROM or RCPT TO address
	ReasonHelo           Reason = "helo"             // an invalid HELO/EHLO name
	ReasonPersist        Reason = "persist"          // Queue.Put failed (451)
	ReasonTooManyErrors  Reason = "too_many_errors"  // a session closed after MaxErrors errors
	ReasonHTTP           Reason = "http"             // an HTTP request on the SMTP port
	ReasonReadError      Reason = "read_error"       // the client stalled or vanished in DATA
	ReasonIdle           Reason = "idle"             // a session closed after IdleTimeout without a command
	ReasonMaxSessions    Reason = "max_sessions"     // a connection refused above MaxSessions
	ReasonMaxPerClient   Reason = "max_sessions_per_client"
)

// Stats is a snapshot of the listener's counters. Rejected counts the
// refusals this package decides; go-smtp's own syntax and sequence errors,
// and its SIZE= and BDAT size refusals, are not counted (nor its 555
// replies to unknown parameters).
// ReasonNetwork, ReasonMaxSessions and ReasonMaxPerClient count
// connections, ReasonIdle sessions, the other reasons count replies.
type Stats struct {
	Accepted     uint64            // messages queued and acknowledged with 250
	Rejected     map[Reason]uint64 // refusals by reason
	Sessions     uint64            // connections accepted since start (not those refused with 421 4.7.0)
	SessionsOpen int               // connections open now
	// ConnectionErrors counts sessions that ended on a connection error
	// rather than QUIT, EOF or a timeout: typically a client (or a TCP
	// probe) that reset the connection.
	ConnectionErrors uint64
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("smtpd: server closed")

// Server is the inbound listener.
type Server struct {
	opt  Options
	q    Queue
	log  *slog.Logger
	smtp *smtp.Server

	// ctx is the context of Queue.Put; cancelled when Shutdown gives up.
	ctx    context.Context
	cancel context.CancelFunc

	accepted atomic.Uint64
	sessions atomic.Uint64
	connErrs atomic.Uint64

	mu        sync.Mutex
	conns     map[*conn]struct{}
	perClient map[netip.Addr]*clientCount // open connections by client address
	atLimit   bool                        // MaxSessions reached (and logged) since the count was last below it
	closed    bool
	rejected  map[Reason]uint64
	denied    sync.WaitGroup // serveDenied goroutines
}

// New returns a Server that queues accepted messages in q.
func New(opt Options, q Queue) (*Server, error) {
	if q == nil {
		return nil, errors.New("smtpd: no queue")
	}
	if opt.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("smtpd: hostname not set and os.Hostname failed: %w", err)
		}
		opt.Hostname = h
	}
	if !validHelo(opt.Hostname) {
		return nil, fmt.Errorf("smtpd: invalid hostname %q: use letters, digits, '.', '-', '_' or an address literal", opt.Hostname)
	}
	if len(opt.AllowedNetworks) == 0 {
		opt.AllowedNetworks = DefaultAllowedNetworks
	}
	nets := make([]netip.Prefix, len(opt.AllowedNetworks))
	for i, p := range opt.AllowedNetworks {
		if !p.IsValid() {
			return nil, fmt.Errorf("smtpd: allowed network %d is not a valid prefix", i+1)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:a.b.c.d/n means a.b.c.d/(n-96)
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		nets[i] = p.Masked()
	}
	opt.AllowedNetworks = nets
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"max message bytes", opt.MaxMessageBytes},
		{"max recipients", int64(opt.MaxRecipients)},
		{"read timeout", int64(opt.ReadTimeout)},
		{"write timeout", int64(opt.WriteTimeout)},
		{"idle timeout", int64(opt.IdleTimeout)},
		{"max errors", int64(opt.MaxErrors)},
		{"max sessions", int64(opt.MaxSessions)},
		{"max sessions per client", int64(opt.MaxSessionsPerClient)},
	} {
		if f.v < 0 {
			return nil, fmt.Errorf("smtpd: %s is negative", f.name)
		}
	}
	// Unset (zero) limits take their defaults.
	opt.MaxMessageBytes = cmp.Or(opt.MaxMessageBytes, DefaultMaxMessageBytes)
	opt.MaxRecipients = cmp.Or(opt.MaxRecipients, DefaultMaxRecipients)
	opt.ReadTimeout = cmp.Or(opt.ReadTimeout, DefaultTimeout)
	opt.WriteTimeout = cmp.Or(opt.WriteTimeout, DefaultTimeout)
	opt.IdleTimeout = cmp.Or(opt.IdleTimeout, DefaultIdleTimeout)
	opt.MaxErrors = cmp.Or(opt.MaxErrors, DefaultMaxErrors)
	opt.MaxSessions = cmp.Or(opt.MaxSessions, DefaultMaxSessions)
	opt.MaxSessionsPerClient = cmp.Or(opt.MaxSessionsPerClient, DefaultMaxSessionsPerClient)
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.TLSConfig != nil {
		opt.TLSConfig = opt.TLSConfig.Clone()
		if opt.TLSConfig.MinVersion < tls.VersionTLS12 {
			opt.TLSConfig.MinVersion = tls.VersionTLS12
		}
	}

	s := &Server{
		opt:       opt,
		q:         q,
		log:       opt.Logger,
		conns:     make(map[*conn]struct{}),
		perClient: make(map[netip.Addr]*clientCount),
		rejected:  make(map[Reason]uint64),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	srv := smtp.NewServer(backend{s})
	srv.Domain = opt.Hostname
	srv.MaxMessageBytes = opt.MaxMessageBytes
	srv.MaxRecipients = 0 // the session enforces it, so that refusals are counted
	srv.MaxLineLength = maxLineLength
	srv.ReadTimeout = opt.commandTimeout() // go-smtp sets it before each command line
	srv.WriteTimeout = opt.WriteTimeout
	srv.TLSConfig = opt.TLSConfig
	srv.EnableSMTPUTF8 = true // RFC 6531: non-ASCII addresses with MAIL FROM's SMTPUTF8
	srv.ErrorLog = errorLog{s}
	srv.Debug = nil // never: it would copy raw traffic
	s.smtp = srv
	return s, nil
}

// Serve accepts connections on l until Shutdown. It returns nil after
// Shutdown, ErrServerClosed if Shutdown came first, or the listener's error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		l.Close()
		return ErrServerClosed
	}
	return s.smtp.Serve(&listener{Listener: l, srv: s})
}

// Shutdown stops accepting connections, ends idle sessions (with go-smtp's
// 421 4.4.2), lets sessions receiving a message finish it and get their
// reply, and then returns. If ctx ends first, it closes every connection,
// cancels Queue.Put calls in progress and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.closed = true
	for c := range s.conns {
		c.shutdown()
	}
	s.mu.Unlock()

	err := s.smtp.Shutdown(ctx)
	if err == nil {
		done := make(chan struct{})
		go func() {
			s.denied.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if ctx.Err() != nil {
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.Conn.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
	s.cancel()
	return err
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Accepted:         s.accepted.Load(),
		Sessions:         s.sessions.Load(),
		SessionsOpen:     len(s.conns),
		Rejected:         make(map[Reason]uint64, len(s.rejected)),
		ConnectionErrors: s.connErrs.Load(),
	}
	for r, n := range s.rejected {
		st.Rejected[r] = n
	}
	return st
}

func (s *Server) reject(r Reason) {
	s.mu.Lock()
	s.rejected[r]++
	s.mu.Unlock()
}

func (s *Server) allowed(a netip.Addr) bool {
	if !a.IsValid() {
		return false // not an IP peer (a unix socket): not on any list
	}
	for _, p := range s.opt.AllowedNetworks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// goSMTPConnError is the format go-smtp's Serve logs a session with when
// the session ended on an error: a connection error, never a server fault
// (the client reset the connection, or broke TLS).
const goSMTPConnError = "error handling %v: %s"

// errorLog sends go-smtp's internal error log to the injected logger:
// connection errors at debug level (they are counted in Stats), anything
// else (accept errors, panics it recovered from) as a warning.
type errorLog struct{ s *Server }

func (e errorLog) Printf(format string, v ...any) {
	if format == goSMTPConnError && len(v) == 2 {
		e.s.log.Debug("client connection error", "client", fmt.Sprint(v[0]), "err", fmt.Sprint(v[1]))
		e.s.connErrs.Add(1)
		return
	}
	e.s.log.Warn("smtp server error", "detail", fmt.Sprintf(format, v...))
}

func (e errorLog) Println(v ...any) {
	e.s.log.Warn("smtp server error", "detail", fmt.Sprint(v...))
}

// LoadTLS loads a PEM certificate chain and its private key for STARTTLS.
// Errors name the file that failed and never quote key material.
func LoadTLS(certFile, keyFile string) (*tls.Config, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read tls certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read tls key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
