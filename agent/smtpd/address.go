package smtpd

import (
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
	"golang.org/x/net/idna"
)

// Address handling.
//
// go-smtp parses the path in MAIL FROM and RCPT TO. What reaches the
// session is already:
//   - stripped of a source route: "<@a,@b:user@c>" arrives as "user@c".
//     We accept and strip, as RFC 5321 section 4.1.1.3 and appendix C ask
//     ("SHOULD ignore the route"); the route is never relayed.
//   - unquoted: `"john doe"@example.com` arrives as `john doe@example.com`.
//     normalizeAddress quotes such a local part again, so that the address
//     the spool relays is the one the client meant.
//
// We check the rest: the address is printable ASCII (no NUL or other
// control characters), or, in a transaction whose MAIL FROM said
// SMTPUTF8 (RFC 6531), valid UTF-8 without control characters; it has
// exactly one '@', and the domain is a dot-separated host name (whose
// "xn--" labels must decode, and whose non-ASCII labels must be valid
// U-labels) or an address literal. A '%' in the local part ("user%host@relay") is not
// interpreted: the address is relayed as it is, and only clients from the
// allowed networks can send at all.

// maxPathLength is RFC 5321's limit on a forward or reverse path,
// including the angle brackets (section 4.5.3.1.3).
const maxPathLength = 256

// NormalizeAddress checks addr as parsed by go-smtp and returns it in the
// form to store: with its local part quoted if it needs quoting. rcpt
// selects the enhanced codes of RCPT TO (5.1.3) rather than MAIL FROM
// (5.1.7); utf8 allows a non-ASCII (UTF-8) address, as the SMTPUTF8
// parameter does. The returned error is an *smtp.SMTPError fit to send.
// The maildrop checks the addresses of sendmail with it too.
func NormalizeAddress(addr string, rcpt, utf8 bool) (string, *smtp.SMTPError) {
	bad := func(msg string) *smtp.SMTPError {
		code := smtp.EnhancedCode{5, 1, 7}
		if rcpt {
			code = smtp.EnhancedCode{5, 1, 3}
		}
		return &smtp.SMTPError{Code: 501, EnhancedCode: code, Message: msg}
	}
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if c >= 0x80 && !utf8 {
			return "", &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
				Message: "non-ASCII address requires the SMTPUTF8 parameter of MAIL FROM"}
		}
		if c < 0x20 || c == 0x7f {
			return "", bad("control character in address")
		}
	}
	if utf8 && !validUTF8(addr) {
		return "", bad("invalid UTF-8 or a control character in address")
	}
	local, domain, ok := strings.Cut(addr, "@")
	if !ok || local == "" || domain == "" {
		return "", bad("address must be local-part@domain")
	}
	if strings.Contains(domain, "@") {
		return "", bad("address has more than one @")
	}
	if !validDomain(domain) {
		return "", bad("invalid domain in address")
	}
	if !validALabels(domain) {
		return "", bad("invalid internationalized (xn--) label in address domain")
	}
	if !isDotString(local) {
		local = quoteLocalPart(local)
	}
	out := local + "@" + domain
	if len(out)+2 > maxPathLength {
		return "", bad("address too long")
	}
	return out, nil
}

// validUTF8 reports whether s is valid UTF-8 without C1 control
// characters (U+0080 to U+009F), which RFC 6531 leaves out of its
// UTF8-non-ascii along with the C0 ones checked before.
func validUTF8(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool { return r >= 0x80 && r <= 0x9f })
}

// isAtext reports whether c is an RFC 5322 atext character, or part of a
// UTF-8 sequence (RFC 6531 adds UTF8-non-ascii to atext; an address
// with one is accepted only under SMTPUTF8, and checked as UTF-8 then).
func isAtext(c byte) bool {
	if c >= 0x80 {
		return true
	}
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// isDotString reports whether s is an RFC 5321 Dot-string: atoms of atext
// separated by single dots.
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && !isAtext(s[i]) {
			return false
		}
	}
	return true
}

// quoteLocalPart returns s as an RFC 5321 Quoted-string.
func quoteLocalPart(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// validDomain accepts a host name (labels of letters, digits, '-' and '_',
// separated by dots) or an address literal ("[192.0.2.1]",
// "[IPv6:2001:db8::1]"), without judging whether it resolves.
func validDomain(d string) bool {
	if len(d) > 255 {
		return false
	}
	if strings.HasPrefix(d, "[") {
		if len(d) < 3 || d[len(d)-1] != ']' {
			return false
		}
		for i := 1; i < len(d)-1; i++ {
			c := d[i]
			if !(isLetterDigit(c) || c == '.' || c == ':') {
				return false
			}
		}
		return true
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		if !isASCII(label) {
			// A U-label (SMTPUTF8 only): it must be valid IDNA.
			if a, err := idna.Lookup.ToASCII(label); err != nil || len(a) > 63 {
				return false
			}
			continue
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(isLetterDigit(c) || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// validALabels reports whether every label of the host name d that starts
// with the ACE prefix "xn--" is an A-label: Punycode that decodes to a
// valid internationalized label (IDNA's lookup rules, UTS #46). "xn--",
// "xn---" and other labels that do not decode are refused now: the relay
// host would refuse them later, after we had acknowledged the message.
// Address literals have no labels.
func validALabels(d string) bool {
	if strings.HasPrefix(d, "[") {
		return true
	}
	for _, label := range strings.Split(d, ".") {
		if len(label) < 4 || !strings.EqualFold(label[:4], "xn--") {
			continue
		}
		u, err := idna.Lookup.ToUnicode(label)
		if err != nil || u == "" {
			return false
		}
	}
	return true
}

func isLetterDigit(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// validHelo reports whether name is acceptable as a HELO/EHLO argument. It
// goes into the Received header, so it must be a plain token: a host name
// or an address literal, at most 255 bytes. We do not check that it
// resolves or matches the client's address (local applications are often
// misconfigured, and the client IP is recorded next to it anyway).
func validHelo(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(isLetterDigit(c) || strings.IndexByte(".-_:[]", c) >= 0) {
			return false
		}
	}
	return true
}
