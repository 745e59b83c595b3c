package secrets

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"regexp"
	"strings"

	"github.com/sealrelay/sealrelay/secrets/oauth"
	"github.com/sealrelay/sealrelay/secrets/pemkey"
	"github.com/sealrelay/sealrelay/secrets/ses"
)

// kindChecks holds each kind's rules between keys, run once the keys are
// read. A check sets what the kind derives: the Username, and with the
// secrets at hand, the parsed or derived secret.
var kindChecks = map[Kind]func(v *values, c *Credential) error{
	KindPassword:    checkPassword,
	KindOAuth2:      checkOAuth2,
	KindCertificate: checkCertificate,
	KindSES:         checkSES,
}

func checkPassword(v *values, c *Credential) error {
	c.Username = v.str[KeyUsername]
	return nil
}

// accessKeyID is the loose shape of an IAM access key id: AWS documents
// 16 to 128 word characters (AKIA... and ASIA... today).
var accessKeyID = regexp.MustCompile(`^[A-Za-z0-9]{16,128}$`)

func checkSES(v *values, c *Credential) error {
	id, region := v.str[KeyAccessKeyID], v.str[KeyRegion]
	if !accessKeyID.MatchString(id) {
		return invalid(v.name, KeyAccessKeyID, "access_key_id is not an IAM access key id (16 to 128 letters and digits, like AKIAIOSFODNN7EXAMPLE)")
	}
	if !ses.ValidRegion(region) {
		return invalid(v.name, KeyRegion, "region is not an AWS region name (like eu-central-1)")
	}
	c.Username = id
	if v.full {
		pw, err := ses.SMTPPassword(v.str[KeySecretAccessKey], region)
		if err != nil { // checked above; ses's errors quote no secret
			return invalid(v.name, KeySecretAccessKey, "%v", err)
		}
		v.derived = pw
	}
	return nil
}

func checkCertificate(v *values, c *Credential) error {
	chain, err := v.chain()
	if err != nil || !v.full {
		return err
	}
	key, err := pemkey.ParsePrivateKey([]byte(v.str[KeyPrivateKey]))
	if err != nil {
		return invalid(v.name, KeyPrivateKey, "private_key %v", err)
	}
	switch key.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
	default:
		return invalid(v.name, KeyPrivateKey, "private_key is %T, which TLS cannot use", key)
	}
	if !pemkey.Matches(chain[0], key) {
		return invalid(v.name, KeyPrivateKey, "private_key is not the key of the certificate (the first one in the chain)")
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		tc.Certificate = append(tc.Certificate, x.Raw)
	}
	v.tlsCert = tc
	return nil
}

// chain parses the certificate key: PEM, leaf first, each certificate
// signed by the next. It keeps the result for the settings.
func (v *values) chain() ([]*x509.Certificate, error) {
	chain, err := pemkey.ParseCertificates([]byte(v.str[KeyCertificate]))
	if err == nil {
		err = pemkey.CheckChain(chain)
	}
	if err != nil {
		return nil, invalid(v.name, KeyCertificate, "certificate %v", err)
	}
	v.certs = chain
	return chain, nil
}

// checkOAuth2 applies the rules of an oauth2 entry (docs/credentials.md):
//
//   - provider microsoft365 needs tenant (or token_url, for national
//     clouds); google takes neither tenant nor needs token_url; with no
//     provider, token_url is required;
//   - exactly one form: client_secret (client credentials), private_key
//     with an optional certificate and key_id (private_key_jwt), or
//     refresh_token with an optional client_secret (delegated; google
//     needs the client_secret, a public client has none);
//   - with the secrets at hand, oauth.Config.Resolve accepts the result
//     (the private key's type and size, the certificate's match).
func checkOAuth2(v *values, c *Credential) error {
	n := v.name
	c.Username = v.str[KeyUsername]
	provider, tenant, tokenURL := v.str[KeyProvider], v.str[KeyTenant], v.str[KeyTokenURL]
	switch provider {
	case "", oauth.Microsoft365, oauth.Google:
	default:
		return invalid(n, KeyProvider, "provider is not microsoft365 or google (for another, leave it out and give token_url)")
	}
	switch {
	case tenant != "" && provider != oauth.Microsoft365:
		return invalid(n, KeyTenant, "tenant is only for provider microsoft365")
	case tenant != "" && !oauth.ValidTenant(tenant):
		return invalid(n, KeyTenant, "tenant is not an Entra ID tenant id or domain")
	case provider == oauth.Microsoft365 && tenant == "" && tokenURL == "":
		return missing(n, KeyTenant, "provider microsoft365 needs it, or token_url")
	case provider == "" && tokenURL == "":
		return missing(n, KeyTokenURL, "an oauth2 entry without a provider needs it")
	}
	if tokenURL != "" {
		if err := oauth.CheckTokenURL(tokenURL); err != nil {
			return invalid(n, KeyTokenURL, "%s", strings.TrimPrefix(err.Error(), "oauth2: "))
		}
	}
	switch v.str[KeyAuthMethod] {
	case "", oauth.ClientSecretPost, oauth.ClientSecretBasic, oauth.PrivateKeyJWT, oauth.None:
	default:
		return invalid(n, KeyAuthMethod, "auth_method is not client_secret_post, client_secret_basic, private_key_jwt or none")
	}
	if strings.ContainsFunc(v.str[KeyKeyID], func(r rune) bool { return r <= ' ' || r == '"' || r == '\\' || r >= 0x7f }) {
		return invalid(n, KeyKeyID, "key_id must be printable ASCII without spaces, quotes or backslashes")
	}
	secret, key, refresh := v.has(KeyClientSecret), v.has(KeyPrivateKey), v.has(KeyRefreshToken)
	switch {
	case !secret && !key && !refresh:
		return missing(n, KeyClientSecret, "an oauth2 entry needs client_secret, private_key or refresh_token")
	case secret && key:
		return invalid(n, KeyPrivateKey, "client_secret and private_key are both set: give one")
	case refresh && key:
		return invalid(n, KeyRefreshToken, "refresh_token does not go with private_key: the refresh-token form takes a client_secret or none")
	case v.has(KeyCertificate) && !key:
		return invalid(n, KeyCertificate, "certificate goes with private_key (private_key_jwt), which is not set")
	case v.has(KeyKeyID) && !key:
		return invalid(n, KeyKeyID, "key_id goes with private_key (private_key_jwt), which is not set")
	case refresh && !secret && provider == oauth.Google:
		return missing(n, KeyClientSecret, "provider google needs it with refresh_token")
	}
	if v.has(KeyCertificate) {
		if _, err := v.chain(); err != nil {
			return err
		}
	}
	if !v.full {
		return nil
	}
	if _, err := oauthConfig(v.str, v.scopes).Resolve(); err != nil {
		// What Resolve can still refuse here is about the private key
		// and auth_method, whose value is one of four names.
		return invalid(n, "", "%s", strings.TrimPrefix(err.Error(), "oauth2: "))
	}
	return nil
}

// oauthConfig makes an oauth.Config of an oauth2 entry's keys.
func oauthConfig(str map[string]string, scopes []string) oauth.Config {
	secret := func(key string) oauth.Secret {
		if str[key] == "" {
			return oauth.Secret{}
		}
		return oauth.NewSecret(str[key])
	}
	return oauth.Config{
		Provider:     str[KeyProvider],
		Tenant:       str[KeyTenant],
		TokenURL:     str[KeyTokenURL],
		ClientID:     str[KeyClientID],
		AuthMethod:   str[KeyAuthMethod],
		KeyID:        str[KeyKeyID],
		Certificate:  str[KeyCertificate],
		Scopes:       scopes,
		ClientSecret: secret(KeyClientSecret),
		PrivateKey:   secret(KeyPrivateKey),
		RefreshToken: secret(KeyRefreshToken),
	}
}
