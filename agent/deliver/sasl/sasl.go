// Package sasl holds the SASL clients the delivery code needs beyond what
// github.com/emersion/go-sasl offers, each a go-sasl Client that go-smtp's
// Client.Auth runs: XOAUTH2 and OAUTHBEARER for OAuth2 bearer tokens,
// CRAM-MD5 (RFC 2195), and SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC
// 7677) on github.com/xdg-go/scram. It also holds the rule that picks a
// mechanism from the configured list and what a relay offers (Choose).
//
// What it promises:
//
//   - No secret (password, token, or any derived form) is ever part of an
//     error this package returns, nor of a value it prints. Text a server
//     sends (a bearer error challenge, a SCRAM error) is reduced to a short
//     printable string, and any part of it that repeats the secret is
//     redacted.
//   - A bearer token the relay refuses ends in the relay's final reply (a
//     535), not in an abort: the clients answer the error challenge as their
//     mechanism defines (an empty response for XOAUTH2, "\x01" for
//     OAUTHBEARER), and keep the challenge's JSON as a *BearerError
//     (Refusal), which a caller may log and count.
//   - A SCRAM client checks the server's signature: a mismatch fails AUTH,
//     and a server that answers 235 without ever proving it knows the
//     password is caught by Verify.
//
// The mechanism names are upper-case, as relays advertise them.
package sasl

import (
	"fmt"
	"strings"

	gosasl "github.com/emersion/go-sasl"
)

// Mechanism names.
const (
	Plain       = gosasl.Plain
	Login       = gosasl.Login
	CRAMMD5     = "CRAM-MD5"
	SCRAMSHA1   = "SCRAM-SHA-1"
	SCRAMSHA256 = "SCRAM-SHA-256"
	XOAuth2     = "XOAUTH2"
	OAuthBearer = gosasl.OAuthBearer
	External    = gosasl.External
)

// Verifier is implemented by clients that can tell, after go-smtp's
// Client.Auth returned nil, whether the server proved itself (SCRAM).
type Verifier interface {
	// Verify returns nil if the server's final message was received and
	// checked, or an error saying why not.
	Verify() error
}

// Verify calls c's Verify if it has one (SCRAM), else returns nil. Call it
// after a successful Client.Auth: go-smtp does not hand a 235's text to
// the client, so a server that skips its final message is only caught
// here.
func Verify(c gosasl.Client) error {
	if v, ok := c.(Verifier); ok {
		return v.Verify()
	}
	return nil
}

// NewPasswordClient returns the client for a password mechanism: PLAIN,
// LOGIN (go-sasl's), CRAM-MD5, SCRAM-SHA-1 or SCRAM-SHA-256.
func NewPasswordClient(mech, username, password string) (gosasl.Client, error) {
	switch strings.ToUpper(mech) {
	case Plain:
		return gosasl.NewPlainClient("", username, password), nil
	case Login:
		return gosasl.NewLoginClient(username, password), nil
	case CRAMMD5:
		return NewCRAMMD5Client(username, password), nil
	case SCRAMSHA1, SCRAMSHA256:
		return NewSCRAMClient(mech, username, password)
	}
	return nil, &UnknownMechanismError{Mechanism: mech, For: "a password"}
}

// UnknownMechanismError is returned for a mechanism name a constructor
// does not handle.
type UnknownMechanismError struct {
	Mechanism string
	// For says what kind of secret was offered ("a password").
	For string
}

func (e *UnknownMechanismError) Error() string {
	return "sasl: mechanism " + printable(e.Mechanism, 40) + " cannot be used with " + e.For
}

// printable reduces text from outside (a server's challenge) to at most
// max bytes of printable ASCII and quotes it.
func printable(s string, max int) string {
	cut := len(s) > max
	out := `"` + strings.ReplaceAll(clean(s, max), `"`, `\"`) + `"`
	if cut {
		out += "..."
	}
	return out
}

// clean cuts s to max bytes and shows bytes outside printable ASCII as
// '?'.
func clean(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

// redact returns field, or "[redacted]" when it shares 8 bytes in a row
// with secret (or all of a shorter secret), so that a server echoing what
// the client sent cannot put the secret, or a piece of it, into an error.
func redact(field, secret string) string {
	if secret == "" || field == "" {
		return field
	}
	const run = 8
	if len(secret) <= run {
		if strings.Contains(field, secret) {
			return "[redacted]"
		}
		return field
	}
	for i := 0; i+run <= len(secret); i++ {
		if strings.Contains(field, secret[i:i+run]) {
			return "[redacted]"
		}
	}
	return field
}

// formatMech prints a client as its mechanism name only, whatever the
// verb, so a client in a log line or error shows no secret.
func formatMech(f fmt.State, verb rune, mech string) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", "sasl client "+mech)
		return
	}
	fmt.Fprint(f, "sasl client "+mech)
}

// Format shows only the mechanism.
func (b *bearer) Format(f fmt.State, verb rune) { formatMech(f, verb, b.mech) }

// Format shows only the mechanism.
func (a *cramMD5) Format(f fmt.State, verb rune) { formatMech(f, verb, CRAMMD5) }

// Format shows only the mechanism.
func (a *SCRAMClient) Format(f fmt.State, verb rune) { formatMech(f, verb, a.mech) }
