// Package agefile reads and writes the credential file: an ASCII-armored age
// file, sealed to every server on the recipient list, whose plaintext is TOML
// with one table per entry:
//
//	[primary]
//	username = "relay-account@example.com"
//	password = "..."
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

	"github.com/BurntSushi/toml"

	"github.com/sealrelay/sealrelay/internal/safeio"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
)

// The keys an entry table may hold.
const (
	keyUsername = "username"
	keyPassword = "password"
)

var validName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ValidName reports whether name may name an entry: one or more of
// A-Z a-z 0-9 . _ -
func ValidName(name string) bool { return validName.MatchString(name) }

// Parse reads the TOML plaintext of a credential file; fileName is used in
// errors. It returns the entries sorted by name, with no Version set.
//
// Unknown keys, a missing or empty username or password, an entry defined
// twice and top-level values that are not entry tables are errors naming the
// entry. Syntax errors give the line and a generic reason: the TOML parser's
// message is never passed on, because it can quote the input.
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
		keyNames := make([]string, 0, len(table))
		for k := range table {
			keyNames = append(keyNames, k)
		}
		slices.Sort(keyNames)
		for _, k := range keyNames {
			if k == keyUsername || k == keyPassword {
				continue
			}
			if !ValidName(k) {
				return nil, fmt.Errorf("%s: entry %q has an unknown key (only username and password are allowed)", fileName, name)
			}
			return nil, fmt.Errorf("%s: entry %q has unknown key %q (only username and password are allowed)", fileName, name, k)
		}
		user, err := stringField(table, keyUsername, name, fileName)
		if err != nil {
			return nil, err
		}
		pass, err := stringField(table, keyPassword, name, fileName)
		if err != nil {
			return nil, err
		}
		if err := checkEntry(name, user, pass); err != nil {
			return nil, fmt.Errorf("%s: %w", fileName, err)
		}
		creds = append(creds, secrets.NewCredential(name, user, pass, ""))
	}
	return creds, nil
}

// stringField returns table[key] if it is a string; a missing key is "".
func stringField(table map[string]any, key, entry, fileName string) (string, error) {
	v, ok := table[key]
	if !ok {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: entry %q: %s must be a string", fileName, entry, key)
	}
	return s, nil
}

// checkEntry validates one entry; Parse and Marshal share it. Its errors
// quote the name only if it is valid.
func checkEntry(name, username, password string) error {
	switch {
	case !ValidName(name):
		return errors.New("an entry name is empty or has characters other than A-Z a-z 0-9 . _ -")
	case username == "":
		return fmt.Errorf("entry %q has no username", name)
	case password == "":
		return fmt.Errorf("entry %q has no password", name)
	case strings.ContainsRune(username, 0):
		return fmt.Errorf("entry %q: username contains a NUL character", name)
	case strings.ContainsRune(password, 0):
		return fmt.Errorf("entry %q: password contains a NUL character, which SMTP AUTH cannot carry", name)
	}
	return nil
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
		case ValidName(entry) && (key == keyUsername || key == keyPassword):
			return fmt.Errorf("%s: line %d: entry %q sets %s twice", fileName, line, entry, key)
		default:
			return fmt.Errorf("%s: line %d: a key is defined twice", fileName, line)
		}
	}
	return fmt.Errorf("%s: line %d: invalid TOML syntax (details withheld: they could quote a password)", fileName, line)
}

// entryTOML is one entry as Marshal writes it.
type entryTOML struct {
	Username string `toml:"username"`
	Password string `toml:"password"`
}

// Marshal writes creds as the TOML plaintext of a credential file, sorted by
// name, as `age -d` will show it. It refuses what Parse would refuse. The
// caller should clear the result after sealing it.
func Marshal(creds []secrets.Credential) ([]byte, error) {
	doc := make(map[string]entryTOML, len(creds))
	for _, c := range creds {
		if err := checkEntry(c.Name, c.Username, c.Password()); err != nil {
			return nil, err
		}
		if _, dup := doc[c.Name]; dup {
			return nil, fmt.Errorf("entry %q is given twice", c.Name)
		}
		doc[c.Name] = entryTOML{Username: c.Username, Password: c.Password()}
	}
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.Indent = ""
	if err := enc.Encode(doc); err != nil {
		// The encoder's errors name types, not values.
		return nil, fmt.Errorf("encoding credentials: %w", err)
	}
	return b.Bytes(), nil
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
