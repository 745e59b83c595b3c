package hydra

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Token endpoint authentication methods Hydra supports for
// client_credentials clients.
const (
	SecretPost    = "client_secret_post"
	SecretBasic   = "client_secret_basic"
	PrivateKeyJWT = "private_key_jwt"
)

// AssertionType is the client_assertion_type of a private_key_jwt
// token request (RFC 7523).
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// ClientSpec describes a client to create. Every client may use the
// client_credentials grant.
type ClientSpec struct {
	// AuthMethod is SecretPost (default), SecretBasic or PrivateKeyJWT.
	AuthMethod string
	// Scope is the space-separated list of scopes the client may ask for;
	// default "smtp".
	Scope string
	// Secret, for the secret methods, is the client secret (Hydra wants
	// at least 6 characters); default: Hydra picks one.
	Secret string
	// Key, for PrivateKeyJWT, is the RSA key the client signs assertions
	// with; its public half goes inline into the client's JWKS. Default:
	// a fresh 2048-bit key.
	Key *rsa.PrivateKey
	// KeyID is the key's kid; default: a hash of the public key.
	KeyID string
}

// Client is a client Hydra knows.
type Client struct {
	ID string
	// Secret is the client secret (secret methods only; Hydra also makes
	// one for a private_key_jwt client, but refuses it for that client).
	Secret     string
	AuthMethod string
	Scope      string
	// Key and KeyID sign the client's assertions (PrivateKeyJWT only).
	Key   *rsa.PrivateKey
	KeyID string
}

// KeyPEM returns the client's private key as PKCS #8 PEM, the form a
// credential file holds ("" without a key).
func (c *Client) KeyPEM() string {
	if c.Key == nil {
		return ""
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic("hydra: marshal RSA key: " + err.Error())
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// CreateClient creates a client_credentials client through the admin API.
func (s *Server) CreateClient(t testing.TB, spec ClientSpec) *Client {
	t.Helper()
	c := &Client{AuthMethod: spec.AuthMethod, Scope: spec.Scope, Secret: spec.Secret}
	if c.AuthMethod == "" {
		c.AuthMethod = SecretPost
	}
	if c.Scope == "" {
		c.Scope = "smtp"
	}
	body := map[string]any{
		"grant_types":                []string{"client_credentials"},
		"token_endpoint_auth_method": c.AuthMethod,
		"scope":                      c.Scope,
	}
	switch c.AuthMethod {
	case SecretPost, SecretBasic:
		if c.Secret != "" {
			body["client_secret"] = c.Secret
		}
	case PrivateKeyJWT:
		c.Key, c.KeyID = spec.Key, spec.KeyID
		if c.Key == nil {
			var err error
			if c.Key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
				t.Fatalf("hydra: generate client key: %v", err)
			}
		}
		if c.KeyID == "" {
			sum := sha256.Sum256(x509.MarshalPKCS1PublicKey(&c.Key.PublicKey))
			c.KeyID = hex.EncodeToString(sum[:8])
		}
		body["token_endpoint_auth_signing_alg"] = "RS256"
		body["jwks"] = map[string]any{"keys": []any{PublicJWK(&c.Key.PublicKey, c.KeyID)}}
	default:
		t.Fatalf("hydra: unknown token endpoint auth method %q", c.AuthMethod)
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	s.admin(t, http.MethodPost, "/admin/clients", body, http.StatusCreated, &out)
	c.ID = out.ClientID
	if c.AuthMethod != PrivateKeyJWT {
		c.Secret = out.ClientSecret
	}
	return c
}

// DeleteClient deletes a client; its tokens stop being active.
func (s *Server) DeleteClient(t testing.TB, id string) {
	t.Helper()
	s.admin(t, http.MethodDelete, "/admin/clients/"+url.PathEscape(id), nil, http.StatusNoContent, nil)
}

// RotateSecret gives the client a new secret (a JSON Patch of
// /client_secret through the admin API), stores it in c.Secret and
// returns it. Hydra keeps one secret per client: the old one stops
// working at once. Tokens issued before stay active.
func (s *Server) RotateSecret(t testing.TB, c *Client) string {
	t.Helper()
	b := make([]byte, 18)
	rand.Read(b)
	secret := "rotated-" + base64.RawURLEncoding.EncodeToString(b)
	s.SetSecret(t, c, secret)
	return secret
}

// SetSecret gives the client the secret secret (at least 6 characters),
// as RotateSecret does with one of its own: the old one stops working at
// once, tokens issued before stay active.
func (s *Server) SetSecret(t testing.TB, c *Client, secret string) {
	t.Helper()
	patch := []map[string]string{{"op": "replace", "path": "/client_secret", "value": secret}}
	s.admin(t, http.MethodPatch, "/admin/clients/"+url.PathEscape(c.ID), patch, http.StatusOK, nil)
	c.Secret = secret
}

// Token gets an access token for c with the client_credentials grant,
// asking for c.Scope, straight from Hydra (not through the counting
// proxy, so it works while the proxy is down).
func (s *Server) Token(t testing.TB, c *Client) string {
	t.Helper()
	tok, err := s.RequestToken(s.PublicURL+"/oauth2/token", c)
	if err != nil {
		t.Fatalf("hydra: token for client %s: %v", c.ID, err)
	}
	return tok
}

// RequestToken posts a client_credentials request for c to tokenURL and
// returns the access token, or an error holding Hydra's answer.
func (s *Server) RequestToken(tokenURL string, c *Client) (string, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {c.Scope}}
	req, err := s.clientRequest(tokenURL, c, form)
	if err != nil {
		return "", err
	}
	var out struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := s.do(req, http.StatusOK, &out); err != nil {
		return "", err
	}
	if out.AccessToken == "" || !strings.EqualFold(out.TokenType, "bearer") {
		return "", fmt.Errorf("token response without a bearer token (type %q)", out.TokenType)
	}
	return out.AccessToken, nil
}

// Revoke revokes an access token of c (RFC 7009, with c's own client
// authentication, straight to Hydra). Introspection then answers
// inactive for it.
func (s *Server) Revoke(t testing.TB, c *Client, token string) {
	t.Helper()
	req, err := s.clientRequest(s.PublicURL+"/oauth2/revoke", c, url.Values{"token": {token}})
	if err == nil {
		err = s.do(req, http.StatusOK, nil)
	}
	if err != nil {
		t.Fatalf("hydra: revoke a token of client %s: %v", c.ID, err)
	}
}

// Introspection is the part of an introspection answer tests look at.
type Introspection struct {
	Active   bool   `json:"active"`
	ClientID string `json:"client_id"`
	Subject  string `json:"sub"`
	Scope    string `json:"scope"`
	IssuedAt int64  `json:"iat"`
	Expires  int64  `json:"exp"`
}

// Introspect asks the admin API about a token, as Dovecot does.
func (s *Server) Introspect(t testing.TB, token string) Introspection {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.IntrospectURL, strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatalf("hydra: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out Introspection
	if err := s.do(req, http.StatusOK, &out); err != nil {
		t.Fatalf("hydra: introspect: %v", err)
	}
	return out
}

// clientRequest builds a POST of form to endpoint authenticated as c:
// the secret in the form or in Basic auth, or a fresh assertion whose
// audience is TokenURL (Hydra checks it against its issuer's token
// endpoint, whatever URL the request went to).
func (s *Server) clientRequest(endpoint string, c *Client, form url.Values) (*http.Request, error) {
	switch c.AuthMethod {
	case SecretPost:
		form.Set("client_id", c.ID)
		form.Set("client_secret", c.Secret)
	case PrivateKeyJWT:
		a, err := SignAssertion(c.Key, c.KeyID, c.ID, s.TokenURL, time.Minute)
		if err != nil {
			return nil, err
		}
		form.Set("client_assertion_type", AssertionType)
		form.Set("client_assertion", a)
	}
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.AuthMethod == SecretBasic {
		req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret)) // RFC 6749 2.3.1
	}
	return req, nil
}

// admin sends a JSON request to the admin API and decodes the answer
// into out (if not nil); any status but want fails the test.
func (s *Server) admin(t testing.TB, method, path string, body any, want int, out any) {
	t.Helper()
	if err := s.adminErr(method, path, body, want, out); err != nil {
		t.Fatalf("hydra: %s %s: %v", method, path, err)
	}
}

// adminErr is admin, returning the error.
func (s *Server) adminErr(method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, s.AdminURL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return s.do(req, want, out)
}

func (s *Server) do(req *http.Request, want int, out any) error {
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("status %d (want %d): %s", resp.StatusCode, want, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

// PublicJWK is the JSON Web Key of an RSA public key, for RS256
// signatures, as a client's inline JWKS holds it.
func PublicJWK(pub *rsa.PublicKey, kid string) map[string]string {
	return map[string]string{
		"kty": "RSA",
		"use": "sig",
		"alg": "RS256",
		"kid": kid,
		"n":   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}
}

// SignAssertion returns a client assertion JWT (RFC 7523, RS256): iss and
// sub clientID, aud audience (the token endpoint URL), a fresh jti, iat
// now and exp now+ttl, with kid in its header.
func SignAssertion(key *rsa.PrivateKey, kid, clientID, audience string, ttl time.Duration) (string, error) {
	jti := make([]byte, 16)
	rand.Read(jti)
	now := time.Now()
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid})
	claims, _ := json.Marshal(map[string]any{
		"iss": clientID,
		"sub": clientID,
		"aud": audience,
		"jti": hex.EncodeToString(jti),
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
	})
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign client assertion: %w", err)
	}
	return signed + "." + enc.EncodeToString(sig), nil
}
