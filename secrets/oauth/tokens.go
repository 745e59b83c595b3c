package oauth

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Timing of the cache. A token of lifetime L is handed out until
// exp - margin, margin = max(MinMargin, L/10) but at most L/2; a
// background refresh starts at the later of exp - 2*margin and the middle
// of that usable span. A token without expires_in is taken to live
// AssumedLifetime.
const (
	MinMargin       = 60 * time.Second
	AssumedLifetime = 10 * time.Minute
	// FailHold is how long a failed fetch is answered from memory before
	// the endpoint is asked again (per credential): a burst of deliveries
	// while the endpoint is down makes one request a second, not one each.
	FailHold = time.Second
	// FetchTimeout bounds one token request.
	FetchTimeout = 30 * time.Second
)

// Options configure Tokens.
type Options struct {
	// HTTPClient talks to token endpoints; default: FetchTimeout, no
	// redirects followed (a token endpoint that redirects is refused
	// rather than handed the client's secret elsewhere).
	HTTPClient *http.Client
	// Logger receives background refresh failures (once per run of
	// failures) and recoveries; default: discard.
	Logger *slog.Logger
	// OnRefreshToken, if set, is called when a token endpoint returned a
	// new refresh token for the credential name (rotation). Tokens keeps
	// and uses the new one either way; the callback may write it back to
	// the source (Vault) or tell the operator to re-seal it (age file).
	// It runs before the Token calls waiting on that fetch return, and
	// must not block for long.
	OnRefreshToken func(name string, refreshToken Secret)
}

// Stats count token requests, for metrics.
type Stats struct {
	// Requests is every request sent to a token endpoint.
	Requests uint64
	// Failures is the requests that gave no token.
	Failures uint64
	// AheadOfTime is the requests made in the background, before the
	// current token stopped being handed out.
	AheadOfTime uint64
	// Rotations is the new refresh tokens received.
	Rotations uint64
}

// Info describes a credential's current token, never the token itself.
type Info struct {
	TokenURL   string
	Grant      string
	AuthMethod string
	// Scopes are those the endpoint says it granted (its "scope"), else
	// those asked for.
	Scopes  []string
	Fetched time.Time
	// Expiry is the token's expiry (its expires_in, or AssumedLifetime).
	Expiry time.Time
	// RefreshAt is when a background refresh starts; UsableUntil is
	// when Token stops handing out this token.
	RefreshAt, UsableUntil time.Time
}

// Tokens caches OAuth2 access tokens per credential name, in memory
// only. It is safe for concurrent use.
type Tokens struct {
	hc     *http.Client
	log    *slog.Logger
	onRT   func(string, Secret)
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	entries map[string]*entry

	requests, failures, ahead, rotations atomic.Uint64
}

// entry is one credential's state.
type entry struct {
	given   Config // as the caller gave it: a different one starts afresh
	cfg     Config // resolved
	sig     *signer
	refresh Secret // the refresh token in use (a rotated one replaces the given one)

	tok      *cached
	inflight *call

	lastErr     error
	errUntil    time.Time // FailHold after a failed fetch
	bgFailing   bool      // a background refresh failed; logged once
	bgNotBefore time.Time
}

type cached struct {
	access                                  Secret
	fetched, expiry, refreshAt, usableUntil time.Time
	scopes                                  []string
}

// call is one token request; tok or err is set when done is closed.
type call struct {
	done chan struct{}
	tok  *cached
	err  error
}

// NewTokens returns an empty cache. Close stops its background fetches.
func NewTokens(opts Options) *Tokens {
	t := &Tokens{hc: opts.HTTPClient, log: opts.Logger, onRT: opts.OnRefreshToken, entries: map[string]*entry{}}
	if t.hc == nil {
		t.hc = &http.Client{
			Timeout:       FetchTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// Close cancels fetches in flight and waits for them.
func (t *Tokens) Close() {
	t.cancel()
	t.wg.Wait()
}

// Token returns an access token for the credential name, configured by
// cfg, and its expiry. A cached token is returned until shortly before it
// expires (see MinMargin); in its last stretch a fetch starts in the
// background, so callers don't wait on the endpoint while mail flows.
// Otherwise Token fetches one and waits for it (or for ctx); concurrent
// calls for one name share one request. A cfg that differs from the last
// one for name (another client secret, key, scope, Version...) drops the
// cached token first.
//
// Errors: a config that Resolve refuses; a *TokenError from the endpoint
// (errors.Is(err, ErrUnreachable) when it gave no answer); ctx's error.
// None holds a secret.
func (t *Tokens) Token(ctx context.Context, name string, cfg Config) (string, time.Time, error) {
	for {
		t.mu.Lock()
		e, err := t.entryFor(name, cfg)
		if err != nil {
			t.mu.Unlock()
			return "", time.Time{}, err
		}
		now := time.Now()
		if c := e.tok; c != nil && now.Before(c.usableUntil) {
			if !now.Before(c.refreshAt) && e.inflight == nil && !now.Before(e.bgNotBefore) {
				t.ahead.Add(1)
				t.startFetch(name, e, true)
			}
			t.mu.Unlock()
			return c.access.Reveal(), c.expiry, nil
		}
		if now.Before(e.errUntil) {
			err := e.lastErr
			t.mu.Unlock()
			return "", time.Time{}, err
		}
		c := e.inflight
		if c == nil {
			c = t.startFetch(name, e, false)
		}
		t.mu.Unlock()

		select {
		case <-c.done:
		case <-ctx.Done():
			return "", time.Time{}, ctx.Err()
		}
		if c.err != nil {
			return "", time.Time{}, c.err
		}
		t.mu.Lock()
		replaced := t.entries[name] != e && t.entries[name] != nil
		t.mu.Unlock()
		if replaced {
			continue // the config changed while the request ran: ask with the new one
		}
		if !time.Now().Before(c.tok.usableUntil) {
			return "", time.Time{}, &TokenError{Endpoint: e.cfg.TokenURL, Problem: "the token it issued expires too soon to be used"}
		}
		return c.tok.access.Reveal(), c.tok.expiry, nil
	}
}

// entryFor returns name's entry for cfg, replacing one made for another
// config. t.mu is held.
func (t *Tokens) entryFor(name string, cfg Config) (*entry, error) {
	if e := t.entries[name]; e != nil && e.sameConfig(cfg) {
		return e, nil
	}
	if e := t.entries[name]; e != nil && e.sameButVersion(cfg) {
		return e, nil
	}
	r, sig, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	e := &entry{given: cfg, cfg: r, sig: sig, refresh: cfg.RefreshToken}
	t.entries[name] = e
	return e, nil
}

// sameConfig reports whether cfg is the config e was made for. A refresh
// token equal to the rotated one in use counts as the same (the source
// wrote it back).
func (e *entry) sameConfig(cfg Config) bool {
	g := e.given
	return g.Provider == cfg.Provider && g.Tenant == cfg.Tenant && g.TokenURL == cfg.TokenURL &&
		g.ClientID == cfg.ClientID && g.AuthMethod == cfg.AuthMethod && g.Certificate == cfg.Certificate &&
		g.KeyID == cfg.KeyID && g.Version == cfg.Version && slices.Equal(g.Scopes, cfg.Scopes) &&
		g.ClientSecret.Equal(cfg.ClientSecret) && g.PrivateKey.Equal(cfg.PrivateKey) &&
		(g.RefreshToken.Equal(cfg.RefreshToken) || e.refresh.Equal(cfg.RefreshToken))
}

// sameButVersion reports whether cfg is e's credential of the
// refresh-token form at another Version, carrying the refresh token e was
// given or the rotated one in use: the source wrote the rotated one back
// (Vault), or its file changed elsewhere (an age file's version is the
// whole file's). The entry is kept, its token and rotated refresh token
// with it: dropping it would go back to a refresh token the provider may
// have voided, and make each write-back rotate the refresh token again.
func (e *entry) sameButVersion(cfg Config) bool {
	if e.refresh.IsZero() {
		return false
	}
	g := e.given
	g.Version = cfg.Version
	return (&entry{given: g, refresh: e.refresh}).sameConfig(cfg)
}

// startFetch starts a token request for e in the background. t.mu is
// held.
func (t *Tokens) startFetch(name string, e *entry, ahead bool) *call {
	c := &call{done: make(chan struct{})}
	e.inflight = c
	refresh := e.refresh
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		ctx, cancel := context.WithTimeout(t.ctx, FetchTimeout)
		f, err := fetch(ctx, t.hc, e.cfg, e.sig, refresh)
		cancel()
		t.requests.Add(1)
		if err != nil {
			t.failures.Add(1)
		}
		tok, rotated := t.finish(name, e, refresh, f, err, ahead)
		if rotated && t.onRT != nil {
			t.onRT(name, f.refresh)
		}
		c.tok, c.err = tok, err
		close(c.done)
	}()
	return c
}

// finish stores a fetch's outcome: the token, and whether it brought a
// new refresh token.
func (t *Tokens) finish(name string, e *entry, used Secret, f *fetched, err error, ahead bool) (*cached, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e.inflight = nil
	now := time.Now()
	if err != nil {
		e.lastErr, e.errUntil = err, now.Add(FailHold)
		if ahead {
			e.bgNotBefore = now.Add(FailHold)
			if !e.bgFailing {
				e.bgFailing = true
				t.log.Warn("oauth2 token refresh ahead of expiry failed; the current token is used until it expires",
					"credential", name, "error", err.Error())
			}
		}
		return nil, false
	}
	if e.bgFailing {
		e.bgFailing = false
		t.log.Info("oauth2 token endpoint answers again", "credential", name, "token_url", e.cfg.TokenURL)
	}
	e.lastErr, e.errUntil = nil, time.Time{}
	e.tok = newCached(f, now)
	rotated := !used.IsZero() && !f.refresh.IsZero() && !f.refresh.Equal(used)
	if rotated {
		t.rotations.Add(1)
		// The entry, and one that replaced it for the same refresh token
		// (only the Version changed), go on with the new one: the old one
		// may be revoked by now.
		e.refresh = f.refresh
		if cur := t.entries[name]; cur != nil && cur != e && cur.refresh.Equal(used) {
			cur.refresh = f.refresh
		}
	}
	return e.tok, rotated
}

// newCached computes when a fresh token is handed out and refreshed.
func newCached(f *fetched, now time.Time) *cached {
	exp := f.expiry
	if exp.IsZero() {
		exp = now.Add(AssumedLifetime)
	}
	life := exp.Sub(now)
	margin := max(MinMargin, life/10)
	margin = min(margin, life/2)
	usable := exp.Add(-margin)
	refreshAt := exp.Add(-2 * margin)
	if mid := now.Add(usable.Sub(now) / 2); refreshAt.Before(mid) {
		refreshAt = mid
	}
	return &cached{access: f.access, fetched: now, expiry: exp, refreshAt: refreshAt, usableUntil: usable, scopes: f.scopes}
}

// Invalidate drops name's cached token (after the relay refused it with
// 535): the next Token fetches a new one. A rotated refresh token is kept.
func (t *Tokens) Invalidate(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.entries[name]; e != nil {
		e.tok = nil
		e.errUntil = time.Time{}
	}
}

// Forget drops everything held for name (a credential that is gone).
func (t *Tokens) Forget(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.entries, name)
}

// Info describes name's current token; false if there is none.
func (t *Tokens) Info(name string) (Info, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[name]
	if e == nil || e.tok == nil {
		return Info{}, false
	}
	c := e.tok
	return Info{
		TokenURL: e.cfg.TokenURL, Grant: e.cfg.Grant(), AuthMethod: e.cfg.AuthMethod, Scopes: slices.Clone(c.scopes),
		Fetched: c.fetched, Expiry: c.expiry, RefreshAt: c.refreshAt, UsableUntil: c.usableUntil,
	}, true
}

// Stats returns the counters since NewTokens.
func (t *Tokens) Stats() Stats {
	return Stats{Requests: t.requests.Load(), Failures: t.failures.Load(), AheadOfTime: t.ahead.Load(), Rotations: t.rotations.Load()}
}
