package vault

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/sealrelay/sealrelay/internal/roots"
	"github.com/sealrelay/sealrelay/keys"
)

// Config says where the entries are and how to log in; the names in
// brackets are the keys of [credentials.vault]. It has no defaults: the
// agent's config fills every setting, and New refuses one left unset.
type Config struct {
	// Address is Vault's address ("https://vault.example.com:8200")
	// [address]. Addresses lists more nodes of the same cluster, tried in
	// order when one cannot be reached [addresses]. At least one is needed;
	// Address, if set, comes first.
	Address   string
	Addresses []string
	// Mount is the KV v2 mount [mount].
	Mount string
	// Path is the folder under the mount that holds the entries [path].
	Path string
	// Auth is "token", "approle" or "kubernetes" [auth].
	Auth string
	// TokenFile holds the token for token auth [token_file]; if empty,
	// VAULT_TOKEN is used.
	TokenFile string
	// RoleIDFile and SecretIDFile hold the AppRole role ID and secret ID
	// [role_id_file, secret_id_file].
	RoleIDFile, SecretIDFile string
	// SecretIDWrapped says SecretIDFile holds a response-wrapping token
	// whose unwrapped response holds the secret ID [secret_id_wrapped]. A
	// wrapping token works once: the Source unwraps it at its first login,
	// keeps the secret ID in memory only and logs in again with it; a
	// restarted agent needs a fresh wrapping token in the file.
	SecretIDWrapped bool
	// AppRoleMount is where AppRole is mounted [approle_mount].
	AppRoleMount string
	// KubernetesRole is the Vault role for Kubernetes auth
	// [kubernetes_role]; JWTFile holds the service account token
	// [jwt_file]; KubernetesMount is the auth mount [kubernetes_mount].
	KubernetesRole, JWTFile, KubernetesMount string
	// CAFile is a PEM file of roots trusted for Vault's TLS certificate, in
	// addition to the system roots [ca_file].
	CAFile string
	// Sealed says each entry's password is an age-armored ciphertext
	// [sealed]; Fetch opens it with Identity, Put seals to a recipient list.
	Sealed   bool
	Identity *keys.Identity
	// Recipients, with Sealed, is the recipient list the Source seals
	// what it writes itself to: a rotated refresh token
	// (WriteRefreshToken). Nil: it cannot write sealed values.
	Recipients *keys.RecipientList
	// Timeout bounds each request to Vault [timeout].
	Timeout time.Duration
	// AgentsPath is the folder under the mount where agents report the
	// generations they hold [agents_path]; Report says this agent writes
	// its own report there [report_generations]. Empty: no reports.
	AgentsPath string
	Report     bool
	// Logger receives login and renewal state changes. Default slog.Default().
	Logger *slog.Logger
}

// New checks cfg and returns a Source. It does not contact Vault and does
// not read the token or secret files: Start or the first Fetch logs in.
func New(cfg Config) (*Source, error) {
	cfg.Mount = strings.Trim(cfg.Mount, "/")
	cfg.Path = strings.Trim(cfg.Path, "/")
	cfg.AgentsPath = strings.Trim(cfg.AgentsPath, "/")
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var addrs []string
	if cfg.Address != "" {
		addrs = append(addrs, cfg.Address)
	}
	for _, a := range cfg.Addresses {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("vault: no address configured (address)")
	}
	for _, a := range addrs {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("vault: address %q is not an http:// or https:// URL", a)
		}
	}
	if cfg.Sealed && cfg.Identity == nil {
		return nil, errors.New("vault: sealed = true needs this server's identity to open the entries")
	}
	var auth authenticator
	switch cfg.Auth {
	case "token":
		auth = &tokenAuth{file: cfg.TokenFile}
	case "approle":
		if cfg.RoleIDFile == "" || cfg.SecretIDFile == "" {
			return nil, errors.New(`vault: auth = "approle" needs role_id_file and secret_id_file`)
		}
		auth = &appRoleAuth{mount: strings.Trim(cfg.AppRoleMount, "/"), roleIDFile: cfg.RoleIDFile,
			secretIDFile: cfg.SecretIDFile, wrapped: cfg.SecretIDWrapped}
	case "kubernetes":
		if cfg.KubernetesRole == "" {
			return nil, errors.New(`vault: auth = "kubernetes" needs kubernetes_role`)
		}
		auth = &kubernetesAuth{mount: strings.Trim(cfg.KubernetesMount, "/"), role: cfg.KubernetesRole, jwtFile: cfg.JWTFile}
	default:
		return nil, fmt.Errorf("vault: auth = %q: want token, approle or kubernetes", cfg.Auth)
	}
	roots, err := rootPool(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	if err := cfg.checkSet(); err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	hc := &http.Client{
		Transport: tr,
		// Vault's client follows redirects itself (to the active node).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	s := &Source{cfg: cfg, log: log, addrs: addrs, auth: auth, loggedIn: make(chan struct{}, 1)}
	for _, a := range addrs {
		// MaxRetries 0: a node that does not answer is left for the next
		// one at once; the Store retries the whole read later.
		c, err := api.NewClient(&api.Config{Address: a, HttpClient: hc, Timeout: cfg.Timeout, MaxRetries: 0})
		if err != nil {
			return nil, fmt.Errorf("vault: client for %s: %w", a, err)
		}
		c.ClearToken() // NewClient takes VAULT_TOKEN; only token auth may use it
		s.clients = append(s.clients, c)
	}
	return s, nil
}

// checkSet refuses a Config that leaves a setting its Auth needs unset.
func (cfg *Config) checkSet() error {
	var unset []string
	for _, f := range []struct {
		key   string
		unset bool
	}{
		{"mount", cfg.Mount == ""},
		{"path", cfg.Path == ""},
		{"timeout", cfg.Timeout <= 0},
		{"approle_mount", cfg.Auth == "approle" && strings.Trim(cfg.AppRoleMount, "/") == ""},
		{"kubernetes_mount", cfg.Auth == "kubernetes" && strings.Trim(cfg.KubernetesMount, "/") == ""},
		{"jwt_file", cfg.Auth == "kubernetes" && cfg.JWTFile == ""},
	} {
		if f.unset {
			unset = append(unset, f.key)
		}
	}
	if len(unset) > 0 {
		return fmt.Errorf("vault: not set: %s", strings.Join(unset, ", "))
	}
	return nil
}

// rootPool returns the system roots plus those in caFile.
func rootPool(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil // crypto/tls uses the system roots
	}
	pool, err := roots.Load(caFile)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	return pool, nil
}
