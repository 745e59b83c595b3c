// Package secrets holds relay credentials in memory: the Credential type,
// whose password cannot be printed by accident, the Source interface that
// credential backends implement (with the optional VersionSource,
// WatchSource and Starter), and the Store that starts its source, caches
// the current credentials, swaps them atomically and refreshes them on
// change (docs/credentials.md).
//
// Nothing in this package writes a password anywhere: not to a log, an error,
// a file or a formatted string.
package secrets

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
)

// Redacted is what every printed form of a Credential shows instead of the
// password.
const Redacted = "[redacted]"

// Credential is a relay account name and its password, plus the version of
// the source entry it came from.
//
// The password is reachable only through Password. String, GoString, every
// fmt verb, slog and encoding/json show it as [Redacted].
type Credential struct {
	// Name is the entry name in the credential source ("primary").
	Name string
	// Username is the relay account name. It is not secret.
	Username string
	// Version identifies the source entry's version: a Vault KV version
	// number, or a digest of the sealed file. It is not derived from the
	// password.
	Version string

	// password is behind a pointer so that fmt, printing a struct that
	// holds a Credential in an unexported field (where it cannot call
	// Format), shows an address rather than the password.
	password *string
}

// NewCredential returns a Credential holding password.
func NewCredential(name, username, password, version string) Credential {
	return Credential{Name: name, Username: username, Version: version, password: &password}
}

// Password returns the password. Call it only where the password is handed
// to the SASL client, never to build a message.
func (c Credential) Password() string {
	if c.password == nil {
		return ""
	}
	return *c.password
}

// IsZero reports whether c holds no account.
func (c Credential) IsZero() bool { return c.Username == "" && c.Password() == "" }

// HasPassword reports whether c holds a non-empty password.
func (c Credential) HasPassword() bool { return c.Password() != "" }

// SameSecret reports whether c and o hold the same username and password. The
// password comparison takes constant time.
func (c Credential) SameSecret(o Credential) bool {
	return c.Username == o.Username &&
		subtle.ConstantTimeCompare([]byte(c.Password()), []byte(o.Password())) == 1
}

// String shows the name, username and version, with the password redacted.
func (c Credential) String() string {
	return fmt.Sprintf("Credential{Name:%q Username:%q Password:%s Version:%q}",
		c.Name, c.Username, c.redacted(), c.Version)
}

// GoString is the same as String, so %#v does not reveal the password.
func (c Credential) GoString() string { return c.String() }

// Format makes every fmt verb print String, so no verb (%v, %+v, %#v, %s,
// %q, %x...) can reach the password field by reflection.
func (c Credential) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", c.String())
	default:
		fmt.Fprint(f, c.String())
	}
}

// LogValue makes slog print the credential as a group with the password
// redacted.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", c.Name),
		slog.String("username", c.Username),
		slog.String("password", c.redacted()),
		slog.String("version", c.Version),
	)
}

// MarshalJSON shows the password as [Redacted].
func (c Credential) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name     string `json:"name"`
		Username string `json:"username"`
		Password string `json:"password"`
		Version  string `json:"version,omitempty"`
	}{c.Name, c.Username, c.redacted(), c.Version})
}

// MarshalText shows the same as String, for encoders that use
// encoding.TextMarshaler.
func (c Credential) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

func (c Credential) redacted() string {
	if c.Password() == "" {
		return "[empty]"
	}
	return Redacted
}
