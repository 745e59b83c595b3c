package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// ErrUnreachable is matched (errors.Is) by a *TokenError for a token
// endpoint that gave no answer: refused, timed out, no route, no DNS.
var ErrUnreachable = errors.New("token endpoint unreachable")

// TokenError is a failed token request. It names the endpoint and what
// the endpoint said (RFC 6749 section 5.2: error and error_description),
// never a client secret, private key, assertion, refresh token or access
// token: text from the endpoint that repeats one of those is redacted.
type TokenError struct {
	// Endpoint is the token URL.
	Endpoint string
	// Unreachable is set when the endpoint gave no answer; Err then says
	// why (errors.Is(err, syscall.ECONNREFUSED) works through it).
	Unreachable bool
	// Status is the HTTP status of an answer (0 if none).
	Status int
	// Code and Description are the OAuth error ("invalid_client",
	// "invalid_scope"...) and its description, if the endpoint sent one.
	Code, Description string
	// Problem describes a fault that is not an OAuth error (a response
	// without an access token, or a token that is not a bearer token).
	Problem string
	// Err is the network error of an unreachable endpoint.
	Err error
}

func (e *TokenError) Error() string {
	switch {
	case e.Unreachable:
		return fmt.Sprintf("oauth2: token endpoint %s unreachable: %v", e.Endpoint, e.Err)
	case e.Code != "":
		s := fmt.Sprintf("oauth2: token endpoint %s refused the request: %s", e.Endpoint, e.Code)
		if e.Description != "" {
			s += " (" + e.Description + ")"
		}
		if e.Status != 0 {
			s += fmt.Sprintf(", HTTP %d", e.Status)
		}
		return s
	case e.Problem != "":
		return fmt.Sprintf("oauth2: token endpoint %s: %s", e.Endpoint, e.Problem)
	}
	return fmt.Sprintf("oauth2: token endpoint %s answered HTTP %d without an OAuth error", e.Endpoint, e.Status)
}

// Unwrap returns the network error.
func (e *TokenError) Unwrap() error { return e.Err }

// Is matches ErrUnreachable for an unreachable endpoint.
func (e *TokenError) Is(target error) bool { return target == ErrUnreachable && e.Unreachable }

// fetched is one token endpoint answer.
type fetched struct {
	access  Secret
	refresh Secret // as the endpoint returned it (or the one sent)
	expiry  time.Time
	scopes  []string
}

// fetch asks the token endpoint for a token, once. refresh is the
// refresh token to use for the refresh-token form.
func fetch(ctx context.Context, hc *http.Client, cfg Config, sig *signer, refresh Secret) (*fetched, error) {
	cc := clientcredentials.Config{
		ClientID:       cfg.ClientID,
		TokenURL:       cfg.TokenURL,
		Scopes:         cfg.Scopes,
		AuthStyle:      oauth2.AuthStyleInParams,
		EndpointParams: url.Values{},
	}
	var hide []string // what the endpoint's text must not repeat
	switch cfg.AuthMethod {
	case ClientSecretPost, ClientSecretBasic:
		cc.ClientSecret = cfg.ClientSecret.Reveal()
		hide = append(hide, cc.ClientSecret)
		if cfg.AuthMethod == ClientSecretBasic {
			cc.AuthStyle = oauth2.AuthStyleInHeader
		}
	case PrivateKeyJWT:
		a, err := sig.sign(cfg.ClientID, cfg.TokenURL, time.Now())
		if err != nil {
			return nil, err
		}
		cc.EndpointParams.Set("client_assertion_type", AssertionType)
		cc.EndpointParams.Set("client_assertion", a)
		hide = append(hide, a)
	}
	if !refresh.IsZero() {
		// clientcredentials lets grant_type be replaced: the one request
		// builder serves both grants.
		cc.EndpointParams.Set("grant_type", GrantRefreshToken)
		cc.EndpointParams.Set("refresh_token", refresh.Reveal())
		hide = append(hide, refresh.Reveal())
	}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, hc))
	if err != nil {
		return nil, tokenError(cfg.TokenURL, err, hide)
	}
	hide = append(hide, tok.AccessToken)
	if tok.TokenType != "" && !strings.EqualFold(tok.TokenType, "bearer") {
		return nil, &TokenError{Endpoint: cfg.TokenURL, Problem: fmt.Sprintf("the token is of type %s, not a bearer token", quoted(tok.TokenType, hide))}
	}
	f := &fetched{access: NewSecret(tok.AccessToken), refresh: NewSecret(tok.RefreshToken), expiry: tok.Expiry, scopes: cfg.Scopes}
	if s, ok := tok.Extra("scope").(string); ok && s != "" {
		f.scopes = strings.Fields(s)
	}
	return f, nil
}

// tokenError turns what x/oauth2 returned into a *TokenError.
func tokenError(endpoint string, err error, hide []string) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		e := &TokenError{Endpoint: endpoint, Code: re.ErrorCode, Description: re.ErrorDescription}
		if re.Response != nil {
			e.Status = re.Response.StatusCode
		}
		e.Code = strings.Trim(quoted(e.Code, hide), `"`)
		if e.Description != "" {
			e.Description = strings.Trim(quoted(e.Description, hide), `"`)
		}
		return e
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		if errors.Is(ue.Err, context.Canceled) {
			return fmt.Errorf("oauth2: token request to %s canceled: %w", endpoint, ue.Err)
		}
		// The URL is named once, by the TokenError.
		return &TokenError{Endpoint: endpoint, Unreachable: true, Err: ue.Err}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &TokenError{Endpoint: endpoint, Unreachable: true, Err: err}
	}
	// x/oauth2's own faults: fixed texts ("server response missing
	// access_token", "cannot parse json: invalid character..."), but
	// reduced like the rest.
	return &TokenError{Endpoint: endpoint, Problem: strings.Trim(quoted(strings.TrimPrefix(err.Error(), "oauth2: "), hide), `"`)}
}

// quoted reduces text from the endpoint to at most 300 bytes of printable
// ASCII, quoted, or [redacted] when it shares 8 bytes in a row with one
// of hide.
func quoted(s string, hide []string) string {
	for _, h := range hide {
		for i := 0; i+8 <= len(h); i++ {
			if strings.Contains(s, h[i:i+8]) {
				return Redacted
			}
		}
		if h != "" && len(h) < 8 && strings.Contains(s, h) {
			return Redacted
		}
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return fmt.Sprintf("%q", b)
}
