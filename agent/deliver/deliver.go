// Package deliver sends spooled messages to the configured relay hosts: it
// implements spool.Deliverer.
//
// It holds routes (docs/routes.md: a relay list per sender and recipient
// domain, a message split per route) and relay failover, outbound rate
// limits per relay and per route, the TLS policy (STARTTLS, implicit TLS
// or none; certificates always verified; a TLS client certificate read
// from the credential store at each handshake), the AUTH policy of
// docs/auth.md (required, enabled, disabled) with its SASL mechanisms
// (the strongest configured one the relay offers; XOAUTH2 and OAUTHBEARER
// for oauth2 credentials, with access tokens from a Tokens cache), and a
// per-relay pool of authenticated connections reused across messages.
//
// It promises:
//   - AUTH is never sent on a connection without TLS unless the relay sets
//     AllowPlaintextAuth, and never under AuthPolicy disabled;
//   - under AuthPolicy required no MAIL is ever sent on a connection that
//     has not authenticated, and every authentication problem is a
//     Temporary result, never a Permanent one; so is a relay's refusal of
//     a session whose only standing is the client certificate
//     (ClientRefusedError);
//   - a pooled connection whose credential or client certificate has
//     been replaced in the store is closed, not reused;
//   - mail above a rate limit is never failed for it: it gets a Waiting
//     result with the time to come back;
//   - a non-ASCII address goes only to a relay that offers SMTPUTF8;
//     to another it fails for good with 5.6.7 (no downgrade);
//   - no error, log line or result holds a password, an access token or a
//     SASL payload: the text of a relay's reply to AUTH, which may quote
//     the payload, is replaced by a fixed description of its code;
//   - an access token that cannot be had (the token endpoint down or
//     refusing) defers, and is logged once per run of failures, not per
//     message.
package deliver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/secrets"
)

// TLSMode is how a relay connection is secured.
type TLSMode string

const (
	// TLSStartTLS upgrades a plaintext connection with STARTTLS; TLS is
	// mandatory: without it no MAIL is sent.
	TLSStartTLS TLSMode = "starttls"
	// TLSImplicit speaks TLS from the first byte (port 465).
	TLSImplicit TLSMode = "implicit"
	// TLSNone is plaintext.
	TLSNone TLSMode = "none"
)

// AuthPolicy is whether a relay connection authenticates (docs/auth.md).
type AuthPolicy string

const (
	// AuthRequired: authenticate before MAIL or defer; never an
	// unauthenticated MAIL. The default when a credential is configured.
	AuthRequired AuthPolicy = "required"
	// AuthEnabled: try to authenticate; if that cannot be done or fails,
	// go on without AUTH (logged and counted).
	AuthEnabled AuthPolicy = "enabled"
	// AuthDisabled: AUTH is never sent. The default without a credential.
	AuthDisabled AuthPolicy = "disabled"
)

// Defaults for the zero fields of a Relay.
const (
	DefaultMaxConnections = 10
	DefaultIdleTimeout    = 30 * time.Second
	DefaultConnectTimeout = 30 * time.Second
	DefaultCommandTimeout = 5 * time.Minute
)

// DefaultMechanisms is the SASL preference order when a Relay sets none.
var DefaultMechanisms = []string{sasl.Plain, sasl.Login}

// Relay is one relay host, as the agent's config describes it.
type Relay struct {
	// Name identifies the relay in logs and results; default Address.
	Name string
	// Address is host:port.
	Address string
	// TLS defaults to TLSStartTLS.
	TLS TLSMode
	// Auth defaults to AuthRequired with a Credential, AuthDisabled without.
	Auth AuthPolicy
	// Credential is the entry name in the credential source; "" means none.
	Credential string
	// ClientCertificate is the entry (of kind certificate) whose
	// certificate the TLS handshake shows when the relay asks for one; ""
	// means none. Without a Credential and with EXTERNAL in Mechanisms,
	// AUTH EXTERNAL uses it.
	ClientCertificate string
	// RootCAs verifies the relay's certificate; nil means the system roots.
	// internal/roots builds it from a ca_file.
	RootCAs *x509.CertPool
	// ServerName is the TLS name if it differs from the Address host.
	ServerName string
	// AllowPlaintextAuth allows AUTH on a connection without TLS (loopback).
	AllowPlaintextAuth bool
	// Mechanisms is the SASL preference order; default DefaultMechanisms.
	Mechanisms []string
	// MaxConnections bounds the open connections to this relay; default
	// DefaultMaxConnections.
	MaxConnections int
	// IdleTimeout closes a pooled connection unused this long; default
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// ConnectTimeout bounds the TCP connect; default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// CommandTimeout bounds each command's reply (and the TLS handshake);
	// default DefaultCommandTimeout. The reply after the data may take twice
	// as long.
	CommandTimeout time.Duration
	// Limits are the relay's outbound rate limits; above them mail waits
	// (a Waiting result), it does not go to the next relay.
	Limits Limits
}

// Credentials is where relay credentials come from. *secrets.Store
// satisfies it.
type Credentials interface {
	Get(name string) (secrets.Credential, error)
	Refresh(ctx context.Context, name string, stale secrets.Credential) (secrets.Credential, error)
}

// Options configures a Deliverer.
type Options struct {
	// Hostname is the EHLO name; default os.Hostname().
	Hostname string
	// Relays are tried in order, unless Routes say otherwise.
	Relays []Relay
	// Routes pick the relays for some senders and recipient domains; the
	// last must take all mail. None: every relay, in order, for all mail.
	Routes []Route
	// Credentials is required when a relay names a Credential.
	Credentials Credentials
	// Tokens gets the access tokens of oauth2 credentials; default: a
	// cache of the Deliverer's own, closed by Close.
	Tokens Tokens
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Stats counts what a Deliverer did since New.
type Stats struct {
	Attempts  uint64 // Deliver calls
	Delivered uint64 // recipients delivered
	Deferred  uint64 // recipients given a Temporary result
	Failed    uint64 // recipients given a Permanent result
	Waiting   uint64 // recipients a rate limit held back (a Waiting result)

	AuthOK        uint64 // successful AUTH exchanges
	AuthFailures  uint64 // AUTH exchanges the relay refused or that broke
	AuthRetries   uint64 // AUTH retried after a 535 and a credential refresh
	AuthFallbacks uint64 // connections that went on without AUTH (enabled)

	TLSFailures        uint64 // STARTTLS missing or failed, handshakes or verification failed
	ConnectionFailures uint64 // relays that could not be used for an attempt

	ConnectionsOpened uint64 // connections ready for mail
	ConnectionsReused uint64 // pooled connections taken for another message
	StaleClosed       uint64 // pooled connections closed: their credential rotated
	BrokenReplaced    uint64 // pooled connections found closed, or refusing MAIL with a 5xx, and replaced
	IdleClosed        uint64 // pooled connections closed after IdleTimeout
}

type counters struct {
	attempts, delivered, deferred, failed, waiting  atomic.Uint64
	authOK, authFailures, authRetries, authFallback atomic.Uint64
	tlsFailures, connFailures                       atomic.Uint64
	opened, reused, stale, broken, idleClosed       atomic.Uint64
}

// Deliverer delivers messages to the relays. It is safe for concurrent use.
type Deliverer struct {
	hostname string
	creds    Credentials
	log      *slog.Logger
	relays   []*relay
	routes   []*route
	st       counters
	tok      tokenUse

	closed    atomic.Bool
	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ spool.Deliverer = (*Deliverer)(nil)

// New checks opt, fills in defaults and returns a Deliverer. It opens no
// connection.
func New(opt Options) (*Deliverer, error) {
	if len(opt.Relays) == 0 {
		return nil, errors.New("no relay configured")
	}
	d := &Deliverer{hostname: opt.Hostname, creds: opt.Credentials, log: opt.Logger, stop: make(chan struct{})}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.tok.init(opt.Tokens, d.log)
	if d.hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		d.hostname = h
	}
	if strings.ContainsAny(d.hostname, " \r\n") {
		return nil, fmt.Errorf("hostname %q: must be a single word", d.hostname)
	}
	for i, rc := range opt.Relays {
		r, err := newRelay(d, rc)
		if err != nil {
			name := rc.Name
			if name == "" {
				name = fmt.Sprintf("#%d", i+1)
			}
			return nil, fmt.Errorf("relay %q: %w", name, err)
		}
		d.relays = append(d.relays, r)
	}
	var err error
	if d.routes, err = newRoutes(opt.Routes, d.relays); err != nil {
		return nil, err
	}
	d.wg.Add(1)
	go d.janitor()
	return d, nil
}

func newRelay(d *Deliverer, rc Relay) (*relay, error) {
	host, _, err := net.SplitHostPort(rc.Address)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", rc.Address, err)
	}
	if rc.Name == "" {
		rc.Name = rc.Address
	}
	switch rc.TLS {
	case "":
		rc.TLS = TLSStartTLS
	case TLSStartTLS, TLSImplicit, TLSNone:
	default:
		return nil, fmt.Errorf("tls = %q: want starttls, implicit or none", rc.TLS)
	}
	if err := checkMechanisms(&rc); err != nil {
		return nil, err
	}
	switch rc.Auth {
	case "":
		rc.Auth = AuthDisabled
		if rc.authCredential() != "" {
			rc.Auth = AuthRequired
		}
	case AuthRequired, AuthEnabled:
		if rc.authCredential() == "" {
			return nil, fmt.Errorf("auth = %q needs a credential (or a client certificate with EXTERNAL)", rc.Auth)
		}
	case AuthDisabled:
	default:
		return nil, fmt.Errorf("auth = %q: want required, enabled or disabled", rc.Auth)
	}
	if (rc.Auth != AuthDisabled || rc.ClientCertificate != "") && d.creds == nil {
		return nil, errors.New("a credential is configured but no credential source was given")
	}
	if rc.MaxConnections <= 0 {
		rc.MaxConnections = DefaultMaxConnections
	}
	if rc.IdleTimeout <= 0 {
		rc.IdleTimeout = DefaultIdleTimeout
	}
	if rc.ConnectTimeout <= 0 {
		rc.ConnectTimeout = DefaultConnectTimeout
	}
	if rc.CommandTimeout <= 0 {
		rc.CommandTimeout = DefaultCommandTimeout
	}
	serverName := rc.ServerName
	if serverName == "" {
		serverName = host
	}
	if rc.TLS == TLSNone && rc.Auth == AuthRequired && !rc.AllowPlaintextAuth {
		d.log.Warn("relay can never authenticate: tls = none and allow_plaintext_auth is off; every delivery through it is deferred",
			"relay", rc.Name)
	}
	return &relay{
		cfg:     rc,
		d:       d,
		lim:     newLimiter(rc.Limits, "relay "+rc.Name),
		tlsConf: &tls.Config{RootCAs: rc.RootCAs, ServerName: serverName, MinVersion: tls.VersionTLS12},
		changed: make(chan struct{}),
	}, nil
}

// Deliver tries m once: each relay in order until one takes the
// transaction. It returns one result per m.To, in order.
func (d *Deliverer) Deliver(ctx context.Context, m *spool.Delivery) []spool.RcptResult {
	d.st.attempts.Add(1)
	res := d.deliver(ctx, m)
	setReasons(res)
	for _, r := range res {
		switch r.Status {
		case spool.Delivered:
			d.st.delivered.Add(1)
		case spool.Permanent:
			d.st.failed.Add(1)
		case spool.Waiting:
			d.st.waiting.Add(1)
		default:
			d.st.deferred.Add(1)
		}
	}
	return res
}

// deliver splits m's recipients by route, in the order their routes first
// appear, and sends each group through its route.
func (d *Deliverer) deliver(ctx context.Context, m *spool.Delivery) []spool.RcptResult {
	if d.closed.Load() {
		return allResults(m, spool.Temporary, errShuttingDown, "")
	}
	var order []*route
	groups := map[*route][]int{}
	for i, to := range m.To {
		rt := d.routeFor(m.From, to)
		if _, ok := groups[rt]; !ok {
			order = append(order, rt)
		}
		groups[rt] = append(groups[rt], i)
	}
	res := make([]spool.RcptResult, len(m.To))
	for _, rt := range order {
		d.deliverRoute(ctx, rt, m, groups[rt], res)
	}
	return res
}

// noRelayError is the failure of every relay; it wraps each relay's error
// so that the reason can be told (the first relay's).
type noRelayError struct {
	text string
	errs []error
}

func (e *noRelayError) Error() string   { return e.text }
func (e *noRelayError) Unwrap() []error { return e.errs }

func allResults(m *spool.Delivery, st spool.Status, err error, relay string) []spool.RcptResult {
	res := make([]spool.RcptResult, len(m.To))
	for i, to := range m.To {
		res[i] = spool.RcptResult{Rcpt: to, Status: st, Err: err, Relay: relay}
	}
	return res
}

// Stats returns the counters.
func (d *Deliverer) Stats() Stats {
	s := &d.st
	return Stats{
		Attempts: s.attempts.Load(), Delivered: s.delivered.Load(), Deferred: s.deferred.Load(), Failed: s.failed.Load(), Waiting: s.waiting.Load(),
		AuthOK: s.authOK.Load(), AuthFailures: s.authFailures.Load(), AuthRetries: s.authRetries.Load(), AuthFallbacks: s.authFallback.Load(),
		TLSFailures: s.tlsFailures.Load(), ConnectionFailures: s.connFailures.Load(),
		ConnectionsOpened: s.opened.Load(), ConnectionsReused: s.reused.Load(),
		StaleClosed: s.stale.Load(), BrokenReplaced: s.broken.Load(), IdleClosed: s.idleClosed.Load(),
	}
}

// Close closes the pooled connections (QUIT) and makes later Deliver calls
// return Temporary. Connections in use are closed when their delivery
// ends.
func (d *Deliverer) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		close(d.stop)
		d.wg.Wait()
		var wg sync.WaitGroup
		for _, r := range d.relays {
			for _, cn := range r.shutdown() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cn.quit()
				}()
			}
		}
		wg.Wait()
		d.tok.close()
	})
	return nil
}

// janitor closes pooled connections idle longer than their relay's
// IdleTimeout, and those whose credential was replaced.
func (d *Deliverer) janitor() {
	defer d.wg.Done()
	every := time.Duration(0)
	for _, r := range d.relays {
		if t := r.cfg.IdleTimeout / 4; every == 0 || t < every {
			every = t
		}
	}
	every = max(every, 5*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-tick.C:
			for _, r := range d.relays {
				for _, cn := range r.expired(time.Now()) {
					d.st.idleClosed.Add(1)
					cn.quit()
					r.release()
				}
				for _, cn := range r.staleIdle() {
					d.st.stale.Add(1)
					cn.quit()
					r.release()
				}
			}
		}
	}
}
