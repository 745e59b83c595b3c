// Package vault is a credential source backed by HashiCorp Vault's KV v2
// engine. Entry NAME lives at <mount>/data/<path>/NAME and holds the keys
// username and password; with Config.Sealed the password is an age-armored
// ciphertext sealed to the servers' recipient list, which this server opens
// with its own identity, so a Vault reader who is not one of those servers
// learns nothing.
//
// A Source logs in with a token (token_file or VAULT_TOKEN), AppRole (role
// ID and secret ID files; the secret ID may be response-wrapped) or
// Kubernetes (the pod's service account JWT), keeps its token alive with
// api.LifetimeWatcher, and logs in again when renewal ends or Vault says the
// token is gone. Token auth cannot log in again: a revoked or expired token
// is an error that says so. Several addresses may be given: a node that
// cannot be reached (or is sealed) makes the Source try the next.
//
// Promises: no token, secret ID, JWT or entry value appears in a log line,
// an error or a file written by this package. Files holding a token, role
// ID, secret ID or JWT are refused if group or others can read them, and
// are read only when logging in. Errors name the Vault path and say what
// kind of failure it was (connection refused, vault is sealed, permission
// denied, entry missing, missing key).
package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age/armor"
	"github.com/hashicorp/vault/api"

	"github.com/sealrelay/sealrelay/internal/roots"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
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
	// Timeout bounds each request to Vault [timeout].
	Timeout time.Duration
	// Logger receives login and renewal state changes. Default slog.Default().
	Logger *slog.Logger
}

// Entry is what List shows of a KV entry: never its password.
type Entry struct {
	Name     string
	Username string
	Version  int  // KV version number of the current version
	Sealed   bool // the password is an age-armored ciphertext
	Deleted  bool // the current version is deleted; Username is empty
}

// Source reads credential entries from Vault. It implements
// secrets.VersionSource. Its methods are safe for concurrent use.
type Source struct {
	cfg     Config
	log     *slog.Logger
	addrs   []string
	clients []*api.Client // one per address; all hold the current token
	cur     atomic.Int64  // index of the address in use
	auth    authenticator

	mu       sync.Mutex // serializes logins; guards the fields below
	secret   *api.Secret
	gen      uint64 // counts logins
	started  bool
	stateErr string // the last login state logged ("" = logged in)
	loggedIn chan struct{}
}

// New checks cfg and returns a Source. It does not contact Vault and does
// not read the token or secret files: Start or the first Fetch logs in.
func New(cfg Config) (*Source, error) {
	cfg.Mount = strings.Trim(cfg.Mount, "/")
	cfg.Path = strings.Trim(cfg.Path, "/")
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

// String describes the source: "vault ADDR MOUNT/PATH".
func (s *Source) String() string {
	return "vault " + strings.Join(s.addrs, ",") + " " + s.cfg.Mount + "/" + s.cfg.Path
}

// Start logs in and keeps the token alive until ctx ends: it renews the
// token with api.LifetimeWatcher and logs in again when renewal ends (the
// token reached its max TTL, or a renewal failed), retrying with backoff
// while Vault cannot be reached. Each change of state is logged once.
//
// It returns the first login's error, if any; the Source keeps trying in
// the background either way, so an agent can start while Vault is down.
func (s *Source) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("vault: source already started")
	}
	s.started = true
	var err error
	if s.secret == nil {
		err = s.loginLocked(ctx, "start")
	}
	s.mu.Unlock()
	go s.keepAlive(ctx)
	return err
}

// Retry bounds for logins that failed, in the keep-alive loop.
const (
	minRetry = time.Second
	maxRetry = 30 * time.Second
)

func (s *Source) keepAlive(ctx context.Context) {
	wait := minRetry
	for ctx.Err() == nil {
		s.mu.Lock()
		sec, gen := s.secret, s.gen
		s.mu.Unlock()
		reason := "not logged in"
		if sec != nil {
			reason = s.watch(ctx, sec)
			if reason == "" {
				continue // ctx ended, or another login replaced the token
			}
		}
		if err := s.relogin(ctx, gen, reason); err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, maxRetry)
			continue
		}
		wait = minRetry
		select { // our own login's notice: nothing to react to
		case <-s.loggedIn:
		default:
		}
	}
}

// watch keeps sec's token alive until it must be replaced, and returns why;
// it returns "" when ctx ends or another login replaced the token.
func (s *Source) watch(ctx context.Context, sec *api.Secret) string {
	if !sec.Auth.Renewable && sec.Auth.LeaseDuration == 0 {
		// A token without TTL (a root token) never expires.
		select {
		case <-ctx.Done():
		case <-s.loggedIn:
		}
		return ""
	}
	in := &api.LifetimeWatcherInput{Secret: sec}
	if sec.Auth.Renewable {
		// A failed renewal ends the watcher at once, so the next login
		// can go to another node instead of retrying this one.
		in.RenewBehavior = api.RenewBehaviorErrorOnErrors
	}
	w, err := s.client().NewLifetimeWatcher(in)
	if err != nil {
		return "cannot watch the token: " + err.Error()
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ""
		case <-s.loggedIn:
			return ""
		case r := <-w.RenewCh():
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				s.log.Debug("vault token renewed", "ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
			}
		case err := <-w.DoneCh():
			if err != nil && !strings.Contains(err.Error(), "past the max TTL") {
				return "token renewal failed: " + classify("auth/token/renew-self", s.addr(), err).Error()
			}
			return "token reached the end of its lifetime"
		}
	}
}

// relogin logs in again unless a login happened since generation gen.
func (s *Source) relogin(ctx context.Context, gen uint64, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen && s.secret != nil {
		return nil
	}
	return s.loginLocked(ctx, reason)
}

// loginLocked logs in (on the first node that answers), hands the token to
// every client and logs the change of state.
func (s *Source) loginLocked(ctx context.Context, reason string) error {
	var sec *api.Secret
	err := s.onNodes(ctx, func(c *api.Client) error {
		lc, err := c.Clone()
		if err != nil {
			return fmt.Errorf("vault client: %w", err)
		}
		lc.ClearToken()
		sec, err = s.auth.login(ctx, lc)
		return err
	})
	if err == nil && (sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "") {
		err = &Error{Path: s.auth.path(), Kind: ErrLoginFailed, Detail: s.auth.String() + " returned no token"}
	}
	if err != nil {
		err = classify(s.auth.path(), s.addr(), err)
		if text := err.Error(); text != s.stateErr {
			s.log.Error("vault login failed", "auth", s.auth.String(), "reason", reason, "err", text)
			s.stateErr = text
		}
		return err
	}
	for _, c := range s.clients {
		c.SetToken(sec.Auth.ClientToken)
	}
	s.secret = sec
	s.gen++
	attrs := []any{"auth", s.auth.String(), "address", s.addr(), "reason", reason,
		"policies", sec.Auth.Policies, "ttl", time.Duration(sec.Auth.LeaseDuration) * time.Second,
		"renewable", sec.Auth.Renewable}
	if s.stateErr != "" || s.gen == 1 {
		s.log.Info("logged in to vault", attrs...)
	} else {
		s.log.Debug("logged in to vault", attrs...)
	}
	s.stateErr = ""
	select {
	case s.loggedIn <- struct{}{}:
	default:
	}
	return nil
}

// generation returns the number of logins so far.
func (s *Source) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// client returns the client for the address in use.
func (s *Source) client() *api.Client { return s.clients[s.cur.Load()] }

// addr returns the address in use.
func (s *Source) addr() string { return s.addrs[s.cur.Load()] }

// onNodes runs fn on the node in use and, while the node cannot be
// reached or is sealed, on the next ones. The first node that answers
// becomes the one in use.
func (s *Source) onNodes(ctx context.Context, fn func(*api.Client) error) error {
	n := len(s.clients)
	start := int(s.cur.Load())
	var err error
	for i := range n {
		idx := (start + i) % n
		err = fn(s.clients[idx])
		if err == nil || !nodeDown(err) || ctx.Err() != nil {
			if i > 0 && s.cur.CompareAndSwap(int64(start), int64(idx)) {
				s.log.Warn("vault node unusable; switched to another", "from", s.addrs[start], "to", s.addrs[idx])
			}
			return err
		}
		if i+1 < n {
			s.log.Debug("vault node unusable; trying the next", "address", s.addrs[idx], "err", classify("request", s.addrs[idx], err).Error())
		}
	}
	return &nodeError{addrs: tried(s.addrs, start), err: err}
}

// tried lists addrs in the order onNodes tries them from start.
func tried(addrs []string, start int) []string {
	return append(slices.Clone(addrs[start:]), addrs[:start]...)
}

// nodeError is the failure of a request that no node could serve; addrs
// are the nodes tried.
type nodeError struct {
	addrs []string
	err   error
}

func (e *nodeError) Error() string { return e.err.Error() }
func (e *nodeError) Unwrap() error { return e.err }

// call runs a request with the Source's token, logging in first if there
// is no token. A 403 makes it ask Vault whether the token is still valid:
// if not, it logs in again (approle, kubernetes) and retries once, or
// reports the dead token (token auth); if it is, the token's policies do
// not allow the request.
func (s *Source) call(ctx context.Context, path string, fn func(*api.Client) error) error {
	s.mu.Lock()
	if s.secret == nil {
		if err := s.loginLocked(ctx, "first use"); err != nil {
			s.mu.Unlock()
			return s.pathError(path, err)
		}
	}
	gen, policies := s.gen, s.secret.Auth.Policies
	s.mu.Unlock()

	err := s.onNodes(ctx, fn)
	if !isForbidden(err) {
		return s.classify(path, err)
	}
	lerr := s.onNodes(ctx, func(c *api.Client) error {
		_, err := c.Auth().Token().LookupSelfWithContext(ctx)
		return err
	})
	switch {
	case lerr == nil && s.generation() != gen:
		// Another call logged in while this one ran: try with the new token.
		return s.classify(path, s.onNodes(ctx, fn))
	case lerr == nil:
		return &Error{Path: path, Kind: ErrPermissionDenied,
			Detail: fmt.Sprintf("the token's policies (%s) do not allow this", strings.Join(policies, ", ")),
			Err:    err,
			hint: fmt.Sprintf("give the token a policy with read on %[1]s/data/%[2]s/* and read, list on %[1]s/metadata/%[2]s/*",
				s.cfg.Mount, s.cfg.Path)}
	case !isForbidden(lerr):
		return s.classify(path, err)
	}
	if !s.auth.canRelogin() {
		s.mu.Lock()
		s.secret = nil // the next call reads the token file again
		s.mu.Unlock()
		return s.pathError(path, s.auth.(*tokenAuth).invalid())
	}
	if err := s.relogin(ctx, gen, "vault no longer accepts the token (revoked or expired)"); err != nil {
		return s.pathError(path, err)
	}
	return s.classify(path, s.onNodes(ctx, fn))
}

// classify makes err an *Error for path.
func (s *Source) classify(path string, err error) error {
	return classify(path, s.addr(), err)
}

// pathError puts path in front of a login error, which names the auth
// path, so a failed read says which entry it was for.
func (s *Source) pathError(path string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", path, err)
}

// entry returns the path of entry name under the mount ("sealrelay/primary").
func (s *Source) entry(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") ||
		slices.Contains(strings.Split(name, "/"), "..") || strings.ContainsAny(name, "\x00\r\n") {
		return "", fmt.Errorf("vault: %q is not a valid entry name", name)
	}
	return s.cfg.Path + "/" + name, nil
}

// Fetch reads the named entries. It fails as a whole if any entry cannot
// be read, lacks a username or password, or (with Sealed) cannot be
// opened. Each Credential's Version is the entry's KV version number.
func (s *Source) Fetch(ctx context.Context, names []string) (map[string]secrets.Credential, error) {
	out := make(map[string]secrets.Credential, len(names))
	for _, name := range names {
		c, err := s.fetch(ctx, name)
		if err != nil {
			return nil, err
		}
		out[name] = c
	}
	return out, nil
}

func (s *Source) fetch(ctx context.Context, name string) (secrets.Credential, error) {
	p, err := s.entry(name)
	if err != nil {
		return secrets.Credential{}, err
	}
	dataPath := s.cfg.Mount + "/data/" + p
	var kv *api.KVSecret
	err = s.call(ctx, dataPath, func(c *api.Client) error {
		var err error
		kv, err = c.KVv2(s.cfg.Mount).Get(ctx, p)
		return err
	})
	if err != nil {
		return secrets.Credential{}, err
	}
	if kv.Data == nil {
		return secrets.Credential{}, &Error{Path: dataPath, Kind: secrets.ErrNotFound,
			Detail: "its current version is deleted", hint: s.setHint(name)}
	}
	username, err := s.stringKey(dataPath, name, kv.Data, "username")
	if err != nil {
		return secrets.Credential{}, err
	}
	password, err := s.stringKey(dataPath, name, kv.Data, "password")
	if err != nil {
		return secrets.Credential{}, err
	}
	version := ""
	if kv.VersionMetadata != nil {
		version = strconv.Itoa(kv.VersionMetadata.Version)
	}
	sealed := isArmored(password)
	switch {
	case s.cfg.Sealed && !sealed:
		return secrets.Credential{}, &Error{Path: dataPath, Kind: ErrSealMismatch,
			Detail: "sealed = true, but the password is not an age-armored ciphertext", hint: s.setHint(name)}
	case !s.cfg.Sealed && sealed:
		return secrets.Credential{}, &Error{Path: dataPath, Kind: ErrSealMismatch,
			Detail: "the password is an age-armored ciphertext, but sealed = false",
			hint:   "set sealed = true in [credentials.vault], or store the entry unsealed"}
	case s.cfg.Sealed:
		plain, err := keys.Open([]byte(password), s.cfg.Identity, "vault entry "+s.cfg.Mount+"/"+p)
		if err != nil {
			return secrets.Credential{}, err
		}
		password = string(plain)
		clear(plain)
	}
	return secrets.NewCredential(name, username, password, version), nil
}

// stringKey returns the non-empty string under key, or an ErrMissingKey
// error that never quotes the value.
func (s *Source) stringKey(dataPath, name string, data map[string]any, key string) (string, error) {
	v, ok := data[key]
	detail := ""
	switch str, isStr := v.(string); {
	case !ok:
		detail = fmt.Sprintf("the entry has no %q key", key)
	case !isStr:
		detail = fmt.Sprintf("the %q key is not a string", key)
	case str == "":
		detail = fmt.Sprintf("the %q key is empty", key)
	default:
		return str, nil
	}
	return "", &Error{Path: dataPath, Kind: ErrMissingKey, Detail: detail + " (it needs username and password)", hint: s.setHint(name)}
}

func (s *Source) setHint(name string) string {
	return "write it with `sealrelay creds set " + name + " --vault -c CONFIG`"
}

// isArmored reports whether v is an ASCII-armored age file.
func isArmored(v string) bool {
	return strings.HasPrefix(strings.TrimLeft(v, " \t\r\n"), armor.Header)
}

// Versions returns each entry's current KV version number, from its
// metadata (cheaper than reading the entry, and no secret crosses the wire).
func (s *Source) Versions(ctx context.Context, names []string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	for _, name := range names {
		p, err := s.entry(name)
		if err != nil {
			return nil, err
		}
		var md *api.KVMetadata
		err = s.call(ctx, s.cfg.Mount+"/metadata/"+p, func(c *api.Client) error {
			var err error
			md, err = c.KVv2(s.cfg.Mount).GetMetadata(ctx, p)
			return err
		})
		if err != nil {
			return nil, err
		}
		out[name] = strconv.Itoa(md.CurrentVersion)
	}
	return out, nil
}

// Put writes entry name with username and password and returns its new KV
// version. With Sealed, the password is sealed to recipients first (which
// must then be given) and the username stays in clear; without, recipients
// must be nil, so a value meant to be sealed is never stored in clear.
func (s *Source) Put(ctx context.Context, name, username, password string, recipients *keys.RecipientList) (int, error) {
	p, err := s.entry(name)
	if err != nil {
		return 0, err
	}
	dataPath := s.cfg.Mount + "/data/" + p
	if username == "" || password == "" {
		return 0, fmt.Errorf("%s: username and password must not be empty", dataPath)
	}
	value := password
	switch {
	case s.cfg.Sealed && recipients == nil:
		return 0, fmt.Errorf("%s: sealed = true, so a recipient list is needed to seal the password", dataPath)
	case !s.cfg.Sealed && recipients != nil:
		return 0, fmt.Errorf("%s: a recipient list was given, but sealed = false: the password would be stored in clear", dataPath)
	case s.cfg.Sealed:
		ct, err := keys.Seal([]byte(password), recipients)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", dataPath, err)
		}
		value = string(ct)
	}
	var kv *api.KVSecret
	err = s.call(ctx, dataPath, func(c *api.Client) error {
		var err error
		kv, err = c.KVv2(s.cfg.Mount).Put(ctx, p, map[string]any{"username": username, "password": value})
		return err
	})
	if err != nil {
		return 0, err
	}
	if kv.VersionMetadata == nil {
		return 0, &Error{Path: dataPath, Kind: ErrUnexpected, Detail: "the write returned no version"}
	}
	return kv.VersionMetadata.Version, nil
}

// List returns the entries under the path, sorted by name, with their
// usernames and versions and whether they are sealed. Passwords are read
// (KV has no other way to get the username) but never returned.
func (s *Source) List(ctx context.Context) ([]Entry, error) {
	listPath := s.cfg.Mount + "/metadata/" + s.cfg.Path
	var sec *api.Secret
	err := s.call(ctx, listPath, func(c *api.Client) error {
		var err error
		sec, err = c.Logical().ListWithContext(ctx, listPath)
		return err
	})
	if err != nil {
		return nil, err
	}
	var names []string
	if sec != nil {
		raw, _ := sec.Data["keys"].([]any)
		for _, k := range raw {
			if n, ok := k.(string); ok && !strings.HasSuffix(n, "/") {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	entries := make([]Entry, 0, len(names))
	for _, name := range names {
		p := s.cfg.Path + "/" + name
		var kv *api.KVSecret
		err := s.call(ctx, s.cfg.Mount+"/data/"+p, func(c *api.Client) error {
			var err error
			kv, err = c.KVv2(s.cfg.Mount).Get(ctx, p)
			return err
		})
		if err != nil {
			return nil, err
		}
		e := Entry{Name: name, Deleted: kv.Data == nil}
		if kv.VersionMetadata != nil {
			e.Version = kv.VersionMetadata.Version
		}
		if !e.Deleted {
			e.Username, _ = kv.Data["username"].(string)
			pw, _ := kv.Data["password"].(string)
			e.Sealed = isArmored(pw)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

var _ secrets.VersionSource = (*Source)(nil)
