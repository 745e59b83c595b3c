package oauth

// Against a real OAuth2 server: ORY Hydra (internal/testing/peers/hydra), whose
// counting proxy in front of the token endpoint says how many token
// requests were made and can be switched down.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/hydra"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// newTokens returns a cache whose log goes to the returned buffer.
func newTokens(t *testing.T, opts Options) (*Tokens, *testlib.LogBuf) {
	t.Helper()
	var logs testlib.LogBuf
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tk := NewTokens(opts)
	t.Cleanup(tk.Close)
	return tk, &logs
}

// secretConfig is the config of a client with a secret at h.
func secretConfig(h *hydra.Server, c *hydra.Client) Config {
	return Config{TokenURL: h.TokenURL, ClientID: c.ID, ClientSecret: NewSecret(c.Secret), AuthMethod: c.AuthMethod, Scopes: []string{"smtp"}}
}

// mustToken gets a token and checks that Hydra knows it as c's.
func mustToken(t *testing.T, h *hydra.Server, tk *Tokens, name string, cfg Config) string {
	t.Helper()
	tok, exp, err := tk.Token(context.Background(), name, cfg)
	if err != nil {
		t.Fatalf("Token(%s): %v", name, err)
	}
	in := h.Introspect(t, tok)
	if !in.Active || in.ClientID != cfg.ClientID || in.Scope != strings.Join(cfg.Scopes, " ") {
		t.Fatalf("Token(%s): introspection %+v, want active for %s with scope %v", name, in, cfg.ClientID, cfg.Scopes)
	}
	if d := exp.Sub(time.Unix(in.Expires, 0)); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("Token(%s): expiry %v, Hydra says %v", name, exp, time.Unix(in.Expires, 0))
	}
	return tok
}

// noSecrets fails if any secret is in text.
func noSecrets(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s holds a secret (%.6s...): %s", what, s, text)
		}
	}
}

// Clients with a secret in the form and in Basic auth get tokens, one
// request each, and the cache knows what was granted.
func TestClientSecretMethods(t *testing.T) {
	t.Parallel()
	h := hydra.Start(t, hydra.Options{})
	tk, _ := newTokens(t, Options{})
	for i, method := range []string{hydra.SecretPost, hydra.SecretBasic} {
		c := h.CreateClient(t, hydra.ClientSpec{AuthMethod: method})
		cfg := secretConfig(h, c)
		tok := mustToken(t, h, tk, method, cfg)
		if again := mustToken(t, h, tk, method, cfg); again != tok {
			t.Errorf("%s: a second Token gave another token", method)
		}
		if n := h.TokenRequests(); n != i+1 {
			t.Errorf("%s: %d token requests, want %d", method, n, i+1)
		}
		info, ok := tk.Info(method)
		if !ok || info.TokenURL != h.TokenURL || info.AuthMethod != method || info.Grant != "client_credentials" || !slices.Equal(info.Scopes, []string{"smtp"}) {
			t.Errorf("%s: Info = %+v %v", method, info, ok)
		}
	}
	if s := tk.Stats(); s.Requests != 2 || s.Failures != 0 {
		t.Errorf("Stats = %+v, want 2 requests, no failures", s)
	}
}

// A private_key_jwt client with an inline JWKS gets tokens with
// assertions this package signs: RS256 (also with a certificate, whose
// thumbprints Hydra ignores) and ES256. An assertion with another key is
// refused as invalid_client.
func TestPrivateKeyJWT(t *testing.T) {
	t.Parallel()
	h := hydra.Start(t, hydra.Options{})
	tk, _ := newTokens(t, Options{})

	rc := h.CreateClient(t, hydra.ClientSpec{AuthMethod: hydra.PrivateKeyJWT})
	cfg := Config{TokenURL: h.TokenURL, ClientID: rc.ID, PrivateKey: NewSecret(rc.KeyPEM()), KeyID: rc.KeyID, Scopes: []string{"smtp"}}
	mustToken(t, h, tk, "rs256", cfg)
	cert, _ := selfSigned(t, rc.Key)
	withCert := cfg
	withCert.Certificate = cert
	mustToken(t, h, tk, "rs256-cert", withCert)

	ek := ecKey(t)
	ecID := createECClient(t, h, ek, "ec-key-1")
	mustToken(t, h, tk, "es256", Config{TokenURL: h.TokenURL, ClientID: ecID, PrivateKey: NewSecret(pkcs8PEM(t, ek)), KeyID: "ec-key-1", Scopes: []string{"smtp"}})

	wrong := cfg
	wrong.PrivateKey = NewSecret(rsaKeyPEM(t))
	_, _, err := tk.Token(context.Background(), "wrong-key", wrong)
	var te *TokenError
	if !errors.As(err, &te) || te.Code != "invalid_client" || !strings.Contains(err.Error(), h.TokenURL) {
		t.Errorf("assertion signed with another key: %v, want invalid_client naming %s", err, h.TokenURL)
	}
	noSecrets(t, "the error", fmt.Sprintf("%v %+v", err, err), strings.Split(wrong.PrivateKey.Reveal(), "\n")[2], strings.Split(rc.KeyPEM(), "\n")[2])
}

// createECClient registers a private_key_jwt client whose inline JWKS
// holds an ES256 key, through Hydra's admin API.
func createECClient(t *testing.T, h *hydra.Server, key *ecdsa.PrivateKey, kid string) string {
	t.Helper()
	pub, err := key.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	raw := pub.Bytes() // 0x04 || X || Y
	jwk := map[string]string{"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
		"x": base64.RawURLEncoding.EncodeToString(raw[1:33]), "y": base64.RawURLEncoding.EncodeToString(raw[33:])}
	body, _ := json.Marshal(map[string]any{
		"grant_types": []string{"client_credentials"}, "token_endpoint_auth_method": "private_key_jwt",
		"token_endpoint_auth_signing_alg": "ES256", "scope": "smtp", "jwks": map[string]any{"keys": []any{jwk}},
	})
	resp, err := http.Post(h.AdminURL+"/admin/clients", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ClientID string `json:"client_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("creating an ES256 client: %d %v", resp.StatusCode, err)
	}
	return out.ClientID
}

// With 10-second tokens: the token is reused (one request) until its
// refresh point; a Token call after that point still gets the current
// token at once while one request runs in the background, and then the
// new token is handed out. Concurrent callers of a fresh name share one
// request.
func TestReuseAndRefreshAhead(t *testing.T) {
	t.Parallel()
	h := hydra.Start(t, hydra.Options{AccessTokenTTL: 10 * time.Second})
	c := h.CreateClient(t, hydra.ClientSpec{})
	cfg := secretConfig(h, c)
	tk, _ := newTokens(t, Options{})

	var wg sync.WaitGroup
	toks := make([]string, 8)
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], _, _ = tk.Token(context.Background(), "relay", cfg)
		}()
	}
	wg.Wait()
	first := toks[0]
	for _, tok := range toks {
		if tok == "" || tok != first {
			t.Fatal("concurrent first calls got different tokens or none")
		}
	}
	if n := h.TokenRequests(); n != 1 {
		t.Fatalf("8 concurrent first calls made %d token requests, want 1", n)
	}
	info, _ := tk.Info("relay")
	// A 10 s token (Hydra says expires_in 9 or 10) is handed out for the
	// first half of its life and refreshed from the middle of that.
	mid := func(a, b time.Time) time.Time { return a.Add(b.Sub(a) / 2) }
	if d := info.UsableUntil.Sub(mid(info.Fetched, info.Expiry)).Abs(); d > 10*time.Millisecond || info.Expiry.Sub(info.Fetched) > 10*time.Second {
		t.Errorf("fetched %v, expiry %v, usable until %v: want usable for the first half", info.Fetched, info.Expiry, info.UsableUntil)
	}
	if d := info.RefreshAt.Sub(mid(info.Fetched, info.UsableUntil)).Abs(); d > 10*time.Millisecond {
		t.Errorf("fetched %v, usable until %v, refresh at %v: want the refresh in the middle", info.Fetched, info.UsableUntil, info.RefreshAt)
	}

	calls := 0
	for time.Until(info.RefreshAt) > 300*time.Millisecond {
		if tok := mustToken(t, h, tk, "relay", cfg); tok != first {
			t.Fatal("a different token before the refresh point")
		}
		calls++
		time.Sleep(100 * time.Millisecond)
	}
	if n := h.TokenRequests(); n != 1 {
		t.Fatalf("%d calls before the refresh point made %d token requests, want 1", calls, n)
	}

	time.Sleep(time.Until(info.RefreshAt) + 50*time.Millisecond)
	tok, _, err := tk.Token(context.Background(), "relay", cfg)
	if err != nil || tok != first {
		t.Fatalf("Token past the refresh point: %v; want the current token at once", err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if next, ok := tk.Info("relay"); ok && next.Fetched.After(info.Fetched) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no background refresh")
		}
	}
	second := mustToken(t, h, tk, "relay", cfg)
	if second == first {
		t.Error("after the background refresh the old token is still handed out")
	}
	if n, s := h.TokenRequests(), tk.Stats(); n != 2 || s.Requests != 2 || s.AheadOfTime != 1 {
		t.Errorf("token requests %d, stats %+v; want 2 requests, 1 ahead of time", n, s)
	}
}

// Invalidate (after a 535) makes the next Token fetch exactly once.
func TestInvalidate(t *testing.T) {
	t.Parallel()
	h := hydra.Start(t, hydra.Options{})
	cfg := secretConfig(h, h.CreateClient(t, hydra.ClientSpec{}))
	tk, _ := newTokens(t, Options{})
	first := mustToken(t, h, tk, "relay", cfg)
	tk.Invalidate("relay")
	second := mustToken(t, h, tk, "relay", cfg)
	third := mustToken(t, h, tk, "relay", cfg)
	if second == first || third != second {
		t.Error("Invalidate did not give one new token that is then reused")
	}
	if n := h.TokenRequests(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
	tk.Forget("relay")
	if _, ok := tk.Info("relay"); ok {
		t.Error("Info after Forget")
	}
}

// The token endpoint down before the first token: a clear error naming
// the endpoint, matched by ErrUnreachable, and a working token once it is
// back. Down while a token is cached: Token keeps handing out the cached
// token, the failed background refresh is logged once, and once the token
// is past use the error says the endpoint is unreachable; back up, a new
// token comes and the log says so.
func TestEndpointDown(t *testing.T) {
	t.Parallel()
	h := hydra.Start(t, hydra.Options{AccessTokenTTL: 10 * time.Second})
	c := h.CreateClient(t, hydra.ClientSpec{})
	cfg := secretConfig(h, c)
	tk, logs := newTokens(t, Options{})

	h.Down(t)
	start := time.Now()
	_, _, err := tk.Token(context.Background(), "relay", cfg)
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Token while the endpoint is down: %v, want ErrUnreachable (connection refused)", err)
	}
	want := "oauth2: token endpoint " + h.TokenURL + " unreachable: dial tcp "
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want it to start with %q", err, want)
	}
	_, _, err2 := tk.Token(context.Background(), "relay", cfg)
	if time.Since(start) < FailHold && (err2 != err || tk.Stats().Requests != 1) {
		t.Errorf("a second call within FailHold: %v, %d requests; want the same error from memory", err2, tk.Stats().Requests)
	}
	h.Up(t)
	first := waitToken(t, tk, "relay", cfg)

	info, _ := tk.Info("relay")
	h.Down(t)
	for time.Now().Before(info.UsableUntil.Add(-200 * time.Millisecond)) {
		tok, _, err := tk.Token(context.Background(), "relay", cfg)
		if err != nil || tok != first {
			t.Fatalf("Token while down with a usable token cached: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Until(info.UsableUntil) + 50*time.Millisecond)
	if _, _, err := tk.Token(context.Background(), "relay", cfg); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Token after the cached token's use ended, endpoint down: %v, want ErrUnreachable", err)
	}
	if n := len(logs.Lines("oauth2 token refresh ahead of expiry failed", "credential=relay")); n != 1 {
		t.Errorf("the failed background refreshes were logged %d times, want once:\n%s", n, logs)
	}
	h.Up(t)
	if second := waitToken(t, tk, "relay", cfg); second == first {
		t.Error("the same token after the endpoint came back")
	}
	if n := len(logs.Lines("oauth2 token endpoint answers again", "credential=relay")); n != 1 {
		t.Errorf("the recovery was logged %d times, want once:\n%s", n, logs)
	}
	if s := tk.Stats(); s.Failures < 2 || s.Requests <= s.Failures {
		t.Errorf("Stats = %+v, want failures counted", s)
	}
	noSecrets(t, "the log", logs.String(), c.Secret, first)
}

// waitToken polls Token until it succeeds (FailHold may answer from
// memory for a moment).
func waitToken(t *testing.T, tk *Tokens, name string, cfg Config) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		tok, _, err := tk.Token(context.Background(), name, cfg)
		if err == nil {
			return tok
		}
		if time.Now().After(deadline) {
			t.Fatalf("no token after the endpoint came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A scope the client may not ask for, and a client that was deleted, are
// refused with the OAuth error code and the endpoint named, and no
// secret. A rotated secret: the old one fails (once the cached token is
// dropped), the config with the new one works at once.
func TestRefusalsAndRotation(t *testing.T) {
	t.Parallel()
	h := hydra.Start(t, hydra.Options{})
	tk, logs := newTokens(t, Options{})
	var errs []string

	c := h.CreateClient(t, hydra.ClientSpec{})
	scoped := secretConfig(h, c)
	scoped.Scopes = []string{"other"}
	_, _, err := tk.Token(context.Background(), "scoped", scoped)
	var te *TokenError
	if !errors.As(err, &te) || te.Code != "invalid_scope" || !strings.HasPrefix(err.Error(), "oauth2: token endpoint "+h.TokenURL+" refused the request: invalid_scope") {
		t.Errorf("wrong scope: %v, want invalid_scope naming the endpoint", err)
	}
	errs = append(errs, fmt.Sprintf("%v %+v", err, err))

	gone := h.CreateClient(t, hydra.ClientSpec{AuthMethod: hydra.SecretBasic})
	h.DeleteClient(t, gone.ID)
	_, _, err = tk.Token(context.Background(), "gone", secretConfig(h, gone))
	if !errors.As(err, &te) || te.Code != "invalid_client" || te.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), h.TokenURL) {
		t.Errorf("deleted client: %v, want invalid_client (HTTP 401) naming the endpoint", err)
	}
	errs = append(errs, fmt.Sprintf("%v %+v", err, err))

	old := secretConfig(h, c)
	oldSecret := c.Secret
	first := mustToken(t, h, tk, "rotating", old)
	h.RotateSecret(t, c)
	if tok := mustToken(t, h, tk, "rotating", old); tok != first {
		t.Error("the cached token was not reused after the rotation (it is still valid)")
	}
	tk.Invalidate("rotating")
	_, _, err = tk.Token(context.Background(), "rotating", old)
	if !errors.As(err, &te) || te.Code != "invalid_client" {
		t.Errorf("the old secret after rotation: %v, want invalid_client", err)
	}
	errs = append(errs, fmt.Sprintf("%v %+v", err, err))
	fresh := secretConfig(h, c)
	fresh.Version = "2"
	if tok := mustToken(t, h, tk, "rotating", fresh); tok == first {
		t.Error("the new secret gave the old token")
	}
	noSecrets(t, "the errors and the log", strings.Join(errs, "\n")+logs.String(), oldSecret, c.Secret, gone.Secret, first)
}
