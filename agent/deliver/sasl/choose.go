package sasl

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Kind is the kind of secret a credential hands to AUTH. Each mechanism
// takes exactly one kind.
type Kind int

const (
	// KindPassword is a password (also one derived in memory, as for
	// Amazon SES): PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256.
	KindPassword Kind = iota + 1
	// KindOAuth2 is an OAuth2 access token: XOAUTH2, OAUTHBEARER.
	KindOAuth2
	// KindCertificate is the TLS client certificate of the connection:
	// EXTERNAL.
	KindCertificate
)

func (k Kind) String() string {
	switch k {
	case KindPassword:
		return "password"
	case KindOAuth2:
		return "oauth2"
	case KindCertificate:
		return "certificate"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// mechanisms maps each mechanism this package can run to its kind and
// strength; strengths are compared within a kind only.
var mechanisms = map[string]struct {
	kind     Kind
	strength int
}{
	SCRAMSHA256: {KindPassword, 4},
	SCRAMSHA1:   {KindPassword, 3},
	CRAMMD5:     {KindPassword, 2},
	Plain:       {KindPassword, 1},
	Login:       {KindPassword, 1},
	XOAuth2:     {KindOAuth2, 1},
	OAuthBearer: {KindOAuth2, 1},
	External:    {KindCertificate, 1},
}

// Known reports whether mech (any case) is a mechanism Choose can pick,
// and the kind of credential it takes.
func Known(mech string) (Kind, bool) {
	m, ok := mechanisms[strings.ToUpper(mech)]
	return m.kind, ok
}

// Strength ranks mech among the mechanisms of its kind: SCRAM-SHA-256 (4)
// > SCRAM-SHA-1 (3) > CRAM-MD5 (2) > PLAIN = LOGIN (1, sent over TLS
// only); XOAUTH2 = OAUTHBEARER (1); EXTERNAL (1). It is 0 for a name this
// package does not know.
func Strength(mech string) int { return mechanisms[strings.ToUpper(mech)].strength }

// Choose picks the mechanism for AUTH with a credential of kind, from the
// configured preference list and the mechanisms the relay offers (its EHLO
// AUTH line). The rule:
//
//   - Candidates are the configured mechanisms that take kind and that the
//     relay offers. Mechanisms of another kind are skipped (XOAUTH2 and
//     OAUTHBEARER are for oauth2 credentials only, EXTERNAL for a client
//     certificate), and so are names this package does not know.
//   - Never a weaker mechanism while a stronger candidate exists: the
//     strongest candidates win, by Strength.
//   - Among equally strong candidates (PLAIN and LOGIN; XOAUTH2 and
//     OAUTHBEARER), the configured order wins.
//
// So ["PLAIN", "SCRAM-SHA-256"] picks SCRAM-SHA-256 where both are offered
// and PLAIN where only PLAIN is; a mechanism the configuration does not
// list is never picked. Names compare without regard to case; the result
// is upper-case. With no candidate, the error is a *NoMechanismError.
func Choose(kind Kind, configured, offered []string) (string, error) {
	best, bestStrength := "", 0
	for _, c := range configured {
		c = strings.ToUpper(c)
		m, ok := mechanisms[c]
		if !ok || m.kind != kind || !containsFold(offered, c) {
			continue
		}
		if m.strength > bestStrength {
			best, bestStrength = c, m.strength
		}
	}
	if best == "" {
		return "", &NoMechanismError{Kind: kind, Configured: configured, Offered: offered}
	}
	return best, nil
}

// CheckConfigured refuses a preference list that Choose could never pick
// from for kind: an unknown name, or none for kind.
func CheckConfigured(kind Kind, configured []string) error {
	usable := false
	for _, c := range configured {
		m, ok := mechanisms[strings.ToUpper(c)]
		if !ok {
			return fmt.Errorf("sasl: mechanism %s is not supported (supported: %s)", printable(c, 40), strings.Join(slices.Sorted(maps.Keys(mechanisms)), ", "))
		}
		usable = usable || m.kind == kind
	}
	if !usable {
		return fmt.Errorf("sasl: none of the mechanisms %s takes a credential of kind %s (%s)", strings.Join(configured, ", "), kind, strings.Join(ofKind(kind), ", "))
	}
	return nil
}

// NoMechanismError says that Choose found no mechanism to use.
type NoMechanismError struct {
	Kind       Kind
	Configured []string
	// Offered is what the relay's EHLO offered (its text, not ours).
	Offered []string
}

func (e *NoMechanismError) Error() string {
	offered := make([]string, len(e.Offered))
	for i, o := range e.Offered {
		offered[i] = clean(o, 30)
		if len(o) > 30 {
			offered[i] += "..."
		}
	}
	var usable []string
	for _, c := range e.Configured {
		if k, ok := Known(c); ok && k == e.Kind {
			usable = append(usable, strings.ToUpper(c))
		}
	}
	if len(usable) == 0 {
		return fmt.Sprintf("no mechanism in common: none of the configured mechanisms (%s) takes a credential of kind %s (%s do); the relay offers %s",
			strings.Join(e.Configured, ", "), e.Kind, strings.Join(ofKind(e.Kind), ", "), strings.Join(offered, " "))
	}
	return fmt.Sprintf("no mechanism in common: the relay offers %s; configured for a %s credential: %s",
		strings.Join(offered, " "), e.Kind, strings.Join(usable, ", "))
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}

// ofKind lists the mechanisms of kind, strongest first.
func ofKind(kind Kind) []string {
	var out []string
	for m, v := range mechanisms {
		if v.kind == kind {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		if d := mechanisms[b].strength - mechanisms[a].strength; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return out
}
