package secrets

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testpki"
)

// A secret value that every test entry carries somewhere, so that each
// error can be checked not to quote it.
const planted = "Planted-Secret-9f3e"

func TestParseEntryKinds(t *testing.T) {
	p := newTestPEM(t)
	for _, tc := range []struct {
		name string
		data map[string]any
		kind Kind
		user string
	}{
		{"no kind", map[string]any{"username": "u", "password": planted}, KindPassword, "u"},
		{"kind password", map[string]any{"kind": "password", "username": "u", "password": planted, "generation": "ABC"}, KindPassword, "u"},
		{"oauth2 google secret", map[string]any{"kind": "oauth2", "username": "u@example.com", "provider": "google", "client_id": "c", "client_secret": planted}, KindOAuth2, "u@example.com"},
		{"oauth2 m365 national cloud", map[string]any{"kind": "oauth2", "username": "u", "provider": "microsoft365", "token_url": "https://login.microsoftonline.us/t/oauth2/v2.0/token", "client_id": "c", "client_secret": planted}, KindOAuth2, "u"},
		{"oauth2 public client refresh", map[string]any{"kind": "oauth2", "username": "u", "provider": "microsoft365", "tenant": "t1", "client_id": "c", "refresh_token": planted}, KindOAuth2, "u"},
		{"oauth2 loopback http", map[string]any{"kind": "oauth2", "username": "u", "token_url": "http://127.0.0.1:4444/oauth2/token", "client_id": "c", "client_secret": planted, "auth_method": "client_secret_basic", "scopes": "a b  c"}, KindOAuth2, "u"},
		{"oauth2 private key", map[string]any{"kind": "oauth2", "username": "u", "token_url": "https://idp.example/t", "client_id": "c", "private_key": p.key, "certificate": p.cert, "key_id": "k1"}, KindOAuth2, "u"},
		{"certificate", map[string]any{"kind": "certificate", "certificate": p.cert, "private_key": p.key}, KindCertificate, ""},
		{"ses", map[string]any{"kind": "ses", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "region": "us-gov-west-1", "secret_access_key": planted}, KindSES, "AKIAIOSFODNN7EXAMPLE"},
	} {
		c, err := ParseEntry("e", tc.data)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if c.Kind() != tc.kind || c.Username != tc.user || c.Name != "e" {
			t.Errorf("%s: kind %s username %q", tc.name, c.Kind(), c.Username)
		}
		if err := c.Check(); err != nil {
			t.Errorf("%s: Check of a parsed entry: %v", tc.name, err)
		}
		pub, err := ParsePublic("e", tc.data)
		if err != nil || pub.IsZero() && tc.user != "" || !slices.Equal(pub.Fields(), c.Fields()) {
			t.Errorf("%s: ParsePublic = %v, %v; want the same fields as ParseEntry", tc.name, pub, err)
		}
		if l := leaks(pub.String()+pub.ClientSecret()+pub.Password()+pub.PrivateKey()+pub.RefreshToken()+pub.SecretAccessKey(), []string{planted, p.key}); l != nil {
			t.Errorf("%s: ParsePublic kept a secret", tc.name)
		}
	}
	c := mustParse(t, "e", map[string]any{"kind": "oauth2", "username": "u", "token_url": "http://127.0.0.1:4444/t", "client_id": "c", "client_secret": planted, "scopes": "a b  c"})
	if got := c.Scopes(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("scopes as one string = %q", got)
	}
}

// Every error a user can meet: its exact text, which names the entry and
// the key, its kind (errors.Is) and Key, and no secret in it.
func TestParseEntryErrors(t *testing.T) {
	p := newTestPEM(t)
	other := newTestPEM(t)
	oauthBase := map[string]any{"kind": "oauth2", "username": "u", "token_url": "https://idp.example/t", "client_id": "c", "client_secret": planted}
	sesBase := map[string]any{"kind": "ses", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "region": "eu-west-1", "secret_access_key": planted}
	certBase := map[string]any{"kind": "certificate", "certificate": p.cert, "private_key": p.key}
	pwBase := map[string]any{"username": "u", "password": planted}
	with := func(base map[string]any, kv ...any) map[string]any {
		d := maps.Clone(base)
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(d, kv[i].(string))
			} else {
				d[kv[i].(string)] = kv[i+1]
			}
		}
		return d
	}
	for _, tc := range []struct {
		name string
		data map[string]any
		kind error
		key  string
		want string
	}{
		// Any kind.
		{"unknown kind", with(pwBase, "kind", planted), ErrInvalidEntry, "kind", `entry "e": kind is not password, oauth2, certificate or ses`},
		{"kind not a string", with(pwBase, "kind", 1), ErrInvalidEntry, "kind", `entry "e": kind must be a string`},
		{"unknown key", with(pwBase, "pasword", planted), ErrUnknownKey, "pasword", `entry "e" has unknown key "pasword" (a password entry takes username, password, and kind and generation)`},
		{"unknown key, odd name", with(pwBase, planted+" x", 1), ErrUnknownKey, "", `entry "e" has an unknown key (a password entry takes username, password, and kind and generation)`},
		{"key of another kind", with(pwBase, "region", "eu-west-1"), ErrUnknownKey, "region", `entry "e" has key "region", which is not for kind password (a password entry takes username, password, and kind and generation)`},
		{"bad generation", with(pwBase, "generation", "a b"), ErrInvalidEntry, "generation", `entry "e": generation must be 1 to 64 of A-Z a-z 0-9 . _ : -`},
		{"generation not a string", with(pwBase, "generation", 7), ErrInvalidEntry, "generation", `entry "e": generation must be a string`},
		// password
		{"no username", with(pwBase, "username", nil), ErrMissingKey, "username", `entry "e" has no username`},
		{"empty password", with(pwBase, "password", ""), ErrMissingKey, "password", `entry "e" has no password`},
		{"password not a string", with(pwBase, "password", 5), ErrInvalidEntry, "password", `entry "e": password must be a string`},
		{"NUL in password", with(pwBase, "password", planted+"\x00"), ErrInvalidEntry, "password", `entry "e": password contains a NUL character, which SMTP AUTH cannot carry`},
		{"NUL in username", with(pwBase, "username", "u\x00"), ErrInvalidEntry, "username", `entry "e": username contains a NUL character`},
		// oauth2
		{"oauth2 no username", with(oauthBase, "username", nil), ErrMissingKey, "username", `entry "e" has no username`},
		{"oauth2 no client id", with(oauthBase, "client_id", nil), ErrMissingKey, "client_id", `entry "e" has no client_id`},
		{"oauth2 unknown provider", with(oauthBase, "provider", planted), ErrInvalidEntry, "provider", `entry "e": provider is not microsoft365 or google (for another, leave it out and give token_url)`},
		{"oauth2 m365 no tenant", with(oauthBase, "provider", "microsoft365", "token_url", nil), ErrMissingKey, "tenant", `entry "e" has no tenant (provider microsoft365 needs it, or token_url)`},
		{"oauth2 bad tenant", with(oauthBase, "provider", "microsoft365", "tenant", planted+"/x"), ErrInvalidEntry, "tenant", `entry "e": tenant is not an Entra ID tenant id or domain`},
		{"oauth2 tenant for google", with(oauthBase, "provider", "google", "tenant", "t"), ErrInvalidEntry, "tenant", `entry "e": tenant is only for provider microsoft365`},
		{"oauth2 no token url", with(oauthBase, "token_url", nil), ErrMissingKey, "token_url", `entry "e" has no token_url (an oauth2 entry without a provider needs it)`},
		{"oauth2 http token url", with(oauthBase, "token_url", "http://idp.example/"+planted), ErrInvalidEntry, "token_url", `entry "e": token_url is plain http: only a loopback address may be (the client's secret would travel in clear)`},
		{"oauth2 token url with password", with(oauthBase, "token_url", "https://u:"+planted+"@idp.example/t"), ErrInvalidEntry, "token_url", `entry "e": token_url must not hold a user name or password`},
		{"oauth2 relative token url", with(oauthBase, "token_url", "/"+planted), ErrInvalidEntry, "token_url", `entry "e": token_url is not an absolute URL`},
		{"oauth2 ftp token url", with(oauthBase, "token_url", "ftp://idp.example/"+planted), ErrInvalidEntry, "token_url", `entry "e": token_url is not https`},
		{"oauth2 bad scope", with(oauthBase, "scopes", []any{"a", planted + `"`}), ErrInvalidEntry, "scopes", `entry "e": scope 2 is not a scope token (printable ASCII without spaces, quotes or backslashes)`},
		{"oauth2 scopes not strings", with(oauthBase, "scopes", []any{"a", 1}), ErrInvalidEntry, "scopes", `entry "e": scopes must be a list of strings, or one string of scopes separated by spaces`},
		{"oauth2 scopes a number", with(oauthBase, "scopes", 1), ErrInvalidEntry, "scopes", `entry "e": scopes must be a list of strings, or one string of scopes separated by spaces`},
		{"oauth2 bad auth method", with(oauthBase, "auth_method", planted), ErrInvalidEntry, "auth_method", `entry "e": auth_method is not client_secret_post, client_secret_basic, private_key_jwt or none`},
		{"oauth2 auth method for the key", with(oauthBase, "auth_method", "private_key_jwt"), ErrInvalidEntry, "", `entry "e": auth_method "private_key_jwt" is not client_secret_post or client_secret_basic`},
		{"oauth2 bad key id", with(oauthBase, "client_secret", nil, "private_key", p.key, "key_id", planted+" x"), ErrInvalidEntry, "key_id", `entry "e": key_id must be printable ASCII without spaces, quotes or backslashes`},
		{"oauth2 no secret", with(oauthBase, "client_secret", nil), ErrMissingKey, "client_secret", `entry "e" has no client_secret (an oauth2 entry needs client_secret, private_key or refresh_token)`},
		{"oauth2 secret and key", with(oauthBase, "private_key", p.key), ErrInvalidEntry, "private_key", `entry "e": client_secret and private_key are both set: give one`},
		{"oauth2 refresh and key", with(oauthBase, "client_secret", nil, "private_key", p.key, "refresh_token", planted), ErrInvalidEntry, "refresh_token", `entry "e": refresh_token does not go with private_key: the refresh-token form takes a client_secret or none`},
		{"oauth2 certificate without key", with(oauthBase, "certificate", p.cert), ErrInvalidEntry, "certificate", `entry "e": certificate goes with private_key (private_key_jwt), which is not set`},
		{"oauth2 key id without key", with(oauthBase, "key_id", "k"), ErrInvalidEntry, "key_id", `entry "e": key_id goes with private_key (private_key_jwt), which is not set`},
		{"oauth2 google refresh without secret", with(oauthBase, "provider", "google", "token_url", nil, "client_secret", nil, "refresh_token", planted), ErrMissingKey, "client_secret", `entry "e" has no client_secret (provider google needs it with refresh_token)`},
		{"oauth2 control character", with(oauthBase, "client_secret", planted+"\n"), ErrInvalidEntry, "client_secret", `entry "e": client_secret contains a control character (a line break?)`},
		{"oauth2 key of another certificate", with(oauthBase, "client_secret", nil, "private_key", p.key, "certificate", other.cert), ErrInvalidEntry, "", `entry "e": certificate does not hold the public key of private_key`},
		{"oauth2 garbage key", with(oauthBase, "client_secret", nil, "private_key", planted), ErrInvalidEntry, "", `entry "e": private_key holds no PEM private key block`},
		{"oauth2 garbage certificate", with(oauthBase, "client_secret", nil, "private_key", p.key, "certificate", planted), ErrInvalidEntry, "certificate", `entry "e": certificate holds no PEM CERTIFICATE block`},
		// certificate
		{"certificate username", with(certBase, "username", "u"), ErrUnknownKey, "username", `entry "e" has key "username", which is not for kind certificate (a certificate entry has no username: its identity is the certificate)`},
		{"certificate no certificate", with(certBase, "certificate", nil), ErrMissingKey, "certificate", `entry "e" has no certificate`},
		{"certificate no key", with(certBase, "private_key", nil), ErrMissingKey, "private_key", `entry "e" has no private_key`},
		{"certificate garbage key", with(certBase, "private_key", planted), ErrInvalidEntry, "private_key", `entry "e": private_key holds no PEM private key block`},
		{"certificate encrypted key", with(certBase, "private_key", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), ErrInvalidEntry, "private_key", `entry "e": private_key is encrypted; give it unencrypted (the credential store seals it)`},
		{"certificate other key", with(certBase, "private_key", other.key), ErrInvalidEntry, "private_key", `entry "e": private_key is not the key of the certificate (the first one in the chain)`},
		{"certificate garbage", with(certBase, "certificate", planted), ErrInvalidEntry, "certificate", `entry "e": certificate holds no PEM CERTIFICATE block`},
		{"certificate chain reversed", with(certBase, "certificate", reverseChain(p.cert)), ErrInvalidEntry, "certificate", `entry "e": certificate is not a chain in order, leaf first: certificate 1 is not signed by certificate 2 (or that one is not a CA)`},
		// ses
		{"ses username", with(sesBase, "username", "u"), ErrUnknownKey, "username", `entry "e" has key "username", which is not for kind ses (an ses entry's username is its access_key_id)`},
		{"ses no region", with(sesBase, "region", nil), ErrMissingKey, "region", `entry "e" has no region`},
		{"ses no secret", with(sesBase, "secret_access_key", ""), ErrMissingKey, "secret_access_key", `entry "e" has no secret_access_key`},
		{"ses bad region", with(sesBase, "region", planted), ErrInvalidEntry, "region", `entry "e": region is not an AWS region name (like eu-central-1)`},
		{"ses bad access key id", with(sesBase, "access_key_id", "AKIA-"+planted), ErrInvalidEntry, "access_key_id", `entry "e": access_key_id is not an IAM access key id (16 to 128 letters and digits, like AKIAIOSFODNN7EXAMPLE)`},
		{"ses password key", with(sesBase, "password", planted), ErrUnknownKey, "password", `entry "e" has key "password", which is not for kind ses (an ses entry takes access_key_id, region, secret_access_key, and kind and generation)`},
	} {
		_, err := ParseEntry("e", tc.data)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if tc.want != "" && err.Error() != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, err, tc.want)
		}
		var ee *EntryError
		if !errors.As(err, &ee) || !errors.Is(err, tc.kind) || ee.Key != tc.key || ee.Entry != "e" {
			t.Errorf("%s: %T %v: want an *EntryError of kind %v for key %q", tc.name, err, err, tc.kind, tc.key)
		}
		if !strings.HasPrefix(err.Error(), `entry "e"`) {
			t.Errorf("%s: the error does not name the entry: %v", tc.name, err)
		}
		if l := leaks(err.Error(), []string{planted, p.key, other.key}); l != nil {
			t.Errorf("%s: the error quotes a secret: %v", tc.name, err)
		}
	}
}

// reverseChain puts the last certificate of a PEM chain first.
func reverseChain(chain string) string {
	const end = "-----END CERTIFICATE-----\n"
	parts := strings.SplitAfter(chain, end)
	slices.Reverse(parts)
	return strings.Join(parts, "")
}

// ParsePublic checks what is not secret and only the presence of the
// secret keys, whatever they hold (sealed ciphertext).
func TestParsePublic(t *testing.T) {
	sealed := "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n"
	p := newTestPEM(t)
	for _, data := range []map[string]any{
		{"kind": "certificate", "certificate": p.cert, "private_key": sealed},
		{"kind": "ses", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "region": "eu-west-1", "secret_access_key": sealed},
		{"kind": "oauth2", "username": "u", "provider": "google", "client_id": "c", "client_secret": sealed},
	} {
		c, err := ParsePublic("e", data)
		if err != nil {
			t.Errorf("%v: %v", data["kind"], err)
			continue
		}
		if _, err := c.Certificate(); c.Kind() == KindCertificate && err == nil {
			t.Error("a public certificate entry hands out a key")
		}
		if _, err := c.SESPassword(); c.Kind() == KindSES && err == nil {
			t.Error("a public ses entry hands out a password")
		}
	}
	_, err := ParsePublic("e", map[string]any{"kind": "ses", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "region": "eu-west-1"})
	if err == nil || err.Error() != `entry "e" has no secret_access_key` {
		t.Errorf("ParsePublic without the secret: %v", err)
	}
	_, err = ParsePublic("e", map[string]any{"kind": "certificate", "certificate": "x", "private_key": sealed})
	if err == nil || err.Error() != `entry "e": certificate holds no PEM CERTIFICATE block` {
		t.Errorf("ParsePublic with a bad certificate: %v", err)
	}
}

func TestCertificateHelpers(t *testing.T) {
	ca := testpki.CA(t, "root")
	now := time.Now()
	for _, tc := range []struct {
		name      string
		opt       testpki.Options
		legacy    bool
		wantWarn  string
		wantChain int
	}{
		{"valid EC", testpki.Options{CommonName: "ok"}, false, "", 2},
		{"valid RSA PKCS1", testpki.Options{CommonName: "rsa", RSA: true}, true, "", 2},
		{"expired", testpki.Options{CommonName: "old", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}, false, `entry "c": the certificate CN=old,O=sealrelay test only expired on `, 2},
		{"not yet valid", testpki.Options{CommonName: "new", NotBefore: now.Add(24 * time.Hour)}, false, `entry "c": the certificate CN=new,O=sealrelay test only is not valid before `, 2},
	} {
		leaf := testpki.Leaf(t, ca, tc.opt)
		key := leaf.KeyPEM(t)
		if tc.legacy {
			key = leaf.LegacyKeyPEM(t)
		}
		c := mustParse(t, "c", map[string]any{"kind": "certificate", "certificate": leaf.CertPEM(ca), "private_key": key})
		tc2, err := c.Certificate()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(tc2.Certificate) != tc.wantChain || tc2.Leaf == nil || tc2.Leaf.Subject.CommonName != tc.opt.CommonName || tc2.PrivateKey == nil {
			t.Errorf("%s: tls.Certificate has %d certificates, leaf %v", tc.name, len(tc2.Certificate), tc2.Leaf != nil)
		}
		info, ok := c.CertificateInfo()
		if !ok || info.Chain != 2 || info.Issuer != "CN=root,O=sealrelay test only" || !info.NotAfter.Equal(leaf.Cert.NotAfter) {
			t.Errorf("%s: CertificateInfo = %+v", tc.name, info)
		}
		w := c.Warnings(now)
		switch {
		case tc.wantWarn == "" && len(w) > 0:
			t.Errorf("%s: warnings %q", tc.name, w)
		case tc.wantWarn != "" && (len(w) != 1 || !strings.HasPrefix(w[0], tc.wantWarn)):
			t.Errorf("%s: warnings %q, want %s...", tc.name, w, tc.wantWarn)
		}
	}
	pw := NewCredential("p", "u", "x", "")
	if _, err := pw.Certificate(); err == nil || err.Error() != `credential "p" is of kind password, not certificate` {
		t.Errorf("Certificate of a password: %v", err)
	}
	if _, err := pw.SESPassword(); err == nil || err.Error() != `credential "p" is of kind password, not ses` {
		t.Errorf("SESPassword of a password: %v", err)
	}
	if _, err := pw.OAuth2(); err == nil || err.Error() != `credential "p" is of kind password, not oauth2` {
		t.Errorf("OAuth2 of a password: %v", err)
	}
	if pw.Warnings(now) != nil || pw.TokenEndpoint() != "" {
		t.Error("a password has warnings or a token endpoint")
	}
}

// The SES vectors, through the entry.
func TestSESPassword(t *testing.T) {
	for _, v := range []struct{ region, secret, want string }{
		{"eu-central-1", "some+secret+key", "BMXhUYlu5Z3gSXVQORxlVa7XPaz91aGWdfHxvkOZdWZ2"},
		{"us-west-1", "another+secret+key", "BKVmjjMDFk/qqw8EROW99bjCS65PF8WKvK5bSr4Y6EqF"},
	} {
		c := mustParse(t, "ses", map[string]any{"kind": "ses", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "region": v.region, "secret_access_key": v.secret})
		got, err := c.SESPassword()
		if err != nil || got != v.want || c.Password() != v.want {
			t.Errorf("%s: SESPassword = %q, %v; Password = %q; want %s", v.region, got, err, c.Password(), v.want)
		}
	}
}

func TestOAuth2Config(t *testing.T) {
	p := newTestPEM(t)
	c := mustParse(t, "m365", map[string]any{"kind": "oauth2", "username": "u", "provider": "microsoft365", "tenant": "contoso.example",
		"client_id": "cid", "private_key": p.key, "certificate": p.cert})
	c.Version = "7"
	cfg, err := c.OAuth2()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TokenURL != "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token" || cfg.ClientID != "cid" ||
		cfg.AuthMethod != "private_key_jwt" || cfg.PrivateKey.Reveal() != p.key || cfg.Certificate != p.cert ||
		!slices.Equal(cfg.Scopes, []string{"https://outlook.office365.com/.default"}) || cfg.Version != "7" {
		t.Errorf("OAuth2() = %v", cfg)
	}
	g := mustParse(t, "g", map[string]any{"kind": "oauth2", "username": "u", "provider": "google", "client_id": "cid",
		"client_secret": planted, "refresh_token": planted + "-rt", "scopes": []string{"https://mail.google.com/"}})
	cfg, err = g.OAuth2()
	if err != nil || cfg.Grant() != "refresh_token" || cfg.ClientSecret.Reveal() != planted || cfg.RefreshToken.Reveal() != planted+"-rt" {
		t.Errorf("OAuth2() = %v, %v", cfg, err)
	}
}

func TestKindKeys(t *testing.T) {
	var names []string
	for _, k := range KindKeys(KindOAuth2) {
		names = append(names, k.Name)
		if k.Secret != IsSecretKey(k.Name) {
			t.Errorf("%s: Secret %v", k.Name, k.Secret)
		}
	}
	want := []string{"username", "provider", "tenant", "token_url", "client_id", "auth_method", "key_id", "scopes", "certificate", "client_secret", "refresh_token", "private_key"}
	if !slices.Equal(names, want) {
		t.Errorf("KindKeys(oauth2) = %q\nwant %q", names, want)
	}
	if ks := KindKeys(KindSES); len(ks) != 3 || !ks[2].Secret || !ks[2].Required || ks[0].Name != "access_key_id" {
		t.Errorf("KindKeys(ses) = %+v", ks)
	}
	if g1, g2 := NewGeneration(), NewGeneration(); g1 == g2 || !ValidGeneration(g1) || len(g1) != 26 {
		t.Error("NewGeneration is not a fresh, valid 26-character id")
	}
}
