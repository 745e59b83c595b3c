package deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/deliver/sasl"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/oauth"
)

// Tokens hands out the OAuth2 access tokens of oauth2 credentials
// (docs/auth.md, "OAuth2"). *oauth.Tokens satisfies it.
type Tokens interface {
	// Token returns an access token for the credential name, as cfg
	// describes it, and its expiry; its errors hold no secret.
	Token(ctx context.Context, name string, cfg oauth.Config) (string, time.Time, error)
	// Invalidate drops name's token after the relay refused it.
	Invalidate(name string)
	// Info describes name's current token, never the token.
	Info(name string) (oauth.Info, bool)
}

// tokenUse is the Deliverer's side of its Tokens: the cache, and which
// credentials' token endpoints are failing, so that a failure is logged
// once when it starts (or changes), not once per message.
type tokenUse struct {
	Tokens
	own *oauth.Tokens // the cache New made, closed by Close; nil if given
	log *slog.Logger

	mu      sync.Mutex
	failing map[string]string // credential name -> what failed
}

func (u *tokenUse) init(t Tokens, log *slog.Logger) {
	if t == nil {
		u.own = oauth.NewTokens(oauth.Options{Logger: log})
		t = u.own
	}
	u.Tokens, u.log, u.failing = t, log, map[string]string{}
}

func (u *tokenUse) close() {
	if u.own != nil {
		u.own.Close()
	}
}

// noteOK records that name's token endpoint answered.
func (u *tokenUse) noteOK(name, endpoint string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, was := u.failing[name]; was {
		delete(u.failing, name)
		u.log.Info("oauth2 token endpoint answers again; deliveries with the credential go on",
			"credential", name, "token_url", endpoint)
	}
}

// noteFailed records that getting name's token failed with err, and logs
// it if that is news: the first failure, or another kind of failure than
// the last one.
func (u *tokenUse) noteFailed(name, endpoint string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	what := "error"
	var te *oauth.TokenError
	if errors.As(err, &te) {
		switch {
		case te.Unreachable:
			what = "unreachable"
		case te.Code != "":
			what = te.Code
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.failing[name] == what {
		return
	}
	u.failing[name] = what
	u.log.Warn("oauth2 token endpoint failing; deliveries with the credential are deferred until it gives a token",
		"credential", name, "token_url", endpoint, "err", err.Error())
}

// authenticateBearer runs AUTH on *cnp with an oauth2 credential
// (docs/auth.md, "OAuth2"): XOAUTH2 or OAUTHBEARER, as sasl.Choose picks
// from the relay's mechanisms, with an access token from the Tokens. A
// relay that refuses the token with 535 (after its error challenge or
// without one) makes the token dropped, and a new one is tried at once on
// a new connection, which replaces *cnp (nil if it could not be made). A
// token that cannot be had is a *ConnError at StageAuth wrapping the
// *oauth.TokenError: the delivery is deferred.
func (r *relay) authenticateBearer(ctx context.Context, cnp **conn, cred secrets.Credential) error {
	name := r.cfg.Credential
	for retried := false; ; retried = true {
		cn := *cnp
		mech, err := r.canAuth(cn, cred)
		if err != nil {
			return err
		}
		var token string
		if cred, token, err = r.token(ctx, cred); err != nil {
			cn.cred, cn.credUse = cred, credUsed
			return &ConnError{StageAuth, fmt.Errorf("not attempted: %w", err)}
		}
		client := r.bearerClient(mech, cred.Username, token)
		err = cn.exchange(ctx, mech, cred, client)
		if err == nil {
			return nil
		}
		if ref := client.Refusal(); ref != nil {
			err = fmt.Errorf("%w; %v", err, ref)
		}
		if retried {
			return &ConnError{StageAuth, fmt.Errorf("%w (with a new access token)", err)}
		}
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 535 {
			return &ConnError{StageAuth, err}
		}
		r.d.tok.Invalidate(name)
		r.d.st.authRetries.Add(1)
		r.d.log.Info("relay refused the access token; retrying at once with a new one",
			"relay", r.cfg.Name, "credential", name, "username", cred.Username, "err", err.Error())
		cn.quit()
		*cnp = nil
		if cn, err = r.dial(ctx); err != nil {
			return err
		}
		*cnp = cn
	}
}

// token returns an access token for cred, and the credential it came
// from. A token endpoint that refuses the client or its grant
// (invalid_client, unauthorized_client, invalid_grant) may mean that the
// credential changed in its source (a rotated client secret, a refresh
// token written back by another server): the credential is then refreshed
// once and, if that gave another secret, the token asked for again.
func (r *relay) token(ctx context.Context, cred secrets.Credential) (secrets.Credential, string, error) {
	name := r.cfg.Credential
	for refreshed := false; ; refreshed = true {
		cfg, err := cred.OAuth2()
		if err != nil {
			return cred, "", err
		}
		tok, _, err := r.d.tok.Token(ctx, name, cfg)
		if err == nil {
			r.d.tok.noteOK(name, cfg.TokenURL)
			return cred, tok, nil
		}
		r.d.tok.noteFailed(name, cfg.TokenURL, err)
		var te *oauth.TokenError
		if refreshed || !errors.As(err, &te) || !slices.Contains([]string{"invalid_client", "unauthorized_client", "invalid_grant"}, te.Code) {
			return cred, "", err
		}
		fresh, rerr := r.d.creds.Refresh(ctx, name, cred)
		if rerr != nil || fresh.SameSecret(cred) {
			return cred, "", err
		}
		r.d.log.Info("token endpoint refused the client; retrying with the credential refreshed from its source",
			"relay", r.cfg.Name, "credential", name, "version", fresh.Version)
		cred = fresh
	}
}

// bearerClient is the SASL client for mech with token. OAUTHBEARER names
// the relay by its TLS name and port, as RFC 7628 asks.
func (r *relay) bearerClient(mech, username, token string) sasl.BearerClient {
	if mech == sasl.XOAuth2 {
		return sasl.NewXOAuth2Client(username, token)
	}
	_, p, _ := net.SplitHostPort(r.cfg.Address)
	port, _ := strconv.Atoi(p)
	return sasl.NewOAuthBearerClient(username, token, r.tlsConf.ServerName, port)
}

// TokenCheck is what Check found of an oauth2 credential's token step:
// never the token.
type TokenCheck struct {
	// Endpoint is the token URL; Grant is client_credentials or
	// refresh_token.
	Endpoint, Grant string
	// Scopes are those granted (or asked for, if the endpoint did not
	// say); Expiry is when the token expires.
	Scopes []string
	Expiry time.Time
	// Err is why no token was had (an *oauth.TokenError, mostly).
	Err error
}

// String is the line `sealrelay check` prints for the token step.
func (t TokenCheck) String() string {
	s := "token from " + t.Endpoint + ": "
	if t.Err != nil {
		return s + "FAILED: " + t.Err.Error()
	}
	scopes := "none named"
	if len(t.Scopes) > 0 {
		scopes = strings.Join(t.Scopes, " ")
	}
	return fmt.Sprintf("%sok (%s, scopes %s, expires %s, in %s)", s, t.Grant, scopes,
		t.Expiry.UTC().Format(time.RFC3339), time.Until(t.Expiry).Round(time.Second))
}

// checkToken gets a token for r's oauth2 credential, as a delivery would,
// and reports it; nil if the relay's credential is not oauth2 (or cannot
// be read: establish says so).
func (r *relay) checkToken(ctx context.Context) *TokenCheck {
	if r.cfg.Auth == AuthDisabled {
		return nil
	}
	cred, err := r.d.creds.Get(r.cfg.Credential)
	if err != nil || cred.Kind() != secrets.KindOAuth2 {
		return nil
	}
	tc := &TokenCheck{Endpoint: cred.TokenEndpoint()}
	cfg, err := cred.OAuth2()
	if err != nil {
		tc.Err = err
		return tc
	}
	tc.Endpoint, tc.Grant = cfg.TokenURL, cfg.Grant()
	if _, _, tc.Err = r.token(ctx, cred); tc.Err != nil {
		return tc
	}
	if info, ok := r.d.tok.Info(r.cfg.Credential); ok {
		tc.Scopes, tc.Expiry = info.Scopes, info.Expiry
	}
	return tc
}
