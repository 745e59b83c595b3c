package vault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// Start logs in and keeps the token alive until ctx ends: it renews the
// token with api.LifetimeWatcher and logs in again when renewal ends (the
// token reached its max TTL, or a renewal failed), retrying with backoff
// while Vault cannot be reached. Each change of state is logged once.
//
// It returns the first login's error, if any; the Source keeps trying in
// the background either way, so an agent can start while Vault is down.
func (s *Source) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("vault: source already started")
	}
	s.started = true
	var err error
	if s.secret == nil {
		err = s.loginLocked(ctx, "start")
	}
	s.mu.Unlock()
	go s.keepAlive(ctx)
	return err
}

// Retry bounds for logins that failed, in the keep-alive loop.
const (
	minRetry = time.Second
	maxRetry = 30 * time.Second
)

func (s *Source) keepAlive(ctx context.Context) {
	wait := minRetry
	for ctx.Err() == nil {
		s.mu.Lock()
		sec, gen := s.secret, s.gen
		s.mu.Unlock()
		reason := "not logged in"
		if sec != nil {
			reason = s.watch(ctx, sec)
			if reason == "" {
				continue // ctx ended, or another login replaced the token
			}
		}
		if err := s.relogin(ctx, gen, reason); err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, maxRetry)
			continue
		}
		wait = minRetry
		select { // our own login's notice: nothing to react to
		case <-s.loggedIn:
		default:
		}
	}
}

// watch keeps sec's token alive until it must be replaced, and returns why;
// it returns "" when ctx ends or another login replaced the token.
func (s *Source) watch(ctx context.Context, sec *api.Secret) string {
	if !sec.Auth.Renewable && sec.Auth.LeaseDuration == 0 {
		// A token without TTL (a root token) never expires.
		select {
		case <-ctx.Done():
		case <-s.loggedIn:
		}
		return ""
	}
	in := &api.LifetimeWatcherInput{Secret: sec}
	if sec.Auth.Renewable {
		// A failed renewal ends the watcher at once, so the next login
		// can go to another node instead of retrying this one.
		in.RenewBehavior = api.RenewBehaviorErrorOnErrors
	}
	w, err := s.client().NewLifetimeWatcher(in)
	if err != nil {
		return "cannot watch the token: " + err.Error()
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ""
		case <-s.loggedIn:
			return ""
		case r := <-w.RenewCh():
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				s.log.Debug("vault token renewed", "ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
			}
		case err := <-w.DoneCh():
			if err != nil && !strings.Contains(err.Error(), "past the max TTL") {
				return "token renewal failed: " + classify("auth/token/renew-self", s.addr(), err).Error()
			}
			return "token reached the end of its lifetime"
		}
	}
}

// relogin logs in again unless a login happened since generation gen.
func (s *Source) relogin(ctx context.Context, gen uint64, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen && s.secret != nil {
		return nil
	}
	return s.loginLocked(ctx, reason)
}

// loginLocked logs in (on the first node that answers), hands the token to
// every client and logs the change of state.
func (s *Source) loginLocked(ctx context.Context, reason string) error {
	var sec *api.Secret
	err := s.onNodes(ctx, func(c *api.Client) error {
		lc, err := c.Clone()
		if err != nil {
			return fmt.Errorf("vault client: %w", err)
		}
		lc.ClearToken()
		sec, err = s.auth.login(ctx, lc)
		return err
	})
	if err == nil && (sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "") {
		err = &Error{Path: s.auth.path(), Kind: ErrLoginFailed, Detail: s.auth.String() + " returned no token"}
	}
	if err != nil {
		err = classify(s.auth.path(), s.addr(), err)
		if text := err.Error(); text != s.stateErr {
			s.log.Error("vault login failed", "auth", s.auth.String(), "reason", reason, "err", text)
			s.stateErr = text
		}
		return err
	}
	for _, c := range s.clients {
		c.SetToken(sec.Auth.ClientToken)
	}
	s.secret = sec
	s.gen++
	attrs := []any{"auth", s.auth.String(), "address", s.addr(), "reason", reason,
		"policies", sec.Auth.Policies, "ttl", time.Duration(sec.Auth.LeaseDuration) * time.Second,
		"renewable", sec.Auth.Renewable}
	if s.stateErr != "" || s.gen == 1 {
		s.log.Info("logged in to vault", attrs...)
	} else {
		s.log.Debug("logged in to vault", attrs...)
	}
	s.stateErr = ""
	select {
	case s.loggedIn <- struct{}{}:
	default:
	}
	return nil
}

// generation returns the number of logins so far.
func (s *Source) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}
