// Package agefile reads and writes the credential file: an ASCII-armored age
// file, sealed to every server on the recipient list, whose plaintext is TOML
// with one table per entry:
//
//	[primary]
//	username = "relay-account@example.com"
//	password = "..."
//	generation = "..."
//
// An entry of another kind says so with kind = "oauth2", "certificate" or
// "ses" and holds that kind's keys; the schema is secrets', the one the
// Vault source uses too (docs/credentials.md).
//
// It promises that the plaintext never touches the disk (Write seals in
// memory and writes only ciphertext, atomically), that a truncated or altered
// file yields an error and no credentials, and that no error quotes the
// plaintext: TOML syntax errors are reported by line number only, because the
// parser's own message can quote a password.
//
// Source adapts a file to secrets.Source and secrets.WatchSource, so a
// secrets.Store can hold its entries and reload them when the file changes.
package agefile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/sealrelay/sealrelay/internal/safeio"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
)

var validName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ValidName reports whether name may name an entry: one or more of
// A-Z a-z 0-9 . _ -
func ValidName(name string) bool { return validName.MatchString(name) }

// Parse reads the TOML plaintext of a credential file; fileName is used in
// errors. It returns the entries sorted by name, with no Version set.
//
// Each entry is checked against the schema of its kind
// (secrets.ParseEntry): unknown keys, keys of another kind, missing or
// empty required keys and values that break a kind's rules are errors
// naming the file, the entry and the key. So are an entry defined twice
// and top-level values that are not entry tables. Syntax errors give the
// line and a generic reason: the TOML parser's message is never passed
// on, because it can quote the input.
func Parse(plaintext []byte, fileName string) ([]secrets.Credential, error) {
	var doc map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(plaintext)).Decode(&doc); err != nil {
		return nil, syntaxError(err, fileName)
	}
	names := make([]string, 0, len(doc))
	for name := range doc {
		names = append(names, name)
	}
	slices.Sort(names)
	creds := make([]secrets.Credential, 0, len(names))
	for _, name := range names {
		table, ok := doc[name].(map[string]any)
		if !ok {
			if !ValidName(name) {
				return nil, fmt.Errorf("%s: a top-level value is not an entry table; each entry is a [NAME] table with username and password", fileName)
			}
			return nil, fmt.Errorf("%s: top-level key %q is not an entry table; each entry is a [NAME] table with username and password", fileName, name)
		}
		if !ValidName(name) {
			return nil, fmt.Errorf("%s: an entry name has characters other than A-Z a-z 0-9 . _ -", fileName)
		}
		c, err := secrets.ParseEntry(name, table)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fileName, err)
		}
		creds = append(creds, c)
	}
	return creds, nil
}

var alreadyDefined = regexp.MustCompile(`^Key '([^']*)' has already been defined`)

// syntaxError turns a TOML decoding error into one that gives the line and a
// generic reason, naming an entry or key only where it is a valid name.
func syntaxError(err error, fileName string) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return fmt.Errorf("%s: the credential TOML could not be decoded (details withheld: they could quote a password)", fileName)
	}
	line := pe.Position.Line
	if m := alreadyDefined.FindStringSubmatch(pe.Message); m != nil {
		entry, key, nested := strings.Cut(m[1], ".")
		switch {
		case !nested && ValidName(entry):
			return fmt.Errorf("%s: line %d: entry %q is defined twice", fileName, line, entry)
		case ValidName(entry) && secrets.KnownKey(key):
			return fmt.Errorf("%s: line %d: entry %q sets %s twice", fileName, line, entry, key)
		default:
			return fmt.Errorf("%s: line %d: a key is defined twice", fileName, line)
		}
	}
	return fmt.Errorf("%s: line %d: invalid TOML syntax (details withheld: they could quote a password)", fileName, line)
}

// Marshal writes creds as the TOML plaintext of a credential file, sorted by
// name, as `age -d` will show it: one table per entry, its keys in the
// schema's order, PEM values on several lines. It refuses what Parse would
// refuse. The caller should clear the result after sealing it.
func Marshal(creds []secrets.Credential) ([]byte, error) {
	sorted := slices.Clone(creds)
	slices.SortStableFunc(sorted, func(a, b secrets.Credential) int { return strings.Compare(a.Name, b.Name) })
	var b bytes.Buffer
	for i, c := range sorted {
		if !ValidName(c.Name) {
			return nil, errors.New("an entry name is empty or has characters other than A-Z a-z 0-9 . _ -")
		}
		if i > 0 && sorted[i-1].Name == c.Name {
			return nil, fmt.Errorf("entry %q is given twice", c.Name)
		}
		if err := c.Check(); err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "[%s]\n", tableName(c.Name))
		for _, f := range c.RevealEntry() {
			if err := writeKey(&b, f); err != nil {
				return nil, err
			}
		}
	}
	return b.Bytes(), nil
}

var bareKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// tableName is an entry name as a table header: bare, or quoted where it
// holds a dot (which would otherwise nest a table).
func tableName(name string) string {
	if bareKey.MatchString(name) {
		return name
	}
	return `"` + name + `"`
}

// writeKey writes one `key = value` line: PEM text as a multi-line literal
// string where it can be one, scopes as an array, other values as TOML's
// encoder quotes them.
func writeKey(b *bytes.Buffer, f secrets.Field) error {
	if secrets.IsMultilineKey(f.Key) && literalSafe(f.Value) {
		b.WriteString(f.Key + " = '''\n" + f.Value + "'''\n")
		return nil
	}
	var v any = f.Value
	if f.Key == secrets.KeyScopes {
		v = strings.Fields(f.Value)
	}
	enc := toml.NewEncoder(b)
	enc.Indent = ""
	if err := enc.Encode(map[string]any{f.Key: v}); err != nil {
		// The encoder's errors name types, not values.
		return fmt.Errorf("encoding credentials: %w", err)
	}
	return nil
}

// literalSafe reports whether s can be a TOML multi-line literal string
// as is: valid UTF-8, no quote, no control character but tab and newline.
func literalSafe(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool {
		return r == '\'' || (r < ' ' && r != '\n' && r != '\t') || r == 0x7f
	})
}

// Version returns the version of a sealed file: "sha256:" and the first 12
// hex digits of the SHA-256 of its ciphertext. It says nothing about the
// plaintext.
func Version(sealed []byte) string {
	sum := sha256.Sum256(sealed)
	return "sha256:" + hex.EncodeToString(sum[:])[:12]
}

// Read decrypts the credential file at path with id and parses it. Every
// entry's Version is the file's Version. A server that is not a recipient
// gets a *keys.NotRecipientError, a damaged file a *keys.CorruptError; both
// name path.
func Read(path string, id *keys.Identity) ([]secrets.Credential, error) {
	sealed, err := readSealed(path)
	if err != nil {
		return nil, err
	}
	plain, err := keys.Open(sealed, id, path)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	creds, err := Parse(plain, path)
	if err != nil {
		return nil, err
	}
	v := Version(sealed)
	for i := range creds {
		creds[i].Version = v
	}
	return creds, nil
}

// readSealed reads a sealed file, capped at keys.MaxSealed. Whoever can
// write the file chooses the credentials the agent uses, so a file, or a
// directory above it, that a user other than this one and root can write
// is refused (keys.OpenSecret with keys.NotWritable).
func readSealed(path string) ([]byte, error) {
	f, err := keys.OpenSecret(path, "credential file", keys.NotWritable)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, keys.MaxSealed+1))
	if err != nil {
		return nil, fmt.Errorf("reading credential file %s: %w", path, err)
	}
	if len(data) > keys.MaxSealed {
		return nil, &keys.CorruptError{Name: path, Reason: fmt.Sprintf("larger than %d bytes", keys.MaxSealed)}
	}
	return data, nil
}

// Write seals creds to every recipient of rl and writes the result to path
// atomically: a temp file in the same directory, written, synced, renamed
// over path, then the directory synced. An existing file keeps its mode; a
// new one gets 0600. Only ciphertext is ever written.
func Write(path string, creds []secrets.Credential, rl *keys.RecipientList) error {
	plain, err := Marshal(creds)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	sealed, err := keys.Seal(plain, rl)
	clear(plain)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	err = safeio.WriteFile(path, func(w io.Writer) error {
		_, err := w.Write(sealed)
		return err
	}, safeio.Options{KeepMode: true, BeforeSync: testHookBeforeSync})
	if err != nil {
		return fmt.Errorf("writing credential file %s: %w", path, err)
	}
	return nil
}

// testHookBeforeSync, when set by a test, is called with the temp file's
// name after it is written, before it is synced and renamed into place.
var testHookBeforeSync func(tmp string) error
