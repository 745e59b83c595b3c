package oauth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

const (
	testSecret  = "client-secret-VALUE-0123456789"
	testRefresh = "refresh-token-VALUE-0123456789"
)

// Presets fill the token URL and scope; given values win; errors name the
// field.
func TestResolvePresets(t *testing.T) {
	sec := NewSecret(testSecret)
	for _, tc := range []struct {
		name    string
		in      Config
		url     string
		scopes  []string
		method  string
		wantErr string
	}{
		{"microsoft365", Config{Provider: "microsoft365", Tenant: "contoso.onmicrosoft.com", ClientID: "app", ClientSecret: sec},
			"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token", []string{"https://outlook.office365.com/.default"}, "client_secret_post", ""},
		{"microsoft365 tenant id", Config{Provider: "microsoft365", Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47", ClientID: "app", ClientSecret: sec},
			"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token", []string{"https://outlook.office365.com/.default"}, "client_secret_post", ""},
		{"microsoft365 national cloud", Config{Provider: "microsoft365", TokenURL: "https://login.microsoftonline.us/t/oauth2/v2.0/token", ClientID: "app", ClientSecret: sec},
			"https://login.microsoftonline.us/t/oauth2/v2.0/token", []string{"https://outlook.office365.com/.default"}, "client_secret_post", ""},
		{"google", Config{Provider: "google", ClientID: "id.apps.googleusercontent.com", ClientSecret: sec, RefreshToken: NewSecret(testRefresh)},
			"https://oauth2.googleapis.com/token", []string{"https://mail.google.com/"}, "client_secret_post", ""},
		{"google own scope", Config{Provider: "google", ClientID: "id", ClientSecret: sec, Scopes: []string{"https://www.googleapis.com/auth/gmail.send"}, AuthMethod: "client_secret_basic"},
			"https://oauth2.googleapis.com/token", []string{"https://www.googleapis.com/auth/gmail.send"}, "client_secret_basic", ""},
		{"no provider", Config{TokenURL: "http://127.0.0.1:4444/oauth2/token", ClientID: "c", ClientSecret: sec, Scopes: []string{"smtp"}},
			"http://127.0.0.1:4444/oauth2/token", []string{"smtp"}, "client_secret_post", ""},
		{"public refresh client", Config{TokenURL: "https://idp.example/token", ClientID: "c", RefreshToken: NewSecret(testRefresh)},
			"https://idp.example/token", nil, "none", ""},

		{"unknown provider", Config{Provider: "yahoo", ClientID: "c", ClientSecret: sec}, "", nil, "",
			`oauth2: provider "yahoo" is unknown (microsoft365, google, or none with token_url)`},
		{"microsoft365 without tenant", Config{Provider: "microsoft365", ClientID: "c", ClientSecret: sec}, "", nil, "",
			"oauth2: provider microsoft365 needs tenant (the Entra ID tenant id or domain)"},
		{"bad tenant", Config{Provider: "microsoft365", Tenant: "a/../b", ClientID: "c", ClientSecret: sec}, "", nil, "",
			`oauth2: tenant "a/../b" is not a tenant id or domain`},
		{"tenant without microsoft365", Config{Provider: "google", Tenant: "t", ClientID: "c", ClientSecret: sec}, "", nil, "",
			"oauth2: tenant is only for provider microsoft365"},
		{"no token url", Config{ClientID: "c", ClientSecret: sec}, "", nil, "", "oauth2: token_url is required (or a provider)"},
		{"no client id", Config{Provider: "google", ClientSecret: sec}, "", nil, "", "oauth2: client_id is required"},
		{"no secret", Config{Provider: "google", ClientID: "c"}, "", nil, "",
			"oauth2: client credentials need client_secret or private_key (private_key_jwt)"},
		{"both", Config{Provider: "google", ClientID: "c", ClientSecret: sec, PrivateKey: NewSecret(rsaKeyPEM(t))}, "", nil, "",
			"oauth2: give client_secret or private_key (private_key_jwt), not both"},
		{"certificate alone", Config{Provider: "google", ClientID: "c", ClientSecret: sec, Certificate: "x"}, "", nil, "",
			"oauth2: certificate needs the private_key that goes with it"},
		{"plain http", Config{TokenURL: "http://idp.example/token", ClientID: "c", ClientSecret: sec}, "", nil, "",
			"oauth2: token_url is plain http: only a loopback address may be (the client's secret would travel in clear)"},
		{"credentials in url", Config{TokenURL: "https://u:" + testSecret + "@idp.example/token", ClientID: "c", ClientSecret: sec}, "", nil, "",
			"oauth2: token_url must not hold a user name or password"},
		{"relative url", Config{TokenURL: "/token", ClientID: "c", ClientSecret: sec}, "", nil, "", "oauth2: token_url is not an absolute URL"},
		{"ftp url", Config{TokenURL: "ftp://idp.example/token", ClientID: "c", ClientSecret: sec}, "", nil, "", "oauth2: token_url is not https"},
		{"bad scope", Config{Provider: "google", ClientID: "c", ClientSecret: sec, Scopes: []string{"a b"}}, "", nil, "", `oauth2: scope "a b" is not a scope token`},
		{"bad auth method", Config{Provider: "google", ClientID: "c", ClientSecret: sec, AuthMethod: "tls_client_auth"}, "", nil, "",
			`oauth2: auth_method "tls_client_auth" is not client_secret_post or client_secret_basic`},
		{"secret method with key", Config{Provider: "google", ClientID: "c", PrivateKey: NewSecret(rsaKeyPEM(t)), AuthMethod: "client_secret_post"}, "", nil, "",
			`oauth2: auth_method "client_secret_post" does not go with private_key (it is private_key_jwt)`},
	} {
		got, err := tc.in.Resolve()
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%s: Resolve = %v\nwant %s", tc.name, err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), testSecret) {
				t.Errorf("%s: the error holds the client secret", tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got.TokenURL != tc.url || !slices.Equal(got.Scopes, tc.scopes) || got.AuthMethod != tc.method {
			t.Errorf("%s: Resolve = %s %v %s, want %s %v %s", tc.name, got.TokenURL, got.Scopes, got.AuthMethod, tc.url, tc.scopes, tc.method)
		}
	}
}

// No printed form of a Config or a Secret shows a secret: every fmt verb,
// slog (text and JSON), encoding/json, and a Secret inside an unexported
// field of another struct.
func TestConfigRedacts(t *testing.T) {
	key := rsaKeyPEM(t)
	cfg := Config{
		Provider: "google", ClientID: "client-id", ClientSecret: NewSecret(testSecret),
		RefreshToken: NewSecret(testRefresh), Scopes: []string{"s"}, Version: "7",
	}
	jwt := Config{TokenURL: "https://idp.example/token", ClientID: "c", PrivateKey: NewSecret(key)}
	keyLine := strings.Split(key, "\n")[3]
	secrets := []string{testSecret, testRefresh, keyLine, fmt.Sprintf("%x", testSecret)}

	var out strings.Builder
	for _, v := range []any{cfg, &cfg, jwt, cfg.ClientSecret, struct{ c Config }{cfg}, struct{ s Secret }{cfg.ClientSecret}, []Config{cfg}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
	}
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		slog.New(h).Info("x", "cfg", cfg, "jwt", jwt, "secret", cfg.ClientSecret)
	}
	out.Write(logs.Bytes())
	b, err := json.Marshal(map[string]any{"cfg": cfg, "jwt": jwt})
	if err != nil {
		t.Fatal(err)
	}
	out.Write(b)
	text := out.String()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("a secret (%.8s...) is printed:\n%s", s, text)
		}
	}
	for _, want := range []string{`ClientSecret:[redacted]`, `RefreshToken:[redacted]`, `PrivateKey:[empty]`, `"client_secret":"[redacted]"`, `Grant:refresh_token`, `ClientID:"client-id"`} {
		if !strings.Contains(text, want) {
			t.Errorf("printed forms lack %s:\n%s", want, text)
		}
	}
	if cfg.ClientSecret.Reveal() != testSecret || !cfg.ClientSecret.Equal(NewSecret(testSecret)) || cfg.ClientSecret.Equal(NewSecret("x")) {
		t.Error("Reveal or Equal is wrong")
	}
	if !(Secret{}).IsZero() || (Secret{}).String() != "[empty]" {
		t.Error("the zero Secret is not empty")
	}
}
