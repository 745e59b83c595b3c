// Package upstream is the relay host the tests and the benchmark deliver
// to: internal/relayhost (a go-smtp server on loopback with its own CA,
// STARTTLS or implicit TLS, AUTH PLAIN and LOGIN, recording what it saw)
// with scriptable replies and fault injection on top: scripted greetings,
// EHLO, STARTTLS and AUTH replies, rules for MAIL, RCPT and DATA, AUTH
// withdrawn or echoed, temporary failures, dropped connections and stalls,
// each settable while the server runs (SetBehavior).
//
// It is test-only: the release binary links internal/relayhost (for
// `sealrelay demo`) and none of this. The package does not import
// "testing", so the benchmark uses it too.
package upstream

import (
	"crypto/x509"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/relayhost"
)

// What the relay host defines, under the names the tests use.
type (
	// CA is a throwaway certificate authority.
	CA = relayhost.CA
	// TLSMode says how the upstream offers TLS.
	TLSMode = relayhost.TLSMode
	// Session is what the upstream saw on one TCP connection.
	Session = relayhost.Session
	// AuthAttempt is one AUTH command.
	AuthAttempt = relayhost.AuthAttempt
	// MailCommand is one MAIL command.
	MailCommand = relayhost.MailCommand
	// Message is one accepted message.
	Message = relayhost.Message
	// Attempt is one transaction whose data the upstream read.
	Attempt = relayhost.Attempt
)

// The TLS modes.
const (
	StartTLS = relayhost.StartTLS
	Implicit = relayhost.Implicit
	NoTLS    = relayhost.NoTLS
)

// NewCA returns a fresh CA named name, valid for a day.
func NewCA(name string) (*CA, error) { return relayhost.NewCA(name) }

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
	// Addr, Hostname, TLS and CA are relayhost.Config's.
	Addr     string
	Hostname string
	TLS      TLSMode
	CA       *CA
	// ClientCAs is relayhost.Config's: verify client certificates against
	// these, and offer EXTERNAL to a client that showed one.
	ClientCAs *x509.CertPool
	// UntrustedCert serves a certificate signed by a second, fresh CA that
	// CAPEM does not return, so a client trusting CAPEM fails verification.
	UntrustedCert bool
	// The rest are relayhost.Config's.
	AllowInsecureAuth         bool
	Accounts                  map[string]string
	DiscardBodies             bool
	CountOnly                 bool
	SMTPUTF8                  bool
	MaxMessageBytes           int64
	ReadTimeout, WriteTimeout time.Duration
	Logger                    *slog.Logger

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
	ErrServiceNotAvailable = relayhost.ErrServiceNotAvailable
	// ErrAuthRequired is the 530 5.7.0 of RequireAuth.
	ErrAuthRequired = relayhost.ErrAuthRequired
	// ErrAuthTemporary is a 454 4.7.0 for AuthReply.
	ErrAuthTemporary = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	// ErrAlreadyIdentified is OpenSMTPD's answer to a second EHLO, for
	// RejectRepeatedHelo.
	ErrAlreadyIdentified = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Invalid command: Already identified"}
	// ErrEncryptionRequired answers AUTH without TLS (RFC 4954 538).
	ErrEncryptionRequired = relayhost.ErrEncryptionRequired
)

// Server is a running upstream: the relay host, and the behaviour its
// Faults read.
type Server struct {
	*relayhost.Server
	tlsMode      TLSMode
	writeTimeout time.Duration
	behavior     atomic.Pointer[Behavior]
	stop         chan struct{} // closed by Close: ends every stall
	stopOnce     sync.Once

	paceMu    sync.Mutex
	stallPace float64
	failPace  float64
	dropPace  float64
}

// Start starts an upstream listening on cfg.Addr (default 127.0.0.1:0).
func Start(cfg Config) (*Server, error) {
	if cfg.TLS == "" {
		cfg.TLS = StartTLS
	}
	if cfg.Behavior.RejectRepeatedHelo && cfg.TLS != NoTLS {
		return nil, errors.New("upstream: RejectRepeatedHelo needs TLS = NoTLS: it reads the plaintext stream")
	}
	s := &Server{tlsMode: cfg.TLS, writeTimeout: cfg.WriteTimeout, stop: make(chan struct{})}
	if s.writeTimeout <= 0 {
		s.writeTimeout = time.Minute
	}
	b := cfg.Behavior
	s.behavior.Store(&b)
	rc := relayhost.Config{
		Addr: cfg.Addr, Hostname: cfg.Hostname, TLS: cfg.TLS, CA: cfg.CA, ClientCAs: cfg.ClientCAs,
		AllowInsecureAuth: cfg.AllowInsecureAuth, RequireAuth: b.RequireAuth, Accounts: cfg.Accounts,
		DiscardBodies: cfg.DiscardBodies, CountOnly: cfg.CountOnly, SMTPUTF8: cfg.SMTPUTF8, MaxMessageBytes: cfg.MaxMessageBytes,
		ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, Logger: cfg.Logger,
		Faults: faults{s},
	}
	if cfg.UntrustedCert {
		var err error
		if rc.CA == nil {
			if rc.CA, err = NewCA("sealrelay test upstream CA"); err != nil {
				return nil, err
			}
		}
		other, err := NewCA("sealrelay untrusted CA")
		if err != nil {
			return nil, err
		}
		cert, err := other.Issue()
		if err != nil {
			return nil, err
		}
		rc.Certificate = &cert
	}
	var err error
	if s.Server, err = relayhost.Start(rc); err != nil {
		return nil, err
	}
	return s, nil
}

// Close ends every stall, stops listening and closes every connection.
func (s *Server) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	return s.Server.Close()
}

// Behavior returns the current behaviour.
func (s *Server) Behavior() Behavior { return *s.behavior.Load() }

// SetBehavior replaces the behaviour; sessions see it from their next
// command on.
func (s *Server) SetBehavior(b Behavior) {
	s.behavior.Store(&b)
	s.SetRequireAuth(b.RequireAuth)
}

// UpdateBehavior changes the behaviour with f.
func (s *Server) UpdateBehavior(f func(*Behavior)) {
	b := s.Behavior()
	f(&b)
	s.SetBehavior(b)
}

// DropSessions closes every open connection, as a relay does when it
// restarts or revokes the sessions of an account whose password changed;
// the listener stays up. It returns how many it closed.
func (s *Server) DropSessions() int {
	conns := s.Conns()
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}

// sleep waits d or until Close; it reports whether the server still runs.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
		return false
	}
}

// fire reports whether a fault with fraction f fires now. It spreads the
// firings evenly and deterministically: with f = 0.2, every fifth call.
func (s *Server) fire(acc *float64, f float64) bool {
	if f <= 0 {
		return false
	}
	s.paceMu.Lock()
	defer s.paceMu.Unlock()
	*acc += f
	if *acc >= 1-1e-9 {
		*acc--
		return true
	}
	return false
}
