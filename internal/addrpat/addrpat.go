// Package addrpat matches mail addresses and domains against the patterns
// a config names: the senders and recipient domains of a [[route]], and
// the senders a local user may give to sendmail.
//
// Sender patterns:
//
//   - "<>" is the null sender, and only it;
//   - "@example.com" is any sender at example.com (Postfix's form);
//   - a pattern with "*" is a wildcard, "*" matching any run of characters
//     ("*@example.com", "*@*.example.com", "alerts-*@example.com");
//   - anything else is one address.
//
// Domain patterns: "example.com" is that domain; ".example.com" and
// "*.example.com" are its subdomains (not itself), as in Postfix's
// transport(5); "*" is every domain.
//
// Matching ignores case, and compares domains in their ASCII form
// (IDNA): "münchen.example" and "xn--mnchen-3ya.example" are one domain.
// No pattern but "<>" matches the null sender.
package addrpat

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/idna"
)

// maxPattern bounds a pattern's length: an address is at most 256 bytes.
const maxPattern = 512

// Sender is a compiled sender pattern.
type Sender struct {
	null bool   // "<>"
	glob string // normalized; exact when it holds no '*'
}

// ParseSender compiles a sender pattern.
func ParseSender(p string) (Sender, error) {
	if err := checkPattern(p); err != nil {
		return Sender{}, err
	}
	if p == "<>" {
		return Sender{null: true}, nil
	}
	full := p
	if strings.HasPrefix(p, "@") {
		full = "*" + p
	}
	local, domain, ok := strings.Cut(full, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") {
		return Sender{}, fmt.Errorf("%q is not an address, @domain, a wildcard such as *@example.com, or <>", p)
	}
	d, err := normalizeDomain(domain, true)
	if err != nil {
		return Sender{}, fmt.Errorf("%q: %w", p, err)
	}
	return Sender{glob: strings.ToLower(local) + "@" + d}, nil
}

// Match reports whether the envelope sender addr ("" for the null sender)
// matches.
func (s Sender) Match(addr string) bool {
	if addr == "" || s.null {
		return addr == "" && s.null
	}
	return glob(s.glob, NormalizeAddress(addr))
}

// String is the pattern as compiled.
func (s Sender) String() string {
	if s.null {
		return "<>"
	}
	return s.glob
}

// Domain is a compiled domain pattern.
type Domain struct {
	glob string
}

// ParseDomain compiles a recipient domain pattern.
func ParseDomain(p string) (Domain, error) {
	if err := checkPattern(p); err != nil {
		return Domain{}, err
	}
	if strings.Contains(p, "@") {
		return Domain{}, fmt.Errorf("%q is an address; give its domain", p)
	}
	if strings.Trim(p, ".") == "" {
		return Domain{}, fmt.Errorf("%q is not a domain", p)
	}
	full := p
	if strings.HasPrefix(p, ".") {
		full = "*" + p
	}
	d, err := normalizeDomain(full, true)
	if err != nil {
		return Domain{}, fmt.Errorf("%q: %w", p, err)
	}
	return Domain{glob: d}, nil
}

// Match reports whether domain matches.
func (d Domain) Match(domain string) bool {
	n, err := normalizeDomain(domain, false)
	if err != nil {
		n = strings.ToLower(domain)
	}
	return glob(d.glob, n)
}

// String is the pattern as compiled.
func (d Domain) String() string { return d.glob }

// DomainOf returns the domain of addr: what follows its last '@', or ""
// for the null sender or an address without one.
func DomainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return addr[i+1:]
}

// NormalizeAddress is addr in lower case with its domain in ASCII form,
// as patterns are compared.
func NormalizeAddress(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return strings.ToLower(addr)
	}
	d, err := normalizeDomain(addr[i+1:], false)
	if err != nil {
		d = strings.ToLower(addr[i+1:])
	}
	return strings.ToLower(addr[:i]) + "@" + d
}

func checkPattern(p string) error {
	switch {
	case p == "":
		return errors.New("empty pattern")
	case len(p) > maxPattern:
		return fmt.Errorf("pattern longer than %d bytes", maxPattern)
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f || r == ' ' || r == '\uFFFD' }):
		return fmt.Errorf("%q holds a space, a control character or invalid UTF-8", p)
	}
	return nil
}

// normalizeDomain lower-cases d and turns each label into its ASCII form.
// With wild, labels holding '*' are kept as they are.
func normalizeDomain(d string, wild bool) (string, error) {
	if strings.HasPrefix(d, "[") {
		return strings.ToLower(d), nil // an address literal
	}
	labels := strings.Split(strings.TrimSuffix(d, "."), ".")
	for i, l := range labels {
		if l == "" {
			return "", errors.New("empty label in domain")
		}
		if wild && strings.Contains(l, "*") {
			labels[i] = strings.ToLower(l)
			continue
		}
		a, err := idna.Lookup.ToASCII(l)
		if err != nil {
			// Not a valid IDNA label: compare it as it is, lower-cased.
			a = strings.ToLower(l)
		}
		labels[i] = a
	}
	return strings.Join(labels, "."), nil
}

// glob reports whether s matches pattern, where '*' matches any run of
// characters (the classic linear-time wildcard match).
func glob(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
