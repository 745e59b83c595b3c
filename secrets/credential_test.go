package secrets

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/testing/testpki"
)

const (
	secretPassword     = "pa55-Word-never-printed"
	secretClient       = "cs-Client-Secret-never-printed"
	secretRefresh      = "rt-Refresh-Token-never-printed"
	secretAccessKey    = "sak/Secret+Access+Key+never+printed"
	testAccessKeyID    = "AKIAIOSFODNN7EXAMPLE"
	testRegion         = "eu-central-1"
	testCertName       = "relay1.example.com"
	testOAuthMailbox   = "relay@contoso.example"
	testOAuthClientID  = "00000000-1111-2222-3333-444444444444"
	testOAuthTenantDom = "contoso.example"
)

// kindFixture is one credential of each kind, with every secret it holds.
type kindFixture struct {
	name    string
	cred    Credential
	secrets []string // every secret value, and what is derived from one
}

// testPEM is a key pair for the tests of this package (test only).
type testPEM struct{ cert, key string }

func newTestPEM(t testing.TB) testPEM {
	t.Helper()
	ca := testpki.CA(t, "sealrelay test CA")
	leaf := testpki.Leaf(t, ca, testpki.Options{CommonName: testCertName})
	return testPEM{cert: leaf.CertPEM(ca), key: leaf.KeyPEM(t)}
}

// mustParse parses an entry the test expects to be valid.
func mustParse(t testing.TB, name string, data map[string]any) Credential {
	t.Helper()
	c, err := ParseEntry(name, data)
	if err != nil {
		t.Fatalf("ParseEntry(%s): %v", name, err)
	}
	return c
}

func kindFixtures(t testing.TB) []kindFixture {
	t.Helper()
	p := newTestPEM(t)
	jwt := newTestPEM(t)
	sesCred := mustParse(t, "ses", map[string]any{"kind": "ses", "access_key_id": testAccessKeyID,
		"region": testRegion, "secret_access_key": secretAccessKey, "generation": "G1"})
	return []kindFixture{
		{"password", NewCredential("primary", "relay@example.com", secretPassword, "sha256:0123456789ab"), []string{secretPassword}},
		{"oauth2 client secret", mustParse(t, "m365", map[string]any{"kind": "oauth2", "username": testOAuthMailbox,
			"provider": "microsoft365", "tenant": testOAuthTenantDom, "client_id": testOAuthClientID,
			"client_secret": secretClient, "generation": "G2"}), []string{secretClient}},
		{"oauth2 refresh token", mustParse(t, "gmail", map[string]any{"kind": "oauth2", "username": "relay@example.com",
			"provider": "google", "client_id": "client.apps.googleusercontent.com", "client_secret": secretClient,
			"refresh_token": secretRefresh}), []string{secretClient, secretRefresh}},
		{"oauth2 private key", mustParse(t, "entra-cert", map[string]any{"kind": "oauth2", "username": testOAuthMailbox,
			"token_url": "https://idp.example/token", "client_id": testOAuthClientID, "scopes": []any{"smtp", "mail"},
			"certificate": jwt.cert, "private_key": jwt.key}), []string{jwt.key}},
		{"certificate", mustParse(t, "corp-cert", map[string]any{"kind": "certificate", "certificate": p.cert,
			"private_key": p.key}), []string{p.key}},
		{"ses", sesCred, []string{secretAccessKey, sesCred.Password()}},
	}
}

// leaks reports which of secrets s shows, in any form a formatter could
// produce: as is, hex, base64, quoted, or, for PEM, any line of its body.
func leaks(s string, secrets []string) []string {
	var found []string
	low := strings.ToLower(s)
	for _, sec := range secrets {
		forms := []string{sec, hex.EncodeToString([]byte(sec)), base64.StdEncoding.EncodeToString([]byte(sec)),
			strings.Trim(fmt.Sprintf("%q", sec), `"`)}
		if strings.Contains(sec, "-----BEGIN") {
			lines := strings.Split(sec, "\n")
			forms = append(forms, lines[1:len(lines)-2]...)
		} else {
			forms = append(forms, sec[:10])
		}
		for _, f := range forms {
			if f != "" && strings.Contains(low, strings.ToLower(f)) {
				found = append(found, sec[:10])
				break
			}
		}
	}
	return found
}

func TestCredentialAccessors(t *testing.T) {
	c := NewCredential("primary", "relay@example.com", secretPassword, "v1")
	if c.Password() != secretPassword || !c.HasPassword() || c.IsZero() || c.Kind() != KindPassword {
		t.Errorf("accessors wrong: HasPassword %v IsZero %v Kind %s", c.HasPassword(), c.IsZero(), c.Kind())
	}
	if !(Credential{}).IsZero() || (Credential{}).HasPassword() || (Credential{}).Kind() != KindPassword {
		t.Error("zero Credential: IsZero false, HasPassword true, or not a password")
	}
	fx := kindFixtures(t)
	get := func(name string) Credential {
		for _, f := range fx {
			if f.name == name {
				return f.cred
			}
		}
		t.Fatalf("no fixture %s", name)
		return Credential{}
	}
	m365 := get("oauth2 client secret")
	if m365.Kind() != KindOAuth2 || m365.Username != testOAuthMailbox || m365.ClientSecret() != secretClient ||
		m365.Password() != "" || m365.Generation != "G2" || m365.Field(KeyTenant) != testOAuthTenantDom ||
		m365.Field(KeyClientSecret) != "" || m365.IsZero() {
		t.Errorf("oauth2 accessors wrong: %v", m365)
	}
	if got := m365.TokenEndpoint(); got != "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token" {
		t.Errorf("TokenEndpoint = %s", got)
	}
	gmail := get("oauth2 refresh token")
	if got := gmail.SecretKeys(); !slices.Equal(got, []string{"client_secret", "refresh_token"}) || !slices.Equal(c.SecretKeys(), []string{"password"}) {
		t.Errorf("SecretKeys = %q, %q", got, c.SecretKeys())
	}
	if gmail.RefreshToken() != secretRefresh || gmail.TokenEndpoint() != "https://oauth2.googleapis.com/token" {
		t.Errorf("refresh token form: %v", gmail)
	}
	jwt := get("oauth2 private key")
	if got := jwt.Scopes(); len(got) != 2 || got[0] != "smtp" || jwt.Field(KeyScopes) != "smtp mail" || !strings.Contains(jwt.PrivateKey(), "PRIVATE KEY") {
		t.Errorf("private key form: scopes %q", got)
	}
	cert := get("certificate")
	if cert.Username != "" || cert.Kind() != KindCertificate || cert.IsZero() || cert.Password() != "" {
		t.Errorf("certificate: %v", cert)
	}
	sesC := get("ses")
	if sesC.Username != testAccessKeyID || sesC.Field(KeyRegion) != testRegion || sesC.SecretAccessKey() != secretAccessKey {
		t.Errorf("ses: %v", sesC)
	}
	if sesC.Password() == "" || sesC.Password() == secretAccessKey {
		t.Error("ses: Password is not the derived SMTP password")
	}
}

// WithRefreshToken replaces only the refresh token (and the generation)
// of the delegated form, and refuses an entry without one, naming it.
func TestWithRefreshToken(t *testing.T) {
	var gmail, m365 Credential
	for _, f := range kindFixtures(t) {
		switch f.name {
		case "oauth2 refresh token":
			gmail = f.cred
		case "oauth2 client secret":
			m365 = f.cred
		}
	}
	got, err := gmail.WithRefreshToken("rotated-" + secretRefresh)
	if err != nil {
		t.Fatal(err)
	}
	if got.RefreshToken() != "rotated-"+secretRefresh || got.ClientSecret() != gmail.ClientSecret() || got.Name != gmail.Name ||
		got.Username != gmail.Username || !slices.Equal(withoutGeneration(got.Fields()), withoutGeneration(gmail.Fields())) ||
		got.Generation == gmail.Generation || !ValidGeneration(got.Generation) || got.Version != "" {
		t.Errorf("WithRefreshToken: %v, from %v", got, gmail)
	}
	for _, c := range []Credential{m365, NewCredential("primary", "u", secretPassword, "")} {
		if _, err := c.WithRefreshToken("x-" + secretRefresh); err == nil || err.Error() != fmt.Sprintf("credential %q has no refresh token to replace", c.Name) {
			t.Errorf("WithRefreshToken on %s: %v", c.Kind(), err)
		}
	}
}

func withoutGeneration(fs []Field) []Field {
	return slices.DeleteFunc(fs, func(f Field) bool { return f.Key == KeyGeneration })
}

// SameSecret tells any change that matters to authentication, and none
// that does not (name, version, generation).
func TestCredentialSameSecret(t *testing.T) {
	base := map[string]any{"kind": "oauth2", "username": "u@example.com", "token_url": "https://idp.example/token",
		"client_id": "c", "client_secret": secretClient, "scopes": []any{"a"}, "generation": "G1"}
	with := func(k string, v any) map[string]any {
		d := map[string]any{}
		for kk, vv := range base {
			d[kk] = vv
		}
		if v == nil {
			delete(d, k)
		} else {
			d[k] = v
		}
		return d
	}
	a := mustParse(t, "a", base)
	if !a.SameSecret(mustParse(t, "other-name", with("generation", "G2"))) {
		t.Error("SameSecret false for another name and generation only")
	}
	for _, tc := range []struct {
		what string
		data map[string]any
	}{
		{"client secret", with("client_secret", secretClient+"x")},
		{"username", with("username", "v@example.com")},
		{"client id", with("client_id", "d")},
		{"token url", with("token_url", "https://idp.example/other")},
		{"scopes", with("scopes", []any{"a", "b"})},
		{"a refresh token added", with("refresh_token", secretRefresh)},
	} {
		if a.SameSecret(mustParse(t, "a", tc.data)) {
			t.Errorf("SameSecret true with another %s", tc.what)
		}
	}
	pw := NewCredential("p", "u", "x", "")
	if pw.SameSecret(NewCredential("p", "u", "y", "")) || !pw.SameSecret(NewCredential("q", "u", "x", "v9")) {
		t.Error("SameSecret wrong for passwords")
	}
	fx := kindFixtures(t)
	for i, f := range fx {
		for j, g := range fx {
			if (i == j) != f.cred.SameSecret(g.cred) {
				t.Errorf("%s SameSecret %s = %v", f.name, g.name, !(i == j))
			}
		}
	}
	// Two certificate entries with other keys differ.
	p := newTestPEM(t)
	other := mustParse(t, "corp-cert", map[string]any{"kind": "certificate", "certificate": p.cert, "private_key": p.key})
	if other.SameSecret(fx[4].cred) {
		t.Error("SameSecret true for two certificates")
	}
}

func TestCredentialString(t *testing.T) {
	c := NewCredential("primary", "relay@example.com", secretPassword, "sha256:0123456789ab")
	c.Generation = "G1"
	want := `Credential{Name:"primary" Kind:password Username:"relay@example.com" Password:[redacted] Version:"sha256:0123456789ab" Generation:"G1"}`
	if c.String() != want {
		t.Errorf("String() = %s\nwant %s", c.String(), want)
	}
	if c.GoString() != want {
		t.Errorf("GoString() = %s", c.GoString())
	}
	empty := NewCredential("primary", "u", "", "")
	if !strings.Contains(empty.String(), "Password:[empty]") {
		t.Errorf("a credential with no password shows %s; want Password:[empty]", empty)
	}
	fx := kindFixtures(t)
	for _, w := range []struct {
		fixture, want string
	}{
		{"oauth2 client secret", `Credential{Name:"m365" Kind:oauth2 Username:"relay@contoso.example" Provider:"microsoft365" Tenant:"contoso.example" ClientID:"00000000-1111-2222-3333-444444444444" ClientSecret:[redacted] Version:"" Generation:"G2"}`},
		{"oauth2 refresh token", `ClientSecret:[redacted] RefreshToken:[redacted]`},
		{"oauth2 private key", `Scopes:"smtp mail" Certificate:"CN=relay1.example.com,O=sealrelay test only (expires `},
		{"certificate", `Credential{Name:"corp-cert" Kind:certificate Username:"" Certificate:"CN=relay1.example.com,O=sealrelay test only (expires `},
		{"ses", `Credential{Name:"ses" Kind:ses Username:"AKIAIOSFODNN7EXAMPLE" AccessKeyID:"AKIAIOSFODNN7EXAMPLE" Region:"eu-central-1" SecretAccessKey:[redacted] Version:"" Generation:"G1"}`},
	} {
		for _, f := range fx {
			if f.name == w.fixture && !strings.Contains(f.cred.String(), w.want) {
				t.Errorf("%s: String() = %s\nwant it to hold %s", f.name, f.cred, w.want)
			}
		}
	}
}

type holder struct {
	Cred Credential
}

type hiddenHolder struct {
	name string
	cred Credential
}

type pointerHolder struct {
	cred *Credential
}

// Every fmt verb, on a credential of every kind wherever it sits, shows
// no secret.
func TestCredentialFormatVerbs(t *testing.T) {
	for _, f := range kindFixtures(t) {
		c := f.cred
		values := map[string]any{
			"value":                  c,
			"pointer":                &c,
			"in struct":              holder{c},
			"in struct pointer":      &holder{c},
			"in unexported field":    hiddenHolder{"x", c},
			"pointer in unexported":  pointerHolder{&c},
			"in slice":               []Credential{c, c},
			"in map":                 map[string]Credential{"primary": c},
			"in any slice":           []any{c},
			"in unexported, pointed": &hiddenHolder{"x", c},
		}
		verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v"}
		for name, v := range values {
			for _, verb := range verbs {
				out := fmt.Sprintf(verb, v)
				if l := leaks(out, f.secrets); l != nil {
					t.Errorf("%s: %s with %s shows %q: %s", f.name, name, verb, l, out)
				}
			}
			if leaks(fmt.Sprint(v), f.secrets) != nil || leaks(fmt.Sprintln(v), f.secrets) != nil {
				t.Errorf("%s: %s with Sprint/Sprintln shows a secret", f.name, name)
			}
		}
		// The redacted form is what shows, not nothing.
		if got := fmt.Sprintf("%+v", holder{c}); !strings.Contains(got, ":[redacted]") || !strings.Contains(got, "Kind:"+string(c.Kind())) {
			t.Errorf("%s: %%+v of a struct = %s; want the redacted credential inside", f.name, got)
		}
	}
}

func TestCredentialSlog(t *testing.T) {
	for _, f := range kindFixtures(t) {
		c := f.cred
		for _, tt := range []struct {
			name string
			h    func(*bytes.Buffer) slog.Handler
			want string
		}{
			{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }, "=[redacted]"},
			{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }, `":"[redacted]"`},
		} {
			var b bytes.Buffer
			log := slog.New(tt.h(&b))
			log.Info("msg", "cred", c)
			log.Info("msg", "ptr", &c)
			log.Info("msg", "holder", holder{c}, "hidden", hiddenHolder{"x", c}, "list", []Credential{c})
			log.Info("msg", slog.Any("any", c), slog.Group("g", "cred", c))
			log.With("cred", c).Info("with")
			out := b.String()
			if l := leaks(out, f.secrets); l != nil {
				t.Errorf("%s: %s handler shows %q:\n%s", f.name, tt.name, l, out)
			}
			if !strings.Contains(out, tt.want) || !strings.Contains(out, string(c.Kind())) {
				t.Errorf("%s: %s handler output lacks %s or the kind:\n%s", f.name, tt.name, tt.want, out)
			}
		}
	}
}

func TestCredentialJSON(t *testing.T) {
	for _, f := range kindFixtures(t) {
		c := f.cred
		for name, v := range map[string]any{
			"value":     c,
			"pointer":   &c,
			"in struct": struct{ Relay Credential }{c},
			"in slice":  []Credential{c, c},
			"in map":    map[string]*Credential{"p": &c},
		} {
			out, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("%s: %s: %v", f.name, name, err)
			}
			if l := leaks(string(out), f.secrets); l != nil {
				t.Errorf("%s: %s: JSON shows %q: %s", f.name, name, l, out)
			}
			if !strings.Contains(string(out), `":"[redacted]"`) {
				t.Errorf("%s: %s: JSON = %s; want a redacted secret", f.name, name, out)
			}
		}
	}
	out, _ := json.Marshal(NewCredential("primary", "relay@example.com", secretPassword, "sha256:0123456789ab"))
	want := `{"name":"primary","kind":"password","username":"relay@example.com","password":"[redacted]","version":"sha256:0123456789ab"}`
	if string(out) != want {
		t.Errorf("JSON = %s\nwant %s", out, want)
	}
	out, _ = json.Marshal(kindFixtures(t)[5].cred)
	want = `{"name":"ses","kind":"ses","username":"AKIAIOSFODNN7EXAMPLE","access_key_id":"AKIAIOSFODNN7EXAMPLE","region":"eu-central-1","secret_access_key":"[redacted]","generation":"G1"}`
	if string(out) != want {
		t.Errorf("JSON = %s\nwant %s", out, want)
	}
}

func TestCredentialInErrors(t *testing.T) {
	for _, f := range kindFixtures(t) {
		err := fmt.Errorf("delivery failed with %v: %w", f.cred, errors.New("535"))
		if l := leaks(err.Error(), f.secrets); l != nil {
			t.Errorf("%s: error shows %q: %v", f.name, l, err)
		}
		text, _ := f.cred.MarshalText()
		if l := leaks(string(text), f.secrets); l != nil {
			t.Errorf("%s: MarshalText shows %q: %s", f.name, l, text)
		}
		if l := leaks(fmt.Sprint(f.cred.Fields()), f.secrets); l != nil {
			t.Errorf("%s: Fields holds %q", f.name, l)
		}
	}
}
