package oauth

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
)

// Redacted is what every printed form of a Secret (and of a Config's
// secret fields) shows instead of the value.
const Redacted = "[redacted]"

// Secret is a client secret, a private key, a refresh token or an access
// token. Its value is reachable only through Reveal; String, GoString,
// every fmt verb, slog, encoding/json and encoding.TextMarshaler show
// [Redacted] (or [empty]). The value sits behind a pointer, so even fmt
// printing a struct that holds a Secret in an unexported field (where it
// cannot call Format) shows an address, not the value.
type Secret struct{ p *string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{p: &s} }

// Reveal returns the value. Call it only where the value is handed to
// the token endpoint or the SASL client, never to build a message.
func (s Secret) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// IsZero reports whether s is empty.
func (s Secret) IsZero() bool { return s.Reveal() == "" }

// Equal compares two secrets in constant time (for equal lengths).
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s.Reveal()), []byte(o.Reveal())) == 1
}

// String shows [Redacted], or [empty] for an empty secret.
func (s Secret) String() string {
	if s.IsZero() {
		return "[empty]"
	}
	return Redacted
}

// GoString is String, so %#v does not reveal the value.
func (s Secret) GoString() string { return s.String() }

// Format makes every fmt verb print String.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.String())
		return
	}
	fmt.Fprint(f, s.String())
}

// LogValue makes slog print String.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON shows String.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText shows String.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
