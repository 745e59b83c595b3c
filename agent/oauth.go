package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/oauth"
)

// refreshKeeper keeps the refresh tokens an identity provider rotates
// (docs/credentials.md, "Rotated refresh tokens"): a source that can
// (Vault) gets the new one written back, sealed if its values are; with
// any other (the age file) it stays in memory, and the operator is told
// what that means. No token is ever written anywhere else.
type refreshKeeper struct {
	src   secrets.Source
	store *secrets.Store
	log   *slog.Logger

	wg     sync.WaitGroup
	mu     sync.Mutex
	warned map[string]bool // age file: the long warning was given
}

// writeBackTimeout bounds one write-back.
const writeBackTimeout = 30 * time.Second

func newRefreshKeeper(src secrets.Source, store *secrets.Store, log *slog.Logger) *refreshKeeper {
	return &refreshKeeper{src: src, store: store, log: log, warned: map[string]bool{}}
}

// newTokens returns an access token cache that tells k about rotated
// refresh tokens.
func (k *refreshKeeper) newTokens() *oauth.Tokens {
	return oauth.NewTokens(oauth.Options{Logger: k.log, OnRefreshToken: k.rotated})
}

// rotated is oauth.Options.OnRefreshToken: it must not block, so the
// write-back runs in the background (close waits for it).
func (k *refreshKeeper) rotated(name string, token oauth.Secret) {
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		k.keep(name, token)
	}()
}

func (k *refreshKeeper) keep(name string, token oauth.Secret) {
	cur, err := k.store.Get(name)
	if err != nil {
		k.log.Warn("the identity provider rotated a refresh token, but its credential is not loaded; the new one is kept in memory only",
			"credential", name, "err", err.Error())
		return
	}
	if cur.RefreshToken() == token.Reveal() {
		return // the source holds it already
	}
	w, ok := k.src.(secrets.RefreshTokenWriter)
	if !ok {
		k.inMemory(name)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeBackTimeout)
	defer cancel()
	ver, err := w.WriteRefreshToken(ctx, cur, token.Reveal())
	if err != nil {
		k.log.Error("the identity provider rotated a refresh token; writing it back failed, so the new one is kept in memory only and the stored one may no longer work",
			"credential", name, "source", k.src.String(), "stored_version", cur.Version, "err", err.Error())
		return
	}
	k.log.Info("the identity provider rotated a refresh token; written back", "credential", name,
		"source", k.src.String(), "version", ver)
}

// inMemory tells the operator of a rotation the source cannot store:
// once in full per credential, then briefly.
func (k *refreshKeeper) inMemory(name string) {
	k.mu.Lock()
	first := !k.warned[name]
	k.warned[name] = true
	k.mu.Unlock()
	if !first {
		k.log.Info("the identity provider rotated the refresh token again; the new one is kept in memory only", "credential", name)
		return
	}
	k.log.Warn("the identity provider rotated the refresh token; the new one is kept in memory only, since the agent never rewrites the sealed file. "+
		"The sealed refresh token stops working when the provider voids it (some do at once, others when it expires), and a restart, "+
		"a reload of a changed file or `sealrelay check` uses the sealed one. Keep such credentials in Vault, which the agent writes "+
		"rotated tokens back to, or use a grant without rotation (client credentials); to re-seal, get a new refresh token through "+
		"the provider's consent flow and run `sealrelay creds set NAME --oauth2 ... --refresh-token-stdin`",
		"credential", name, "source", k.src.String())
}

// close waits for write-backs in progress.
func (k *refreshKeeper) close() { k.wg.Wait() }
