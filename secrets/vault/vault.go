// Package vault is a credential source backed by HashiCorp Vault's KV v2
// engine. Entry NAME lives at <mount>/data/<path>/NAME and holds the keys
// of its kind, as the credential file does (secrets.ParseEntry): username
// and password for a password entry; kind, client_id, client_secret... for
// the others; scopes as a list or one space-separated string. With
// Config.Sealed every secret value is an age-armored ciphertext sealed to
// the servers' recipient list, which this server opens with its own
// identity, so a Vault reader who is not one of those servers learns
// nothing; the other keys (the generation among them) stay in clear.
//
// A Source logs in with a token (token_file or VAULT_TOKEN), AppRole (role
// ID and secret ID files; the secret ID may be response-wrapped) or
// Kubernetes (the pod's service account JWT), keeps its token alive with
// api.LifetimeWatcher, and logs in again when renewal ends or Vault says the
// token is gone. Token auth cannot log in again: a revoked or expired token
// is an error that says so. Several addresses may be given: a node that
// cannot be reached (or is sealed) makes the Source try the next.
//
// The Source writes to Vault only when asked: PutCredential (`creds set
// --vault`), and WriteRefreshToken, which keeps a refresh token the
// identity provider rotated as a new version of its entry, sealed with
// Sealed, written with check-and-set so that it never overwrites a newer
// version (secrets.RefreshTokenWriter; the token needs the create and
// update capabilities on the data path).
//
// Promises: no token, secret ID, JWT or entry value appears in a log line,
// an error or a file written by this package. Files holding a token, role
// ID, secret ID or JWT are refused if group or others can read them, and
// are read only when logging in. Errors name the Vault path and say what
// kind of failure it was (connection refused, vault is sealed, permission
// denied, entry missing, missing key).
package vault

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/vault/api"
)

// Source reads credential entries from Vault. It implements
// secrets.VersionSource and secrets.RefreshTokenWriter. Its methods are safe for concurrent use.
type Source struct {
	cfg     Config
	log     *slog.Logger
	addrs   []string
	clients []*api.Client // one per address; all hold the current token
	cur     atomic.Int64  // index of the address in use
	auth    authenticator

	mu       sync.Mutex // serializes logins; guards the fields below
	secret   *api.Secret
	gen      uint64 // counts logins
	started  bool
	stateErr string // the last login state logged ("" = logged in)
	loggedIn chan struct{}
}

// String describes the source: "vault ADDR MOUNT/PATH".
func (s *Source) String() string {
	return "vault " + strings.Join(s.addrs, ",") + " " + s.cfg.Mount + "/" + s.cfg.Path
}

// client returns the client for the address in use.
func (s *Source) client() *api.Client { return s.clients[s.cur.Load()] }

// addr returns the address in use.
func (s *Source) addr() string { return s.addrs[s.cur.Load()] }

// onNodes runs fn on the node in use and, while the node cannot be
// reached or is sealed, on the next ones. The first node that answers
// becomes the one in use.
func (s *Source) onNodes(ctx context.Context, fn func(*api.Client) error) error {
	n := len(s.clients)
	start := int(s.cur.Load())
	var err error
	for i := range n {
		idx := (start + i) % n
		err = fn(s.clients[idx])
		if err == nil || !nodeDown(err) || ctx.Err() != nil {
			if i > 0 && s.cur.CompareAndSwap(int64(start), int64(idx)) {
				s.log.Warn("vault node unusable; switched to another", "from", s.addrs[start], "to", s.addrs[idx])
			}
			return err
		}
		if i+1 < n {
			s.log.Debug("vault node unusable; trying the next", "address", s.addrs[idx], "err", classify("request", s.addrs[idx], err).Error())
		}
	}
	return &nodeError{addrs: tried(s.addrs, start), err: err}
}

// tried lists addrs in the order onNodes tries them from start.
func tried(addrs []string, start int) []string {
	return append(slices.Clone(addrs[start:]), addrs[:start]...)
}

// nodeError is the failure of a request that no node could serve; addrs
// are the nodes tried.
type nodeError struct {
	addrs []string
	err   error
}

func (e *nodeError) Error() string { return e.err.Error() }
func (e *nodeError) Unwrap() error { return e.err }

// call runs a request with the Source's token, logging in first if there
// is no token. A 403 makes it ask Vault whether the token is still valid:
// if not, it logs in again (approle, kubernetes) and retries once, or
// reports the dead token (token auth); if it is, the token's policies do
// not allow the request.
func (s *Source) call(ctx context.Context, path string, fn func(*api.Client) error) error {
	s.mu.Lock()
	if s.secret == nil {
		if err := s.loginLocked(ctx, "first use"); err != nil {
			s.mu.Unlock()
			return s.pathError(path, err)
		}
	}
	gen, policies := s.gen, s.secret.Auth.Policies
	s.mu.Unlock()

	err := s.onNodes(ctx, fn)
	if !isForbidden(err) {
		return s.classify(path, err)
	}
	lerr := s.onNodes(ctx, func(c *api.Client) error {
		_, err := c.Auth().Token().LookupSelfWithContext(ctx)
		return err
	})
	switch {
	case lerr == nil && s.generation() != gen:
		// Another call logged in while this one ran: try with the new token.
		return s.classify(path, s.onNodes(ctx, fn))
	case lerr == nil:
		return &Error{Path: path, Kind: ErrPermissionDenied,
			Detail: fmt.Sprintf("the token's policies (%s) do not allow this", strings.Join(policies, ", ")),
			Err:    err,
			hint: fmt.Sprintf("give the token a policy with read on %[1]s/data/%[2]s/* and read, list on %[1]s/metadata/%[2]s/*",
				s.cfg.Mount, s.cfg.Path)}
	case !isForbidden(lerr):
		return s.classify(path, err)
	}
	if !s.auth.canRelogin() {
		s.mu.Lock()
		s.secret = nil // the next call reads the token file again
		s.mu.Unlock()
		return s.pathError(path, s.auth.(*tokenAuth).invalid())
	}
	if err := s.relogin(ctx, gen, "vault no longer accepts the token (revoked or expired)"); err != nil {
		return s.pathError(path, err)
	}
	return s.classify(path, s.onNodes(ctx, fn))
}

// classify makes err an *Error for path.
func (s *Source) classify(path string, err error) error {
	return classify(path, s.addr(), err)
}

// pathError puts path in front of a login error, which names the auth
// path, so a failed read says which entry it was for.
func (s *Source) pathError(path string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", path, err)
}
