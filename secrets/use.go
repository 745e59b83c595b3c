package secrets

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/sealrelay/sealrelay/secrets/oauth"
)

// newSettings keeps the non-secret keys of a parsed entry.
func newSettings(v *values) *settings {
	s := &settings{values: map[string]string{}, scopes: v.scopes}
	for _, k := range keySpecs {
		switch k.name {
		case KeyKind, KeyUsername, KeyGeneration, KeyScopes:
		default:
			if x := v.str[k.name]; x != "" && !k.secret {
				s.values[k.name] = x
			}
		}
	}
	if len(v.certs) > 0 {
		leaf := v.certs[0]
		s.cert = &CertificateInfo{Subject: leaf.Subject.String(), Issuer: leaf.Issuer.String(),
			NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Chain: len(v.certs)}
	}
	return s
}

// wrongKind is the error of a helper called on a credential of another
// kind.
func (c Credential) wrongKind(want Kind) error {
	return fmt.Errorf("credential %q is of kind %s, not %s", c.Name, c.Kind(), want)
}

// OAuth2 returns an oauth2 entry as an oauth.Config, resolved: the
// provider's token URL and scopes filled in, AuthMethod set
// (oauth.Config.Resolve). Its Version is c's, so a changed entry drops a
// cached token. The Config holds the secrets as oauth.Secrets, which do
// not print either.
func (c Credential) OAuth2() (oauth.Config, error) {
	if c.Kind() != KindOAuth2 {
		return oauth.Config{}, c.wrongKind(KindOAuth2)
	}
	str := map[string]string{}
	for _, f := range c.RevealEntry() {
		str[f.Key] = f.Value
	}
	cfg, err := oauthConfig(str, c.Scopes()).Resolve()
	if err != nil {
		return oauth.Config{}, fmt.Errorf("credential %q: %w", c.Name, err)
	}
	cfg.Version = c.Version
	return cfg, nil
}

// WithRefreshToken returns a copy of an oauth2 entry of the delegated
// form with its refresh token replaced by token (one the identity
// provider rotated) and a new generation, checked as ParseEntry checks an
// entry. Its Version is empty: it is not written anywhere yet.
func (c Credential) WithRefreshToken(token string) (Credential, error) {
	if c.Kind() != KindOAuth2 || c.RefreshToken() == "" {
		return Credential{}, fmt.Errorf("credential %q has no refresh token to replace", c.Name)
	}
	data := map[string]any{}
	for _, f := range c.RevealEntry() {
		data[f.Key] = f.Value
	}
	data[KeyRefreshToken], data[KeyGeneration] = token, NewGeneration()
	return ParseEntry(c.Name, data)
}

// TokenEndpoint returns an oauth2 entry's token endpoint: its token_url,
// or its provider's; "" for other kinds. It needs no secret, so listings
// show it.
func (c Credential) TokenEndpoint() string {
	if c.Kind() != KindOAuth2 {
		return ""
	}
	switch u := c.Field(KeyTokenURL); {
	case u != "":
		return u
	case c.Field(KeyProvider) == oauth.Microsoft365:
		return fmt.Sprintf(oauth.Microsoft365TokenURL, c.Field(KeyTenant))
	case c.Field(KeyProvider) == oauth.Google:
		return oauth.GoogleTokenURL
	}
	return ""
}

// Certificate returns a certificate entry's chain and private key as a
// tls.Certificate (Leaf set), parsed in memory when the entry was read.
func (c Credential) Certificate() (tls.Certificate, error) {
	if c.Kind() != KindCertificate {
		return tls.Certificate{}, c.wrongKind(KindCertificate)
	}
	if c.secrets() == nil || c.secrets().tlsCert == nil {
		return tls.Certificate{}, fmt.Errorf("credential %q holds no private key (it was read without its secrets)", c.Name)
	}
	return *c.secrets().tlsCert, nil
}

// SESPassword returns the SES SMTP password (version 4) an ses entry's
// secret access key gives in its region, derived in memory when the entry
// was read (secrets/ses). Password returns the same.
func (c Credential) SESPassword() (string, error) {
	if c.Kind() != KindSES {
		return "", c.wrongKind(KindSES)
	}
	if c.secrets() == nil || c.secrets().derived == "" {
		return "", fmt.Errorf("credential %q holds no secret access key (it was read without its secrets)", c.Name)
	}
	return c.secrets().derived, nil
}

// CertificateInfo describes the certificate an entry holds (a certificate
// entry's, or an oauth2 entry's for private_key_jwt): nothing secret.
type CertificateInfo struct {
	Subject   string // the leaf's subject, as a distinguished name
	Issuer    string
	NotBefore time.Time
	NotAfter  time.Time
	Chain     int // certificates in the chain, the leaf included
}

// String is the subject and the expiry: "CN=relay1.example.com (expires
// 2027-01-02)".
func (i CertificateInfo) String() string {
	return fmt.Sprintf("%s (expires %s)", i.Subject, i.NotAfter.UTC().Format(time.DateOnly))
}

// CertificateInfo returns what the entry's certificate says, if it has
// one.
func (c Credential) CertificateInfo() (CertificateInfo, bool) {
	if c.settings == nil || c.settings.cert == nil {
		return CertificateInfo{}, false
	}
	return *c.settings.cert, true
}

// Warnings lists what is wrong with c at now but not an error: a
// certificate that has expired or is not valid yet. Such an entry is
// still read and used (the relay decides; `check` reports it); `creds
// set` and `creds list` show the warning.
func (c Credential) Warnings(now time.Time) []string {
	info, ok := c.CertificateInfo()
	switch {
	case !ok:
		return nil
	case now.After(info.NotAfter):
		return []string{fmt.Sprintf("entry %q: the certificate %s expired on %s", c.Name, info.Subject, info.NotAfter.UTC().Format(time.RFC3339))}
	case now.Before(info.NotBefore):
		return []string{fmt.Sprintf("entry %q: the certificate %s is not valid before %s", c.Name, info.Subject, info.NotBefore.UTC().Format(time.RFC3339))}
	}
	return nil
}
