package keys

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"filippo.io/age"
	"filippo.io/age/plugin"
)

// maxRecipientFile caps how much of a recipient list is read.
const maxRecipientFile = 1 << 20

// Kind is the family of an age recipient. age cannot encrypt one file to
// recipients of different kinds.
type Kind int

// The kinds of recipient a list may hold.
const (
	Classic     Kind = iota // X25519: age1...
	PostQuantum             // hybrid ML-KEM-768 + X25519: age1pq1...
	Plugin                  // age1<plugin>1...: the plugin decides
)

func (k Kind) String() string {
	switch k {
	case PostQuantum:
		return "post-quantum (age1pq1...)"
	case Plugin:
		return "plugin"
	default:
		return "classic X25519 (age1...)"
	}
}

// RecipientEntry is one line of a recipient list.
type RecipientEntry struct {
	Line      int    // 1-based line number
	Name      string // the comment just above the key, e.g. "relay1.example.com"
	PublicKey string // age1...
	Kind      Kind
	Recipient age.Recipient
}

// RecipientList is the "encryption list": the servers a credential file is
// sealed to, one age recipient per line, with # comments naming them.
type RecipientList struct {
	File    string
	Entries []RecipientEntry
}

// Recipients returns the age recipients, for age.Encrypt.
func (l *RecipientList) Recipients() []age.Recipient {
	rs := make([]age.Recipient, len(l.Entries))
	for i, e := range l.Entries {
		rs[i] = e.Recipient
	}
	return rs
}

// Contains reports whether publicKey is on the list.
func (l *RecipientList) Contains(publicKey string) bool {
	for _, e := range l.Entries {
		if e.PublicKey == publicKey {
			return true
		}
	}
	return false
}

// Describe names the recipients for a message: "3 recipients (relay1,
// relay2, relay3)", each by its comment, or its key where a line has none.
func (l *RecipientList) Describe() string {
	names := make([]string, len(l.Entries))
	for i, e := range l.Entries {
		names[i] = e.Name
		if names[i] == "" {
			names[i] = e.PublicKey
		}
	}
	n := "recipients"
	if len(names) == 1 {
		n = "recipient"
	}
	return fmt.Sprintf("%d %s (%s)", len(names), n, strings.Join(names, ", "))
}

// LoadRecipients reads a recipient list file. Whoever can write the list
// decides who can read what is sealed to it, so a list, or a directory
// above it, that a user other than this one and root can write is refused
// (OpenSecret with NotWritable).
func LoadRecipients(path string) (*RecipientList, error) {
	f, err := OpenSecret(path, "recipient list", NotWritable)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseRecipients(f, path)
}

// ParseRecipients reads a recipient list from r; name is used in errors,
// which give the line number and never quote the line (it might be a secret
// key pasted by mistake).
func ParseRecipients(r io.Reader, name string) (*RecipientList, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxRecipientFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading recipient list %s: %w", name, err)
	}
	if len(data) > maxRecipientFile {
		return nil, fmt.Errorf("recipient list %s is larger than %d bytes", name, maxRecipientFile)
	}
	l := &RecipientList{File: name}
	seen := map[string]int{}
	comment := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxRecipientFile)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if !utf8.ValidString(line) {
			return nil, fmt.Errorf("%s:%d: line is not valid UTF-8", name, n)
		}
		if line == "" {
			comment = ""
			continue
		}
		if c, ok := strings.CutPrefix(line, "#"); ok {
			comment = strings.TrimSpace(c)
			continue
		}
		e := RecipientEntry{Line: n, Name: comment, PublicKey: line}
		comment = ""
		// age's parse errors quote the line; ours give only its number.
		switch {
		case strings.HasPrefix(line, "AGE-SECRET-KEY-"), strings.HasPrefix(line, "AGE-PLUGIN-"):
			return nil, fmt.Errorf("%s:%d: this line is a secret key, not a public one; remove it from the list (and treat that key as exposed)", name, n)
		case strings.HasPrefix(line, "age1pq1"):
			rc, err := age.ParseHybridRecipient(line)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: malformed post-quantum recipient (bad length or checksum)", name, n)
			}
			e.Kind, e.Recipient = PostQuantum, rc
		case isPluginRecipient(line):
			rc, err := plugin.NewRecipient(line, pluginUI)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: malformed plugin recipient", name, n)
			}
			e.Kind, e.Recipient = Plugin, rc
		case strings.HasPrefix(line, "age1"):
			rc, err := age.ParseX25519Recipient(line)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: malformed recipient (bad length or checksum)", name, n)
			}
			e.Kind, e.Recipient = Classic, rc
		default:
			return nil, fmt.Errorf("%s:%d: not an age recipient (a recipient starts with age1; ssh keys are not accepted)", name, n)
		}
		if prev, dup := seen[line]; dup {
			return nil, fmt.Errorf("%s:%d: the same recipient as line %d", name, n, prev)
		}
		seen[line] = n
		if len(l.Entries) > 0 {
			if first := l.Entries[0]; mixes(first.Kind, e.Kind) {
				return nil, fmt.Errorf("%s:%d: a %s recipient, but line %d is %s: age will not encrypt one file to both, "+
					"because the classic key would leave the file open to a future quantum computer; give every server the same kind of key",
					name, n, e.Kind, first.Line, first.Kind)
			}
		}
		l.Entries = append(l.Entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading recipient list %s: %w", name, err)
	}
	if len(l.Entries) == 0 {
		return nil, fmt.Errorf("recipient list %s holds no recipients", name)
	}
	return l, nil
}

// mixes reports whether a and b cannot share one file. Plugin recipients
// declare their own labels and age checks them when encrypting.
func mixes(a, b Kind) bool {
	return (a == Classic && b == PostQuantum) || (a == PostQuantum && b == Classic)
}

// isPluginRecipient reports whether s is age1<name>1..., the Bech32 form of a
// plugin recipient.
func isPluginRecipient(s string) bool {
	name, _, err := plugin.ParseRecipient(s)
	return err == nil && name != ""
}
