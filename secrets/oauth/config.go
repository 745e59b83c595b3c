package oauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Providers whose token endpoint and scope are known.
const (
	// Microsoft365 is Exchange Online: the token URL is the tenant's
	// Entra ID v2.0 endpoint, the scope Exchange Online's ".default" (the
	// application permissions granted, SMTP.SendAsApp).
	Microsoft365 = "microsoft365"
	// Google is Gmail and Google Workspace.
	Google = "google"
)

// Preset values.
const (
	Microsoft365TokenURL = "https://login.microsoftonline.com/%s/oauth2/v2.0/token"
	Microsoft365Scope    = "https://outlook.office365.com/.default"
	// Microsoft365SMTP is the relay that takes OAuth2 for Exchange Online.
	Microsoft365SMTP = "smtp.office365.com:587"
	GoogleTokenURL   = "https://oauth2.googleapis.com/token"
	GoogleScope      = "https://mail.google.com/"
	// GoogleSMTP is Gmail's submission relay.
	GoogleSMTP = "smtp.gmail.com:587"
)

// Token endpoint authentication methods (RFC 7591 names).
const (
	ClientSecretPost  = "client_secret_post"
	ClientSecretBasic = "client_secret_basic"
	PrivateKeyJWT     = "private_key_jwt"
	// None is a public client of the refresh-token form: client_id only.
	None = "none"
)

// Grants.
const (
	GrantClientCredentials = "client_credentials"
	GrantRefreshToken      = "refresh_token"
)

// Config is one oauth2 credential: where to get access tokens and how to
// authenticate there. Its secret fields are Secrets, and its printed
// forms (String, every fmt verb, slog, JSON) show only whether they are
// set.
type Config struct {
	// Provider is "", Microsoft365 or Google; see Resolve.
	Provider string
	// Tenant is the Entra ID tenant (id or domain) of Microsoft365.
	Tenant string
	// TokenURL is the token endpoint; with a Provider it defaults to the
	// provider's. It must be https, or http to a loopback address.
	TokenURL string
	// ClientID is the OAuth2 client (the Entra application id).
	ClientID string
	// ClientSecret authenticates the client (client_secret_post or
	// client_secret_basic, see AuthMethod).
	ClientSecret Secret
	// AuthMethod is ClientSecretPost (default) or ClientSecretBasic for a
	// client secret; it is PrivateKeyJWT with a PrivateKey, None with
	// neither (a public client of the refresh-token form). Resolve sets
	// it.
	AuthMethod string
	// PrivateKey (PEM: PKCS #8, PKCS #1 or SEC 1; RSA of 2048 bits or
	// more, or ECDSA P-256) signs client assertions (private_key_jwt,
	// RFC 7523) instead of a client secret: RS256 or ES256.
	PrivateKey Secret
	// Certificate (PEM, leaf first), if set, must hold PrivateKey's public
	// key: the assertion's header then names it by its SHA-1 and SHA-256
	// thumbprints (x5t, x5t#S256), as Entra ID wants.
	Certificate string
	// KeyID, if set, is the assertion header's kid (the key's id in the
	// client's JWKS, as Hydra and other servers want).
	KeyID string
	// RefreshToken selects the refresh-token (delegated) form: tokens are
	// fetched with grant_type=refresh_token instead of client_credentials.
	// When the endpoint returns a new refresh token, Tokens keeps it in
	// memory and reports it (Options.OnRefreshToken).
	RefreshToken Secret
	// Scopes are asked for; with a Provider they default to its scope.
	Scopes []string
	// Version identifies the source entry's version (a Vault KV version,
	// a digest of the sealed file); a new Version drops a cached token.
	Version string
}

// Grant returns the grant Config uses: GrantRefreshToken with a refresh
// token, else GrantClientCredentials.
func (c Config) Grant() string {
	if !c.RefreshToken.IsZero() {
		return GrantRefreshToken
	}
	return GrantClientCredentials
}

// Resolve fills the provider's defaults into a copy of c and checks it.
//
//   - Microsoft365: TokenURL https://login.microsoftonline.com/TENANT/oauth2/v2.0/token
//     (Tenant is required unless TokenURL is given, as for national clouds);
//     Scopes [https://outlook.office365.com/.default].
//   - Google: TokenURL https://oauth2.googleapis.com/token; Scopes
//     [https://mail.google.com/].
//   - No provider: TokenURL is required; Scopes may be empty.
//
// Given values always win over the defaults. AuthMethod is set from what
// authenticates the client. The checks: a client id;
// a client secret or a private key, not both (or neither, only with a
// refresh token: a public client); a certificate only with the private
// key that matches it; a token URL that is https, or http to a loopback
// address (a client secret would otherwise travel in clear), and holds no
// user name or password. Errors name the field, never a secret.
func (c Config) Resolve() (Config, error) {
	r, _, err := c.resolve()
	return r, err
}

// resolve is Resolve, also returning the assertion signer of a
// private_key_jwt client.
func (c Config) resolve() (Config, *signer, error) {
	r := c
	r.Scopes = slices.Clone(c.Scopes)
	switch c.Provider {
	case "":
		if c.Tenant != "" {
			return Config{}, nil, errors.New("oauth2: tenant is only for provider microsoft365")
		}
	case Microsoft365:
		if r.TokenURL == "" {
			if c.Tenant == "" {
				return Config{}, nil, errors.New("oauth2: provider microsoft365 needs tenant (the Entra ID tenant id or domain)")
			}
			if !ValidTenant(c.Tenant) {
				return Config{}, nil, fmt.Errorf("oauth2: tenant %q is not a tenant id or domain", c.Tenant)
			}
			r.TokenURL = fmt.Sprintf(Microsoft365TokenURL, c.Tenant)
		}
		if len(r.Scopes) == 0 {
			r.Scopes = []string{Microsoft365Scope}
		}
	case Google:
		if c.Tenant != "" {
			return Config{}, nil, errors.New("oauth2: tenant is only for provider microsoft365")
		}
		if r.TokenURL == "" {
			r.TokenURL = GoogleTokenURL
		}
		if len(r.Scopes) == 0 {
			r.Scopes = []string{GoogleScope}
		}
	default:
		return Config{}, nil, fmt.Errorf("oauth2: provider %q is unknown (microsoft365, google, or none with token_url)", c.Provider)
	}
	sig, err := r.check()
	if err != nil {
		return Config{}, nil, err
	}
	return r, sig, nil
}

var tenantName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)

// ValidTenant reports whether s has the shape of an Entra ID tenant id or
// domain.
func ValidTenant(s string) bool { return tenantName.MatchString(s) }

func (r *Config) check() (*signer, error) {
	if r.ClientID == "" {
		return nil, errors.New("oauth2: client_id is required")
	}
	if err := CheckTokenURL(r.TokenURL); err != nil {
		return nil, err
	}
	for _, s := range r.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			return nil, fmt.Errorf("oauth2: scope %q is not a scope token", s)
		}
	}
	secret, key := !r.ClientSecret.IsZero(), !r.PrivateKey.IsZero()
	switch {
	case secret && key:
		return nil, errors.New("oauth2: give client_secret or private_key (private_key_jwt), not both")
	case !secret && !key && r.RefreshToken.IsZero():
		return nil, errors.New("oauth2: client credentials need client_secret or private_key (private_key_jwt)")
	case r.Certificate != "" && !key:
		return nil, errors.New("oauth2: certificate needs the private_key that goes with it")
	}
	switch {
	case key:
		if r.AuthMethod != "" && r.AuthMethod != PrivateKeyJWT {
			return nil, fmt.Errorf("oauth2: auth_method %q does not go with private_key (it is %s)", r.AuthMethod, PrivateKeyJWT)
		}
		r.AuthMethod = PrivateKeyJWT
		return newSigner(r.Certificate, r.PrivateKey, r.KeyID)
	case secret:
		switch r.AuthMethod {
		case "":
			r.AuthMethod = ClientSecretPost
		case ClientSecretPost, ClientSecretBasic:
		default:
			return nil, fmt.Errorf("oauth2: auth_method %q is not %s or %s", r.AuthMethod, ClientSecretPost, ClientSecretBasic)
		}
	default:
		if r.AuthMethod != "" && r.AuthMethod != None {
			return nil, fmt.Errorf("oauth2: auth_method %q needs client_secret or private_key", r.AuthMethod)
		}
		r.AuthMethod = None
	}
	return nil, nil
}

// CheckTokenURL refuses a token URL that would send a secret in clear or
// holds one itself: it must be https, or http to a loopback address, and
// hold no user name or password. Its errors do not quote the URL.
func CheckTokenURL(raw string) error {
	if raw == "" {
		return errors.New("oauth2: token_url is required (or a provider)")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("oauth2: token_url is not an absolute URL")
	}
	if u.User != nil {
		return errors.New("oauth2: token_url must not hold a user name or password")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return errors.New("oauth2: token_url is plain http: only a loopback address may be (the client's secret would travel in clear)")
	}
	return errors.New("oauth2: token_url is not https")
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// String shows every field, the secrets only as present or not.
func (c Config) String() string {
	return fmt.Sprintf("oauth2.Config{Provider:%q Tenant:%q TokenURL:%q ClientID:%q AuthMethod:%q Grant:%s Scopes:%q KeyID:%q Certificate:%t ClientSecret:%s PrivateKey:%s RefreshToken:%s Version:%q}",
		c.Provider, c.Tenant, c.TokenURL, c.ClientID, c.AuthMethod, c.Grant(), c.Scopes, c.KeyID, c.Certificate != "",
		c.ClientSecret, c.PrivateKey, c.RefreshToken, c.Version)
}

// GoString is String.
func (c Config) GoString() string { return c.String() }

// Format makes every fmt verb print String.
func (c Config) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", c.String())
		return
	}
	fmt.Fprint(f, c.String())
}

// LogValue shows the non-secret fields and which secrets are set.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("provider", c.Provider),
		slog.String("token_url", c.TokenURL),
		slog.String("client_id", c.ClientID),
		slog.String("auth_method", c.AuthMethod),
		slog.String("grant", c.Grant()),
		slog.Any("scopes", c.Scopes),
		slog.String("client_secret", c.ClientSecret.String()),
		slog.String("private_key", c.PrivateKey.String()),
		slog.String("refresh_token", c.RefreshToken.String()),
		slog.String("version", c.Version),
	)
}

// MarshalJSON shows what LogValue shows.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{
		"provider": c.Provider, "tenant": c.Tenant, "token_url": c.TokenURL, "client_id": c.ClientID,
		"auth_method": c.AuthMethod, "grant": c.Grant(), "scopes": c.Scopes, "key_id": c.KeyID,
		"certificate": c.Certificate != "", "client_secret": c.ClientSecret, "private_key": c.PrivateKey,
		"refresh_token": c.RefreshToken, "version": c.Version,
	})
}

// MarshalText shows String.
func (c Config) MarshalText() ([]byte, error) { return []byte(c.String()), nil }
