package hydra

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"
)

// CallbackURL is the redirect URI of delegated clients. Nothing listens
// there: the flow reads the code from the redirect to it.
const CallbackURL = "http://127.0.0.1:9/callback"

// Delegated is a client of the authorization code grant and a refresh
// token a user granted it, as an operator gets one from a consent flow
// for a Google account.
type Delegated struct {
	*Client
	// Subject is the user who consented: the sub of its tokens.
	Subject string
	// RefreshToken is the refresh token the code was exchanged for.
	// Hydra rotates it on every use: the next refresh gets a new one, and
	// this one is void.
	RefreshToken string
}

// DelegatedClient creates a confidential client (client_secret_post) of
// the authorization code and refresh token grants, allowed scope plus
// offline_access, and runs the flow a browser would for subject: the
// authorization request, the login and the consent accepted through the
// admin API, the code exchanged at the token endpoint (straight to Hydra,
// not counted). Its refresh token asks for scope.
func (s *Server) DelegatedClient(t testing.TB, subject, scope string) *Delegated {
	t.Helper()
	body := map[string]any{
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": SecretPost,
		"scope":                      "offline_access " + scope,
		"redirect_uris":              []string{CallbackURL},
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	s.admin(t, http.MethodPost, "/admin/clients", body, http.StatusCreated, &out)
	d := &Delegated{Client: &Client{ID: out.ClientID, Secret: out.ClientSecret, AuthMethod: SecretPost, Scope: scope}, Subject: subject}
	code, err := s.authorize(d, "offline_access "+scope)
	if err != nil {
		t.Fatalf("hydra: authorization code flow for %s: %v", subject, err)
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {CallbackURL}}
	req, err := s.clientRequest(s.PublicURL+"/oauth2/token", d.Client, form)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := s.do(req, http.StatusOK, &tok); err != nil || tok.RefreshToken == "" {
		t.Fatalf("hydra: exchanging the code: %v (refresh token given: %v)", err, tok.RefreshToken != "")
	}
	d.RefreshToken = tok.RefreshToken
	return d
}

// authorize runs the browser's part of the authorization code flow for d
// and returns the code.
func (s *Server) authorize(d *Delegated, scope string) (string, error) {
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	state := make([]byte, 16)
	rand.Read(state)
	q := url.Values{"client_id": {d.ID}, "response_type": {"code"}, "scope": {scope},
		"redirect_uri": {CallbackURL}, "state": {hex.EncodeToString(state)}}
	next := s.PublicURL + "/oauth2/auth?" + q.Encode()
	for _, step := range []struct{ param, accept string }{
		{"login_challenge", "login"},
		{"consent_challenge", "consent"},
	} {
		loc, err := redirect(browser, next)
		if err != nil {
			return "", err
		}
		challenge := loc.Query().Get(step.param)
		if challenge == "" {
			return "", fmt.Errorf("redirected to %s, want a %s", loc, step.param)
		}
		accept := map[string]any{"subject": d.Subject}
		if step.accept == "consent" {
			accept = map[string]any{"grant_scope": strings.Fields(scope)}
		}
		var out struct {
			RedirectTo string `json:"redirect_to"`
		}
		path := "/admin/oauth2/auth/requests/" + step.accept + "/accept?" + step.param + "=" + url.QueryEscape(challenge)
		if err := s.adminErr(http.MethodPut, path, accept, http.StatusOK, &out); err != nil {
			return "", fmt.Errorf("accepting the %s: %w", step.accept, err)
		}
		// The redirect names the issuer (the proxy); the flow goes on at
		// Hydra itself, so that it works while the proxy is down.
		next = strings.Replace(out.RedirectTo, s.Issuer, s.PublicURL, 1)
	}
	loc, err := redirect(browser, next)
	if err != nil {
		return "", err
	}
	code := loc.Query().Get("code")
	if code == "" || !strings.HasPrefix(loc.String(), CallbackURL) {
		return "", fmt.Errorf("redirected to %s?%s, want the callback with a code", CallbackURL, loc.Query().Get("error"))
	}
	return code, nil
}

// redirect GETs u and returns where it redirects to.
func redirect(c *http.Client, u string) (*url.URL, error) {
	resp, err := c.Get(u)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
		return nil, fmt.Errorf("GET %s: status %d, want a redirect", strings.Split(u, "?")[0], resp.StatusCode)
	}
	return resp.Location()
}
