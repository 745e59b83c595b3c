package hydra

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

// jwtPart decodes part i (0 header, 1 claims) of a JWT.
func jwtPart(t *testing.T, token string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want a JWT's 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Clients with a secret (in the form, in Basic auth) get JWT access tokens
// at TokenURL, each request counted; introspection knows them; the JWT's
// kid is in the JWKS, whose request is not counted.
func TestClientCredentials(t *testing.T) {
	s := Start(t, Options{AccessTokenTTL: 90 * time.Second})
	for i, method := range []string{SecretPost, SecretBasic} {
		c := s.CreateClient(t, ClientSpec{AuthMethod: method})
		if c.ID == "" || c.Secret == "" {
			t.Fatalf("%s client: id %q, secret set %v", method, c.ID, c.Secret != "")
		}
		tok, err := s.RequestToken(s.TokenURL, c)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if n := s.TokenRequests(); n != i+1 {
			t.Errorf("after %d token requests the proxy counted %d", i+1, n)
		}
		in := s.Introspect(t, tok)
		if !in.Active || in.ClientID != c.ID || in.Subject != c.ID || in.Scope != "smtp" {
			t.Errorf("%s: introspection %+v, want active, client and sub %s, scope smtp", method, in, c.ID)
		}
		if in.Expires-in.IssuedAt != 90 {
			t.Errorf("%s: token lives %d s, want the configured 90", method, in.Expires-in.IssuedAt)
		}
		claims := jwtPart(t, tok, 1)
		if claims["iss"] != s.Issuer || claims["client_id"] != c.ID {
			t.Errorf("%s: claims %v, want iss %s and client_id %s", method, claims, s.Issuer, c.ID)
		}
		kid, _ := jwtPart(t, tok, 0)["kid"].(string)
		resp, err := http.Get(s.JWKSURL)
		if err != nil {
			t.Fatal(err)
		}
		var jwks struct{ Keys []struct{ Kid string } }
		json.NewDecoder(resp.Body).Decode(&jwks) //nolint:errcheck // checked below
		resp.Body.Close()
		found := false
		for _, k := range jwks.Keys {
			found = found || (k.Kid == kid && kid != "")
		}
		if !found {
			t.Errorf("%s: the token's kid %q is not in %s (%v)", method, kid, s.JWKSURL, jwks.Keys)
		}
	}
	if n := s.TokenRequests(); n != 2 {
		t.Errorf("the proxy counted %d token requests, want 2 (JWKS and introspection are not token requests)", n)
	}
	wrong := &Client{ID: s.CreateClient(t, ClientSpec{}).ID, Secret: "not-the-secret", AuthMethod: SecretPost, Scope: "smtp"}
	if _, err := s.RequestToken(s.TokenURL, wrong); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("token with a wrong secret: %v, want invalid_client", err)
	}
}

// A private_key_jwt client gets a token with an assertion signed by its
// key; an assertion signed by another key, or naming another audience, is
// refused, and so is the secret Hydra made for it.
func TestPrivateKeyJWT(t *testing.T) {
	s := Start(t, Options{})
	c := s.CreateClient(t, ClientSpec{AuthMethod: PrivateKeyJWT})
	if c.Key == nil || c.KeyID == "" || !strings.Contains(c.KeyPEM(), "BEGIN PRIVATE KEY") {
		t.Fatalf("private_key_jwt client without its key: %+v", c)
	}
	tok, err := s.RequestToken(s.TokenURL, c)
	if err != nil {
		t.Fatal(err)
	}
	if in := s.Introspect(t, tok); !in.Active || in.ClientID != c.ID {
		t.Fatalf("introspection %+v, want active for %s", in, c.ID)
	}

	post := func(form url.Values) (int, string) {
		t.Helper()
		form.Set("grant_type", "client_credentials")
		resp, err := http.PostForm(s.TokenURL, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return resp.StatusCode, b.String()
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]func() (string, error){
		"another key": func() (string, error) { return SignAssertion(other, c.KeyID, c.ID, s.TokenURL, time.Minute) },
		"another audience": func() (string, error) {
			return SignAssertion(c.Key, c.KeyID, c.ID, s.PublicURL+"/oauth2/token", time.Minute)
		},
	} {
		jwt, err := a()
		if err != nil {
			t.Fatal(err)
		}
		code, body := post(url.Values{"client_assertion_type": {AssertionType}, "client_assertion": {jwt}})
		if code != http.StatusUnauthorized || !strings.Contains(body, "invalid_client") {
			t.Errorf("assertion signed with %s: %d %s, want 401 invalid_client", name, code, body)
		}
	}
	code, body := post(url.Values{"client_id": {c.ID}, "client_secret": {"anything"}})
	if code != http.StatusUnauthorized || !strings.Contains(body, "invalid_client") {
		t.Errorf("a secret for a private_key_jwt client: %d %s, want 401 invalid_client", code, body)
	}
}

// Revoking a token, deleting a client and rotating a secret each take
// effect at once.
func TestRevokeDeleteRotate(t *testing.T) {
	s := Start(t, Options{OpaqueTokens: true})
	a := s.CreateClient(t, ClientSpec{})
	keep, gone := s.Token(t, a), s.Token(t, a)
	if strings.Count(keep, ".") == 2 {
		t.Errorf("OpaqueTokens gave a JWT")
	}
	s.Revoke(t, a, gone)
	if in := s.Introspect(t, gone); in.Active {
		t.Errorf("revoked token still active: %+v", in)
	}
	if in := s.Introspect(t, keep); !in.Active {
		t.Errorf("the token that was not revoked is inactive")
	}

	old := a.Secret
	if s.RotateSecret(t, a) == old || a.Secret == old {
		t.Fatal("RotateSecret kept the old secret")
	}
	if _, err := s.RequestToken(s.TokenURL, a); err != nil {
		t.Errorf("token with the new secret: %v", err)
	}
	stale := *a
	stale.Secret = old
	if _, err := s.RequestToken(s.TokenURL, &stale); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("token with the old secret after rotation: %v, want invalid_client", err)
	}

	s.DeleteClient(t, a.ID)
	if in := s.Introspect(t, keep); in.Active {
		t.Errorf("token of a deleted client still active: %+v", in)
	}
	if _, err := s.RequestToken(s.TokenURL, a); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("token for a deleted client: %v, want invalid_client", err)
	}
}

// Down makes TokenURL refuse connections while Hydra itself goes on; Up
// brings the same URL back. Refused requests are not counted.
func TestDownUp(t *testing.T) {
	s := Start(t, Options{})
	c := s.CreateClient(t, ClientSpec{})
	s.Down(t)
	_, err := s.RequestToken(s.TokenURL, c)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("token request while down: %v, want connection refused", err)
	}
	if in := s.Introspect(t, s.Token(t, c)); !in.Active {
		t.Fatal("Hydra itself should work while the proxy is down")
	}
	if n := s.TokenRequests(); n != 0 {
		t.Errorf("counted %d token requests while down, want 0", n)
	}
	s.Up(t)
	if _, err := s.RequestToken(s.TokenURL, c); err != nil {
		t.Fatalf("token request after Up: %v", err)
	}
	if n := s.TokenRequests(); n != 1 {
		t.Errorf("counted %d token requests, want 1", n)
	}
	s.Stop()
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(s.AdminURL, "http://"), time.Second); err == nil {
		conn.Close()
		t.Errorf("Hydra's admin port still answers after Stop")
	}
}

// The delegated form: a refresh token from the authorization code flow
// gets an access token for the subject at TokenURL, and a new refresh
// token each time (rotation): the used one is void. IssuedTokens holds
// what the proxy saw handed out.
func TestDelegatedClient(t *testing.T) {
	s := Start(t, Options{})
	d := s.DelegatedClient(t, "relay@example.test", "smtp")
	if d.RefreshToken == "" || d.Secret == "" {
		t.Fatal("no refresh token or client secret")
	}
	refresh := func(rt string) (access, next string, err error) {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
		req, err := s.clientRequest(s.TokenURL, d.Client, form)
		if err != nil {
			return "", "", err
		}
		var out struct {
			Access  string `json:"access_token"`
			Refresh string `json:"refresh_token"`
		}
		err = s.do(req, http.StatusOK, &out)
		return out.Access, out.Refresh, err
	}
	access, rt1, err := refresh(d.RefreshToken)
	if err != nil || rt1 == "" || rt1 == d.RefreshToken {
		t.Fatalf("refresh: %v (new refresh token: %v)", err, rt1 != "" && rt1 != d.RefreshToken)
	}
	if in := s.Introspect(t, access); !in.Active || in.Subject != "relay@example.test" || in.Scope != "offline_access smtp" {
		t.Errorf("introspection %+v, want active for relay@example.test with scope offline_access smtp", in)
	}
	if _, _, err := refresh(d.RefreshToken); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("the used refresh token again: %v, want invalid_grant", err)
	}
	if got := s.IssuedTokens(); len(got) != 2 || got[0] != access || got[1] != rt1 {
		t.Errorf("IssuedTokens = %d tokens, want the access token and the new refresh token", len(got))
	}
}
