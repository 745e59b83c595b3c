package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// When a token is handed out and refreshed, by lifetime.
func TestNewCachedTiming(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		life              time.Duration // 0: no expires_in
		usable, refreshAt time.Duration // after now
	}{
		{time.Hour, 54 * time.Minute, 48 * time.Minute},      // margin 10% = 6 min
		{10 * time.Minute, 9 * time.Minute, 8 * time.Minute}, // margin 60 s
		{2 * time.Minute, time.Minute, 30 * time.Second},     // margin 60 s = half: refresh in the middle
		{10 * time.Second, 5 * time.Second, 2500 * time.Millisecond},
		{0, 9 * time.Minute, 8 * time.Minute}, // AssumedLifetime
	} {
		f := &fetched{}
		if tc.life > 0 {
			f.expiry = now.Add(tc.life)
		}
		c := newCached(f, now)
		if c.usableUntil.Sub(now) != tc.usable || c.refreshAt.Sub(now) != tc.refreshAt {
			t.Errorf("lifetime %v: usable %v, refresh at %v; want %v, %v", tc.life, c.usableUntil.Sub(now), c.refreshAt.Sub(now), tc.usable, tc.refreshAt)
		}
	}
}

// refreshServer plays only the refresh_token grant, as Google's token
// endpoint does for a delegated credential: it accepts only the current
// refresh token and, if rotate, answers with a new one, the old one then
// being void. A refused refresh token is quoted in the error description,
// as some servers do.
type refreshServer struct {
	*httptest.Server
	mu      sync.Mutex
	current string
	n       int
	rotate  bool
	seen    []string
}

func startRefreshServer(t *testing.T, first string, rotate bool) *refreshServer {
	s := &refreshServer{current: first, rotate: rotate}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	t.Cleanup(s.Close)
	return s
}

func (s *refreshServer) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	rt := r.PostFormValue("refresh_token")
	s.seen = append(s.seen, rt)
	if r.PostFormValue("grant_type") != "refresh_token" || r.PostFormValue("client_id") != "desktop-client" || r.PostFormValue("client_secret") != testSecret {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"unsupported_grant_type"}`)
		return
	}
	if rt != s.current {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "Token " + rt + " has been expired or revoked."}) //nolint:errcheck // test server
		return
	}
	s.n++
	resp := map[string]any{"access_token": fmt.Sprintf("ya29.access-%d-0123456789", s.n), "token_type": "Bearer", "expires_in": 3599, "scope": "https://mail.google.com/"}
	if s.rotate {
		s.current = fmt.Sprintf("1//rotated-refresh-%d-0123456789", s.n)
		resp["refresh_token"] = s.current
	}
	json.NewEncoder(w).Encode(resp) //nolint:errcheck // test server
}

func (s *refreshServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// The refresh-token form: each new refresh token the endpoint returns is
// reported once through OnRefreshToken and used for the next refresh; a
// config carrying the original refresh token (age file) or the rotated
// one (written back to Vault) is the same credential, with no new
// request; a refresh token the endpoint refuses gives invalid_grant,
// with the token itself redacted from the description.
func TestRefreshTokenRotation(t *testing.T) {
	const first = "1//original-refresh-0123456789"
	srv := startRefreshServer(t, first, true)
	var mu sync.Mutex
	var reported []string
	tk, logs := newTokens(t, Options{OnRefreshToken: func(name string, rt Secret) {
		mu.Lock()
		defer mu.Unlock()
		reported = append(reported, name+"="+rt.Reveal())
	}})
	cfg := Config{Provider: "google", TokenURL: srv.URL, ClientID: "desktop-client", ClientSecret: NewSecret(testSecret), RefreshToken: NewSecret(first)}
	ctx := context.Background()

	tok, _, err := tk.Token(ctx, "gmail", cfg)
	if err != nil || tok != "ya29.access-1-0123456789" {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	if want := []string{"gmail=1//rotated-refresh-1-0123456789"}; fmt.Sprint(reported) != fmt.Sprint(want) {
		t.Errorf("reported %v, want %v", reported, want)
	}
	if info, _ := tk.Info("gmail"); info.Grant != "refresh_token" || info.Scopes[0] != "https://mail.google.com/" {
		t.Errorf("Info = %+v", info)
	}

	tk.Invalidate("gmail")
	if tok, _, err = tk.Token(ctx, "gmail", cfg); err != nil || tok != "ya29.access-2-0123456789" {
		t.Fatalf("Token after Invalidate = %q, %v (the rotated refresh token must be used)", tok, err)
	}
	if got := srv.requests(); len(got) != 2 || got[1] != "1//rotated-refresh-1-0123456789" {
		t.Errorf("refresh tokens sent: %v", got)
	}

	written := cfg
	written.RefreshToken = NewSecret("1//rotated-refresh-2-0123456789")
	for _, c := range []Config{written, cfg} {
		if tok, _, err = tk.Token(ctx, "gmail", c); err != nil || tok != "ya29.access-2-0123456789" {
			t.Errorf("Token with the refresh token %s: %q, %v; want the cached token", c.RefreshToken.Reveal(), tok, err)
		}
	}
	tk.Invalidate("gmail")
	if tok, _, err = tk.Token(ctx, "gmail", cfg); err != nil || tok != "ya29.access-3-0123456789" {
		t.Errorf("Token with the original refresh token in the config, after two rotations: %q, %v", tok, err)
	}
	if s := tk.Stats(); s.Requests != 3 || s.Rotations != 3 || len(reported) != 3 {
		t.Errorf("Stats %+v, %d reported; want 3 requests, 3 rotations", s, len(reported))
	}

	stale := cfg
	stale.RefreshToken = NewSecret("1//revoked-refresh-0123456789")
	_, _, err = tk.Token(ctx, "stale", stale)
	var te *TokenError
	want := "oauth2: token endpoint " + srv.URL + " refused the request: invalid_grant ([redacted]), HTTP 400"
	if !errors.As(err, &te) || err.Error() != want {
		t.Errorf("a revoked refresh token: %v\nwant %s", err, want)
	}
	noSecrets(t, "the error and the log", fmt.Sprintf("%v %+v", err, err)+logs.String(),
		"revoked-refresh", "rotated-refresh", "original-refresh", testSecret, "ya29.access")
}

// A rotated refresh token written back by the source comes back as a new
// Version carrying it, and an age file changed elsewhere as a new Version
// carrying the original: either way the cached token is kept (no
// request), and the next refresh uses the rotated token. A later Version
// that changes something else drops the cached token.
func TestRefreshTokenWrittenBack(t *testing.T) {
	const first = "1//original-refresh-0123456789"
	srv := startRefreshServer(t, first, true)
	tk, _ := newTokens(t, Options{})
	cfg := Config{Provider: "google", TokenURL: srv.URL, ClientID: "desktop-client", ClientSecret: NewSecret(testSecret), RefreshToken: NewSecret(first), Version: "1"}
	ctx := context.Background()
	if _, _, err := tk.Token(ctx, "gmail", cfg); err != nil {
		t.Fatal(err)
	}
	v2 := cfg
	v2.Version, v2.RefreshToken = "2", NewSecret("1//rotated-refresh-1-0123456789")
	reloaded := cfg
	reloaded.Version = "9"
	for _, c := range []Config{v2, v2, reloaded} {
		if tok, _, err := tk.Token(ctx, "gmail", c); err != nil || tok != "ya29.access-1-0123456789" {
			t.Fatalf("Token at version %s: %q, %v; want the cached token", c.Version, tok, err)
		}
	}
	tk.Invalidate("gmail")
	if tok, _, err := tk.Token(ctx, "gmail", v2); err != nil || tok != "ya29.access-2-0123456789" {
		t.Fatalf("Token after Invalidate: %q, %v", tok, err)
	}
	v3 := v2
	v3.Version, v3.RefreshToken, v3.Scopes = "3", NewSecret("1//rotated-refresh-2-0123456789"), []string{"https://mail.google.com/", "openid"}
	if tok, _, err := tk.Token(ctx, "gmail", v3); err != nil || tok != "ya29.access-3-0123456789" {
		t.Fatalf("Token with another scope: %q, %v; want a new token", tok, err)
	}
	if got := srv.requests(); len(got) != 3 || got[1] != "1//rotated-refresh-1-0123456789" {
		t.Errorf("refresh tokens sent: %v", got)
	}
}

// Without a new refresh token in the answer, nothing is reported and the
// same refresh token is used again.
func TestRefreshTokenNotRotated(t *testing.T) {
	const rt = "1//steady-refresh-0123456789"
	srv := startRefreshServer(t, rt, false)
	called := false
	tk, _ := newTokens(t, Options{OnRefreshToken: func(string, Secret) { called = true }})
	cfg := Config{TokenURL: srv.URL, ClientID: "desktop-client", ClientSecret: NewSecret(testSecret), RefreshToken: NewSecret(rt)}
	for range 2 {
		if _, _, err := tk.Token(context.Background(), "n", cfg); err != nil {
			t.Fatal(err)
		}
		tk.Invalidate("n")
	}
	if got := srv.requests(); called || len(got) != 2 || got[1] != rt || tk.Stats().Rotations != 0 {
		t.Errorf("callback %v, refresh tokens sent %v, stats %+v", called, got, tk.Stats())
	}
}

// Answers that are not a usable bearer token, one fault at a time, each
// with an error that names the endpoint and no secret.
func TestTokenEndpointFaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"not a bearer token", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"access_token":"at-0123456789abcdef","token_type":"mac","expires_in":60}`)
		}, `the token is of type "mac", not a bearer token`},
		{"no access token", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"token_type":"Bearer"}`)
		}, "server response missing access_token"},
		{"HTML error page", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "<html>"+r.PostFormValue("client_secret")+"</html>")
		}, "answered HTTP 502 without an OAuth error"},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example/token", http.StatusTemporaryRedirect)
		}, "answered HTTP 307 without an OAuth error"},
		{"echoed secret", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":"invalid_client","error_description":"secret %s is wrong"}`, r.PostFormValue("client_secret"))
		}, "refused the request: invalid_client ([redacted]), HTTP 401"},
	} {
		srv := httptest.NewServer(tc.handler)
		tk, _ := newTokens(t, Options{})
		_, _, err := tk.Token(context.Background(), "x", Config{TokenURL: srv.URL, ClientID: "c", ClientSecret: NewSecret(testSecret)})
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), srv.URL) {
			t.Errorf("%s: %v, want %q naming %s", tc.name, err, tc.want, srv.URL)
		}
		noSecrets(t, tc.name, fmt.Sprintf("%v", err), testSecret, "at-0123456789abcdef")
	}
	// A canceled caller stops waiting; the config is checked first.
	tk, _ := newTokens(t, Options{})
	if _, _, err := tk.Token(context.Background(), "x", Config{ClientID: "c"}); err == nil || !strings.Contains(err.Error(), "token_url is required") {
		t.Errorf("bad config: %v", err)
	}
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := tk.Token(ctx, "y", Config{TokenURL: srv.URL, ClientID: "c", ClientSecret: NewSecret(testSecret)}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled caller: %v", err)
	}
}
