// Package secrets holds relay credentials in memory: the Credential type,
// whose secrets cannot be printed by accident, the schema every credential
// source shares (the kinds of entry, their keys and rules), the Source
// interface that credential backends implement (with the optional
// VersionSource, WatchSource and Starter), and the Store that starts its
// source, caches the current credentials, swaps them atomically and
// refreshes them on change (docs/credentials.md).
//
// Nothing in this package writes a secret anywhere: not to a log, an
// error, a file or a formatted string.
package secrets

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
)

// Redacted is what every printed form of a Credential shows instead of a
// secret.
const Redacted = "[redacted]"

// empty is what a printed form shows for a password that is empty.
const empty = "[empty]"

// Credential is one entry of a credential source: its name, its kind, the
// relay account name, the entry's non-secret settings and its secrets,
// plus the version of the source entry and the entry's generation.
//
// The secrets are reachable only through their accessors (Password,
// ClientSecret, PrivateKey, RefreshToken, SecretAccessKey) and the
// helpers that use them (OAuth2, Certificate, SESPassword). String,
// GoString, every fmt verb, slog, encoding/json and encoding.TextMarshaler
// show the kind and the non-secret fields, and [Redacted] for each
// secret.
//
// A Credential is made by ParseEntry (every source does), or by
// NewCredential for a password. The zero value is an empty password
// entry.
type Credential struct {
	// Name is the entry name in the credential source ("primary").
	Name string
	// Username is the relay account name: the username key, or an ses
	// entry's access_key_id; a certificate entry has none. It is not
	// secret.
	Username string
	// Version identifies the source entry's version: a Vault KV version
	// number, or a digest of the sealed file. It is not derived from a
	// secret.
	Version string
	// Generation is the entry's generation id: random, written anew by
	// every `creds set`, never derived from a secret. Entries written
	// before generations existed have none ("").
	Generation string

	kind     Kind
	settings *settings
	// secret is two pointers away so that fmt, printing a struct that
	// holds a Credential in an unexported field (where it cannot call
	// Format), shows an address rather than a secret: with some verbs
	// (%s, %q) fmt follows one pointer to a struct, never two.
	secret **secretValues
}

// settings are an entry's non-secret keys other than kind, username and
// generation.
type settings struct {
	values     map[string]string // scopes are in scopes
	scopes     []string
	cert       *CertificateInfo // of the certificate key, if set
	secretKeys []string         // the secret keys the entry sets
}

// secretValues are an entry's secrets and what is made of them in memory.
type secretValues struct {
	values  map[string]string // the secret keys the entry sets
	derived string            // an ses entry's SMTP password
	tlsCert *tls.Certificate  // a certificate entry's chain and key
}

// NewCredential returns a password Credential.
func NewCredential(name, username, password, version string) Credential {
	return Credential{Name: name, Username: username, Version: version, kind: KindPassword,
		secret: boxed(&secretValues{values: map[string]string{KeyPassword: password}})}
}

func boxed(s *secretValues) **secretValues { return &s }

// secrets returns c's secrets, or nil.
func (c Credential) secrets() *secretValues {
	if c.secret == nil {
		return nil
	}
	return *c.secret
}

// NewGeneration returns a new generation id: 26 random characters of
// A-Z 2-7 (128 bits), unrelated to any secret.
func NewGeneration() string { return rand.Text() }

// Kind returns the entry's kind; a Credential made without one is a
// password.
func (c Credential) Kind() Kind {
	if c.kind == "" {
		return KindPassword
	}
	return c.kind
}

func (c Credential) secretValue(key string) string {
	if c.secrets() == nil {
		return ""
	}
	return c.secrets().values[key]
}

// Password returns the password to speak with a password mechanism
// (PLAIN, LOGIN, CRAM-MD5, SCRAM): a password entry's password, or the
// SMTP password an ses entry derives (see SESPassword); "" for other
// kinds. Call it only where it is handed to the SASL client, never to
// build a message.
func (c Credential) Password() string {
	switch c.Kind() {
	case KindPassword:
		return c.secretValue(KeyPassword)
	case KindSES:
		if c.secrets() != nil {
			return c.secrets().derived
		}
	}
	return ""
}

// ClientSecret returns an oauth2 entry's client secret, or "".
func (c Credential) ClientSecret() string { return c.secretValue(KeyClientSecret) }

// RefreshToken returns an oauth2 entry's refresh token, or "".
func (c Credential) RefreshToken() string { return c.secretValue(KeyRefreshToken) }

// PrivateKey returns the PEM private key of a certificate entry or of an
// oauth2 entry (private_key_jwt), or "".
func (c Credential) PrivateKey() string { return c.secretValue(KeyPrivateKey) }

// SecretAccessKey returns an ses entry's IAM secret access key, or "".
func (c Credential) SecretAccessKey() string { return c.secretValue(KeySecretAccessKey) }

// IsZero reports whether c holds no account: no username and no secret.
func (c Credential) IsZero() bool {
	return c.Username == "" && (c.secrets() == nil || !slices.ContainsFunc(slices.Collect(maps.Values(c.secrets().values)),
		func(s string) bool { return s != "" }))
}

// HasPassword reports whether Password is not empty.
func (c Credential) HasPassword() bool { return c.Password() != "" }

// SameSecret reports whether c and o authenticate alike: the same kind,
// username, non-secret settings and secrets. Secrets are compared in
// constant time. Name, Version and Generation are not compared.
func (c Credential) SameSecret(o Credential) bool {
	if c.Kind() != o.Kind() || c.Username != o.Username || !slices.Equal(c.Scopes(), o.Scopes()) ||
		!maps.Equal(c.settingValues(), o.settingValues()) {
		return false
	}
	same := 1
	for _, s := range keySpecs {
		if s.secret {
			same &= subtle.ConstantTimeCompare([]byte(c.secretValue(s.name)), []byte(o.secretValue(s.name)))
		}
	}
	return same == 1
}

func (c Credential) settingValues() map[string]string {
	if c.settings == nil {
		return nil
	}
	return c.settings.values
}

// Field is one key of an entry and its value. Scopes are one value,
// separated by spaces.
type Field struct {
	Key    string
	Value  string
	Secret bool
}

// Field returns the value of a non-secret key (KeyProvider, KeyRegion,
// KeyCertificate...); "" for a secret key or one that is not set.
func (c Credential) Field(key string) string {
	for _, f := range c.fields(false) {
		if f.Key == key && !f.Secret {
			return f.Value
		}
	}
	return ""
}

// Scopes returns an oauth2 entry's scopes as stored (nil: the provider's
// default).
func (c Credential) Scopes() []string {
	if c.settings == nil {
		return nil
	}
	return slices.Clone(c.settings.scopes)
}

// SecretKeys returns the names (never the values) of the secret keys the
// entry sets, in schema order: which form of a kind it is. It is known
// for a Credential from ParsePublic too.
func (c Credential) SecretKeys() []string {
	if c.settings != nil {
		return slices.Clone(c.settings.secretKeys)
	}
	var out []string
	for _, f := range c.fields(false) {
		if f.Secret && f.Value != empty {
			out = append(out, f.Key)
		}
	}
	return out
}

// Fields returns the keys c sets that are not secret, in the order
// entries are written: kind (unless password), username or
// access_key_id, the settings, generation.
func (c Credential) Fields() []Field {
	return slices.DeleteFunc(c.fields(false), func(f Field) bool { return f.Secret })
}

// RevealEntry returns every key c sets with its value, secrets in clear,
// in the order entries are written. It is for the writers that seal an
// entry (agefile.Marshal, the Vault source's Put), and nothing else.
func (c Credential) RevealEntry() []Field { return c.fields(true) }

// fields lists the keys c sets. Secret keys are listed, with their value
// when reveal is set and as [Redacted] (or [empty]) otherwise.
func (c Credential) fields(reveal bool) []Field {
	kind := c.Kind()
	var out []Field
	for _, s := range keySpecs {
		f := Field{Key: s.name, Secret: s.secret}
		switch {
		case s.name == KeyKind:
			if kind == KindPassword {
				continue
			}
			f.Value = string(kind)
		case s.name == KeyUsername:
			if !kind.Takes(KeyUsername) || (c.Username == "" && kind != KindPassword) {
				continue
			}
			f.Value = c.Username
		case s.name == KeyGeneration:
			f.Value = c.Generation
		case s.name == KeyScopes:
			f.Value = strings.Join(c.Scopes(), " ")
		case s.secret:
			v, ok := "", false
			if c.secrets() != nil {
				v, ok = c.secrets().values[s.name]
			} else if c.settings != nil && slices.Contains(c.settings.secretKeys, s.name) {
				// From ParsePublic: set in the source, not held here.
				v, ok = Redacted, !reveal
			}
			if !ok && !(s.name == KeyPassword && kind == KindPassword) {
				continue
			}
			switch {
			case reveal:
				f.Value = v
			case v == "":
				f.Value = empty
			default:
				f.Value = Redacted
			}
			out = append(out, f)
			continue
		default:
			f.Value = c.settingValues()[s.name]
		}
		if f.Value != "" || s.name == KeyUsername {
			out = append(out, f)
		}
	}
	return out
}

// Check reports whether c is an entry that ParseEntry accepts, as
// writers check before they seal it.
func (c Credential) Check() error {
	data := map[string]any{}
	for _, f := range c.RevealEntry() {
		if f.Key == KeyScopes {
			data[f.Key] = strings.Fields(f.Value)
		} else {
			data[f.Key] = f.Value
		}
	}
	_, err := ParseEntry(c.Name, data)
	return err
}

// printed lists what the printed forms show: title or key, and value
// (quoted unless it is a placeholder), after Name, Kind and Username and
// before Version and Generation.
func (c Credential) printed(f func(title, key, value string, quote bool)) {
	for _, fl := range c.fields(false) {
		s, _ := spec(fl.Key)
		switch {
		case fl.Key == KeyKind || fl.Key == KeyUsername || fl.Key == KeyGeneration:
		case fl.Secret:
			f(s.title, fl.Key, fl.Value, false)
		case fl.Key == KeyCertificate && c.settings != nil && c.settings.cert != nil:
			f(s.title, fl.Key, c.settings.cert.String(), true)
		default:
			f(s.title, fl.Key, fl.Value, true)
		}
	}
}

// String shows the name, kind, username, non-secret settings, version and
// generation, with every secret as [Redacted] (or [empty]).
func (c Credential) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Credential{Name:%q Kind:%s Username:%q", c.Name, c.Kind(), c.Username)
	c.printed(func(title, _, value string, quote bool) {
		if quote {
			fmt.Fprintf(&b, " %s:%q", title, value)
		} else {
			fmt.Fprintf(&b, " %s:%s", title, value)
		}
	})
	fmt.Fprintf(&b, " Version:%q Generation:%q}", c.Version, c.Generation)
	return b.String()
}

// GoString is the same as String, so %#v does not reveal a secret.
func (c Credential) GoString() string { return c.String() }

// Format makes every fmt verb print String, so no verb (%v, %+v, %#v, %s,
// %q, %x...) can reach a secret field by reflection.
func (c Credential) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", c.String())
	default:
		fmt.Fprint(f, c.String())
	}
}

// LogValue makes slog print the credential as a group with its secrets
// redacted.
func (c Credential) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("name", c.Name), slog.String("kind", string(c.Kind())), slog.String("username", c.Username)}
	c.printed(func(_, key, value string, _ bool) { attrs = append(attrs, slog.String(key, value)) })
	attrs = append(attrs, slog.String("version", c.Version), slog.String("generation", c.Generation))
	return slog.GroupValue(attrs...)
}

// MarshalJSON shows what LogValue shows, in the same order; version and
// generation only when set.
func (c Credential) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	add := func(key, value string) {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(key)
		v, _ := json.Marshal(value)
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	add("name", c.Name)
	add("kind", string(c.Kind()))
	add("username", c.Username)
	c.printed(func(_, key, value string, _ bool) { add(key, value) })
	if c.Version != "" {
		add("version", c.Version)
	}
	if c.Generation != "" {
		add("generation", c.Generation)
	}
	return append(append([]byte{'{'}, b.Bytes()...), '}'), nil
}

// MarshalText shows the same as String, for encoders that use
// encoding.TextMarshaler.
func (c Credential) MarshalText() ([]byte, error) { return []byte(c.String()), nil }
