package vault

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/sealrelay/sealrelay/keys"
)

// maxSecretFile caps how much of a token, role ID, secret ID or JWT file is
// read.
const maxSecretFile = 64 << 10

// authenticator logs in to Vault. login gets a client without a token and
// returns a secret whose Auth holds the new token and its lease. It is
// called with the Source's login lock held, so it needs no lock of its own.
type authenticator interface {
	login(ctx context.Context, c *api.Client) (*api.Secret, error)
	// path is the Vault path the login uses, for errors.
	path() string
	// canRelogin reports whether a new login can replace a dead token.
	canRelogin() bool
	// String names the method and its files, for logs and errors.
	String() string
}

// jwtForbidden is the mode mask refused for the Kubernetes service account
// token. Kubernetes mounts it 0644 by default (in a container that runs one
// user), so only a token writable by group or others is refused.
const jwtForbidden fs.FileMode = 0o022

// readSecretFile reads a small file that holds a credential (a token, a
// role or secret ID, a JWT), refusing one whose mode has a bit of
// forbidden (keys.Private: readable by group or others). what names it in
// errors ("vault token file"). Errors never quote the content.
func readSecretFile(path, what string, forbidden fs.FileMode) (string, error) {
	f, err := keys.OpenSecret(path, what, forbidden)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	defer clear(b)
	if err != nil {
		return "", fmt.Errorf("reading %s %s: %w", what, path, err)
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("%s %s is larger than %d bytes", what, path, maxSecretFile)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", what, path)
	}
	return s, nil
}

// tokenAuth uses a token from a file or VAULT_TOKEN. It cannot log in
// again: a revoked or expired token is an error until the file holds a
// valid one. Each "login" reads the token again, so replacing the file is
// enough to recover.
type tokenAuth struct {
	file string // "" means the VAULT_TOKEN environment variable
}

func (a *tokenAuth) String() string {
	if a.file == "" {
		return "token auth (VAULT_TOKEN)"
	}
	return "token auth (" + a.file + ")"
}

func (a *tokenAuth) canRelogin() bool { return false }

func (a *tokenAuth) path() string { return "auth/token/lookup-self" }

func (a *tokenAuth) source() string {
	if a.file == "" {
		return "VAULT_TOKEN"
	}
	return a.file
}

func (a *tokenAuth) login(ctx context.Context, c *api.Client) (*api.Secret, error) {
	var tok string
	if a.file != "" {
		t, err := readSecretFile(a.file, "vault token file", keys.Private)
		if err != nil {
			return nil, err
		}
		tok = t
	} else {
		tok = strings.TrimSpace(os.Getenv(api.EnvVaultToken))
		if tok == "" {
			return nil, errors.New("vault token auth: token_file is not set and VAULT_TOKEN is empty")
		}
	}
	c.SetToken(tok)
	self, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		if isForbidden(err) {
			return nil, a.invalid()
		}
		return nil, err
	}
	ttl, _ := self.TokenTTL()
	renewable, _ := self.TokenIsRenewable()
	policies, _ := self.TokenPolicies()
	return &api.Secret{Auth: &api.SecretAuth{
		ClientToken:   tok,
		Policies:      policies,
		Renewable:     renewable,
		LeaseDuration: int(ttl.Seconds()),
	}}, nil
}

// invalid is the error for a token Vault no longer accepts.
func (a *tokenAuth) invalid() error {
	return &Error{
		Path:   a.path(),
		Kind:   ErrTokenInvalid,
		Detail: "the token from " + a.source() + " was revoked or has expired, and token auth cannot log in again",
		hint:   "put a valid token in " + a.source() + ", or use approle or kubernetes auth, which log in again by themselves",
	}
}

// appRoleAuth logs in with a role ID and a secret ID, each read from a
// file. With wrapped, the secret ID file holds a response-wrapping token:
// it is unwrapped once, the secret ID is kept in memory only and used for
// every later login, and the file is read again only when Vault no longer
// accepts that secret ID.
type appRoleAuth struct {
	mount        string
	roleIDFile   string
	secretIDFile string
	wrapped      bool

	secretID string   // the unwrapped secret ID (wrapped mode)
	usedWrap [32]byte // digest of the last wrapping token unwrapped
	hasUsed  bool
}

func (a *appRoleAuth) String() string {
	return "approle auth (role ID " + a.roleIDFile + ", secret ID " + a.secretIDFile + ")"
}

func (a *appRoleAuth) canRelogin() bool { return true }

func (a *appRoleAuth) path() string { return "auth/" + a.mount + "/login" }

func (a *appRoleAuth) login(ctx context.Context, c *api.Client) (*api.Secret, error) {
	roleID, err := readSecretFile(a.roleIDFile, "approle role ID file", keys.Private)
	if err != nil {
		return nil, err
	}
	if !a.wrapped {
		secretID, err := readSecretFile(a.secretIDFile, "approle secret ID file", keys.Private)
		if err != nil {
			return nil, err
		}
		sec, err := a.loginWith(ctx, c, roleID, secretID)
		if err != nil && isClientError(err) && looksLikeToken(secretID) {
			return nil, a.loginError(err, "the secret ID file holds what looks like a response-wrapping token: set secret_id_wrapped = true")
		}
		return sec, a.loginError(err, "")
	}
	if a.secretID != "" {
		sec, err := a.loginWith(ctx, c, roleID, a.secretID)
		if err == nil || !isClientError(err) {
			return sec, a.loginError(err, "")
		}
		// Vault no longer takes this secret ID (used up, expired or
		// revoked): only a fresh wrapped one in the file can help.
		a.secretID = ""
	}
	wrap, err := readSecretFile(a.secretIDFile, "approle secret ID file", keys.Private)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(wrap))
	if a.hasUsed && sum == a.usedWrap {
		return nil, a.wrapUsed(nil)
	}
	secretID, err := a.unwrap(ctx, c, wrap)
	if err != nil {
		return nil, err
	}
	a.secretID, a.usedWrap, a.hasUsed = secretID, sum, true
	sec, err := a.loginWith(ctx, c, roleID, secretID)
	return sec, a.loginError(err, "")
}

func (a *appRoleAuth) loginWith(ctx context.Context, c *api.Client, roleID, secretID string) (*api.Secret, error) {
	m, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromString: secretID}, approle.WithMountPath(a.mount))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.path(), err)
	}
	return m.Login(ctx, c)
}

// unwrap exchanges a response-wrapping token for the secret ID it wraps.
func (a *appRoleAuth) unwrap(ctx context.Context, c *api.Client, wrap string) (string, error) {
	wc, err := c.Clone()
	if err != nil {
		return "", fmt.Errorf("vault client: %w", err)
	}
	wc.SetToken(wrap) // unwrap with the wrapping token as the request's token
	sec, err := wc.Logical().UnwrapWithContext(ctx, "")
	if err != nil {
		if isClientError(err) {
			return "", a.wrapUsed(err)
		}
		return "", err
	}
	if sec == nil {
		return "", a.wrapUsed(nil)
	}
	id, _ := sec.Data["secret_id"].(string)
	if id == "" {
		return "", &Error{Path: "sys/wrapping/unwrap", Kind: ErrLoginFailed,
			Detail: "the wrapping token in " + a.secretIDFile + " does not wrap an approle secret ID"}
	}
	return id, nil
}

func (a *appRoleAuth) wrapUsed(err error) error {
	return &Error{
		Path:   "sys/wrapping/unwrap",
		Kind:   ErrWrapTokenUsed,
		Detail: "the secret ID wrapping token in " + a.secretIDFile + " was already used (or has expired); put a fresh wrapped secret ID there",
		Err:    err,
		hint:   "a wrapping token can be unwrapped once; issue a new one with `vault write -wrap-ttl=10m -f auth/" + a.mount + "/role/ROLE/secret-id`",
	}
}

// loginError classifies a refused login; hint, if set, replaces the
// general one.
func (a *appRoleAuth) loginError(err error, hint string) error {
	if err == nil || !isClientError(err) {
		return err
	}
	var re *api.ResponseError
	errors.As(err, &re)
	if hint == "" {
		hint = "check the role ID in " + a.roleIDFile + " and the secret ID in " + a.secretIDFile
	}
	return &Error{Path: a.path(), Kind: ErrLoginFailed, Detail: vaultMessage(re), Err: err, hint: hint}
}

// looksLikeToken reports whether s has the form of a Vault token rather
// than of a secret ID (a UUID, or whatever custom value the role was given).
func looksLikeToken(s string) bool {
	for _, p := range []string{"hvs.", "hvb.", "s.", "b."} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// kubernetesAuth logs in with the pod's service account JWT, read from
// its file at every login (Kubernetes rotates it).
type kubernetesAuth struct {
	mount   string
	role    string
	jwtFile string
}

func (a *kubernetesAuth) String() string {
	return "kubernetes auth (role " + a.role + ", " + a.jwtFile + ")"
}

func (a *kubernetesAuth) canRelogin() bool { return true }

func (a *kubernetesAuth) path() string { return "auth/" + a.mount + "/login" }

func (a *kubernetesAuth) login(ctx context.Context, c *api.Client) (*api.Secret, error) {
	jwt, err := readSecretFile(a.jwtFile, "kubernetes service account token file", jwtForbidden)
	if err != nil {
		return nil, err
	}
	m, err := kubernetes.NewKubernetesAuth(a.role, kubernetes.WithServiceAccountToken(jwt), kubernetes.WithMountPath(a.mount))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.path(), err)
	}
	sec, err := m.Login(ctx, c)
	if err != nil && isClientError(err) {
		var re *api.ResponseError
		errors.As(err, &re)
		return nil, &Error{Path: a.path(), Kind: ErrLoginFailed, Detail: vaultMessage(re), Err: err,
			hint: "check that vault's kubernetes role " + a.role + " is bound to this pod's service account"}
	}
	return sec, err
}
