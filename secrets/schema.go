package secrets

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Kind is what an entry holds: a password (the default), OAuth2 client
// credentials, a TLS client certificate, or Amazon SES keys
// (docs/credentials.md).
type Kind string

// The kinds of entry.
const (
	// KindPassword is a username and a password. An entry without a
	// kind key is one.
	KindPassword Kind = "password"
	// KindOAuth2 gets access tokens for XOAUTH2 and OAUTHBEARER: a client
	// secret, a private key (private_key_jwt) or a refresh token.
	KindOAuth2 Kind = "oauth2"
	// KindCertificate is a TLS client certificate chain and its key. It
	// has no username: its identity is the certificate.
	KindCertificate Kind = "certificate"
	// KindSES is an IAM access key id and secret access key; the SMTP
	// password is derived in memory, the username is the access key id.
	KindSES Kind = "ses"
)

// Kinds lists every kind, in the order documentation shows them.
var Kinds = []Kind{KindPassword, KindOAuth2, KindCertificate, KindSES}

// ParseKind returns the Kind named s; "" is KindPassword.
func ParseKind(s string) (Kind, error) {
	if s == "" {
		return KindPassword, nil
	}
	if k := Kind(s); slices.Contains(Kinds, k) {
		return k, nil
	}
	return "", errors.New("kind is not password, oauth2, certificate or ses")
}

// The keys an entry may hold. Each is a string, but for KeyScopes: a list
// of strings.
const (
	KeyKind            = "kind"
	KeyUsername        = "username"
	KeyProvider        = "provider"
	KeyTenant          = "tenant"
	KeyTokenURL        = "token_url"
	KeyClientID        = "client_id"
	KeyAuthMethod      = "auth_method"
	KeyKeyID           = "key_id"
	KeyScopes          = "scopes"
	KeyAccessKeyID     = "access_key_id"
	KeyRegion          = "region"
	KeyGeneration      = "generation"
	KeyCertificate     = "certificate"
	KeyPassword        = "password"
	KeyClientSecret    = "client_secret"
	KeyRefreshToken    = "refresh_token"
	KeyPrivateKey      = "private_key"
	KeySecretAccessKey = "secret_access_key"
)

// keySpec describes one key.
type keySpec struct {
	name      string
	title     string // the field's name in String: "TokenURL"
	secret    bool
	multiline bool // PEM: written as a multi-line string
}

// keySpecs lists every key in the order entries are written and printed.
var keySpecs = []keySpec{
	{name: KeyKind, title: "Kind"},
	{name: KeyUsername, title: "Username"},
	{name: KeyProvider, title: "Provider"},
	{name: KeyTenant, title: "Tenant"},
	{name: KeyTokenURL, title: "TokenURL"},
	{name: KeyClientID, title: "ClientID"},
	{name: KeyAuthMethod, title: "AuthMethod"},
	{name: KeyKeyID, title: "KeyID"},
	{name: KeyScopes, title: "Scopes"},
	{name: KeyAccessKeyID, title: "AccessKeyID"},
	{name: KeyRegion, title: "Region"},
	{name: KeyCertificate, title: "Certificate", multiline: true},
	{name: KeyPassword, title: "Password", secret: true},
	{name: KeyClientSecret, title: "ClientSecret", secret: true},
	{name: KeyRefreshToken, title: "RefreshToken", secret: true},
	{name: KeyPrivateKey, title: "PrivateKey", secret: true, multiline: true},
	{name: KeySecretAccessKey, title: "SecretAccessKey", secret: true},
	{name: KeyGeneration, title: "Generation"},
}

func spec(key string) (keySpec, bool) {
	i := slices.IndexFunc(keySpecs, func(s keySpec) bool { return s.name == key })
	if i < 0 {
		return keySpec{}, false
	}
	return keySpecs[i], true
}

// KnownKey reports whether key is a key of some kind of entry.
func KnownKey(key string) bool { _, ok := spec(key); return ok }

// IsSecretKey reports whether key holds a secret (password, client_secret,
// refresh_token, private_key, secret_access_key): never printed, sealed
// in Vault with sealed = true.
func IsSecretKey(key string) bool { s, _ := spec(key); return s.secret }

// IsMultilineKey reports whether key holds PEM text, which writers show
// on several lines.
func IsMultilineKey(key string) bool { s, _ := spec(key); return s.multiline }

// kindSpec is the schema of one kind: the keys it takes besides kind and
// generation, and those it always needs. Rules between keys are in each
// kind's check.
type kindSpec struct {
	keys     []string
	required []string
	// noUsername, if set, is why the kind takes no username key.
	noUsername string
}

var kindSpecs = map[Kind]kindSpec{
	KindPassword: {
		keys:     []string{KeyUsername, KeyPassword},
		required: []string{KeyUsername, KeyPassword},
	},
	KindOAuth2: {
		keys: []string{KeyUsername, KeyProvider, KeyTenant, KeyTokenURL, KeyClientID, KeyAuthMethod, KeyKeyID,
			KeyScopes, KeyCertificate, KeyClientSecret, KeyRefreshToken, KeyPrivateKey},
		required: []string{KeyUsername, KeyClientID},
	},
	KindCertificate: {
		keys:       []string{KeyCertificate, KeyPrivateKey},
		required:   []string{KeyCertificate, KeyPrivateKey},
		noUsername: "a certificate entry has no username: its identity is the certificate",
	},
	KindSES: {
		keys:       []string{KeyAccessKeyID, KeyRegion, KeySecretAccessKey},
		required:   []string{KeyAccessKeyID, KeyRegion, KeySecretAccessKey},
		noUsername: "an ses entry's username is its access_key_id",
	},
}

// KeyInfo describes a key of a kind of entry, for documentation and the
// command line.
type KeyInfo struct {
	Name     string
	Secret   bool
	Required bool // always required; others may be, depending on the rest
}

// KindKeys returns the keys kind takes besides kind and generation, in
// the order entries are written.
func KindKeys(kind Kind) []KeyInfo {
	ks := kindSpecs[kind]
	var out []KeyInfo
	for _, s := range keySpecs {
		if slices.Contains(ks.keys, s.name) {
			out = append(out, KeyInfo{Name: s.name, Secret: s.secret, Required: slices.Contains(ks.required, s.name)})
		}
	}
	return out
}

// Takes reports whether an entry of kind may hold key.
func (k Kind) Takes(key string) bool {
	return key == KeyKind || key == KeyGeneration || slices.Contains(kindSpecs[k].keys, key)
}

// The kinds of schema failure an *EntryError reports; test them with
// errors.Is.
var (
	ErrMissingKey   = errors.New("missing key")
	ErrUnknownKey   = errors.New("unknown key")
	ErrInvalidEntry = errors.New("invalid entry")
)

// EntryError is an entry that does not fit the schema of its kind. Its
// text names the entry and the key, and never quotes a value: an operator
// may have pasted a secret under the wrong key.
type EntryError struct {
	Entry string
	Key   string // the key at fault; "" for the entry as a whole
	Err   error  // ErrMissingKey, ErrUnknownKey or ErrInvalidEntry
	// Why says, for a missing key needed only with others, which ones:
	// "provider microsoft365 needs it, or token_url".
	Why string
	msg string
}

func (e *EntryError) Error() string { return e.msg }

// Unwrap returns the kind of failure.
func (e *EntryError) Unwrap() error { return e.Err }

// invalid returns an ErrInvalidEntry: `entry "NAME": ` and the message.
func invalid(entry, key, format string, args ...any) *EntryError {
	return &EntryError{Entry: entry, Key: key, Err: ErrInvalidEntry,
		msg: fmt.Sprintf("entry %q: ", entry) + fmt.Sprintf(format, args...)}
}

// missing returns an ErrMissingKey: `entry "NAME" has no KEY` and why.
func missing(entry, key, why string) *EntryError {
	msg := fmt.Sprintf("entry %q has no %s", entry, key)
	if why != "" {
		msg += " (" + why + ")"
	}
	return &EntryError{Entry: entry, Key: key, Err: ErrMissingKey, Why: why, msg: msg}
}

var (
	keyName    = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	generation = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)
)

// ValidGeneration reports whether g may be a generation id: 1 to 64 of
// A-Z a-z 0-9 . _ : -
func ValidGeneration(g string) bool { return generation.MatchString(g) }

// values is an entry's keys while it is parsed.
type values struct {
	name    string
	kind    Kind
	str     map[string]string // non-empty string keys; secrets only when full
	scopes  []string
	secrets map[string]bool     // secret keys present
	full    bool                // secret values are at hand and checked
	certs   []*x509.Certificate // the certificate key, parsed
	// What the secrets give, when full.
	derived string           // an ses entry's SMTP password
	tlsCert *tls.Certificate // a certificate entry's chain and key
}

func (v *values) has(key string) bool {
	if IsSecretKey(key) {
		return v.secrets[key]
	}
	if key == KeyScopes {
		return len(v.scopes) > 0
	}
	return v.str[key] != ""
}

// ParseEntry builds the credential that entry name holds from its stored
// keys: a TOML table of the credential file, or a Vault KV entry's data
// (opened, if sealed). Values are strings, scopes a list of strings (or
// one string of space-separated scopes). It checks every key against the
// schema of the entry's kind; errors are *EntryError.
func ParseEntry(name string, data map[string]any) (Credential, error) {
	return parse(name, data, true)
}

// ParsePublic is ParseEntry for what is not secret: it checks every key
// that is not secret, and of the secret ones only that they are set, so
// it works on sealed values. The Credential it returns holds no secret;
// it serves listings, and checks before a secret is asked for.
func ParsePublic(name string, data map[string]any) (Credential, error) {
	return parse(name, data, false)
}

func parse(name string, data map[string]any, full bool) (Credential, error) {
	v := &values{name: name, str: map[string]string{}, secrets: map[string]bool{}, full: full}
	kindStr, err := stringValue(name, KeyKind, data[KeyKind])
	if err != nil {
		return Credential{}, err
	}
	if v.kind, err = ParseKind(kindStr); err != nil {
		return Credential{}, invalid(name, KeyKind, "%v", err)
	}
	ks := kindSpecs[v.kind]
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := v.take(k, data[k], ks); err != nil {
			return Credential{}, err
		}
	}
	for _, k := range ks.required {
		if !v.has(k) {
			return Credential{}, missing(name, k, "")
		}
	}
	if g := v.str[KeyGeneration]; g != "" && !ValidGeneration(g) {
		return Credential{}, invalid(name, KeyGeneration, "generation must be 1 to 64 of A-Z a-z 0-9 . _ : -")
	}
	c := Credential{Name: name, Generation: v.str[KeyGeneration], kind: v.kind}
	if err := kindChecks[v.kind](v, &c); err != nil {
		return Credential{}, err
	}
	c.settings = newSettings(v)
	for _, k := range keySpecs {
		if v.secrets[k.name] {
			c.settings.secretKeys = append(c.settings.secretKeys, k.name)
		}
	}
	if full {
		sv := &secretValues{values: map[string]string{}, derived: v.derived, tlsCert: v.tlsCert}
		for k := range v.secrets {
			sv.values[k] = v.str[k]
		}
		c.secret = boxed(sv)
	}
	return c, nil
}

// take checks key k of the entry and records its value.
func (v *values) take(k string, raw any, ks kindSpec) error {
	switch {
	case k == KeyKind:
		return nil
	case !KnownKey(k):
		if !keyName.MatchString(k) {
			return &EntryError{Entry: v.name, Err: ErrUnknownKey,
				msg: fmt.Sprintf("entry %q has an unknown key (%s)", v.name, takes(v.kind))}
		}
		return &EntryError{Entry: v.name, Key: k, Err: ErrUnknownKey,
			msg: fmt.Sprintf("entry %q has unknown key %q (%s)", v.name, k, takes(v.kind))}
	case !v.kind.Takes(k):
		why := takes(v.kind)
		if k == KeyUsername && ks.noUsername != "" {
			why = ks.noUsername
		}
		return &EntryError{Entry: v.name, Key: k, Err: ErrUnknownKey,
			msg: fmt.Sprintf("entry %q has key %q, which is not for kind %s (%s)", v.name, k, v.kind, why)}
	case k == KeyScopes:
		scopes, err := scopeList(v.name, raw)
		v.scopes = scopes
		return err
	}
	s, err := stringValue(v.name, k, raw)
	if err != nil || s == "" {
		return err
	}
	if IsSecretKey(k) {
		v.secrets[k] = true
		if !v.full {
			return nil
		}
	}
	if err := checkText(v.name, k, s); err != nil {
		return err
	}
	v.str[k] = s
	return nil
}

// takes lists the keys of kind, for messages.
func takes(kind Kind) string {
	return fmt.Sprintf("%s takes %s, and kind and generation", kind.entry(), strings.Join(kindSpecs[kind].keys, ", "))
}

// entry is "a password entry", "an oauth2 entry"...
func (k Kind) entry() string {
	if k == KindOAuth2 || k == KindSES {
		return "an " + string(k) + " entry"
	}
	return "a " + string(k) + " entry"
}

// stringValue returns raw if it is a string; nil is "".
func stringValue(entry, key string, raw any) (string, error) {
	if raw == nil {
		return "", nil
	}
	s, ok := raw.(string)
	if !ok {
		return "", invalid(entry, key, "%s must be a string", key)
	}
	return s, nil
}

// scopeList reads scopes: a list of strings, or one string of scopes
// separated by spaces (as OAuth2 writes them).
func scopeList(entry string, raw any) ([]string, error) {
	var scopes []string
	switch l := raw.(type) {
	case nil:
	case string:
		scopes = strings.Fields(l)
	case []string:
		scopes = l
	case []any:
		for _, x := range l {
			s, ok := x.(string)
			if !ok {
				return nil, invalid(entry, KeyScopes, "scopes must be a list of strings, or one string of scopes separated by spaces")
			}
			scopes = append(scopes, s)
		}
	default:
		return nil, invalid(entry, KeyScopes, "scopes must be a list of strings, or one string of scopes separated by spaces")
	}
	for i, s := range scopes {
		if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == '"' || r == '\\' || r >= 0x7f }) {
			return nil, invalid(entry, KeyScopes, "scope %d is not a scope token (printable ASCII without spaces, quotes or backslashes)", i+1)
		}
	}
	return slices.Clone(scopes), nil
}

// checkText refuses characters a key cannot hold: NUL anywhere, which
// SMTP AUTH cannot carry; other control characters outside PEM text.
func checkText(entry, key, s string) error {
	switch {
	case strings.ContainsRune(s, 0) && key == KeyPassword:
		return invalid(entry, key, "password contains a NUL character, which SMTP AUTH cannot carry")
	case strings.ContainsRune(s, 0):
		return invalid(entry, key, "%s contains a NUL character", key)
	case key == KeyPassword || key == KeyUsername || IsMultilineKey(key):
		return nil
	case strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return invalid(entry, key, "%s contains a control character (a line break?)", key)
	}
	return nil
}
