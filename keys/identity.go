package keys

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"filippo.io/age"
)

// maxIdentityFile caps how much of an identity file is read.
const maxIdentityFile = 1 << 20

// Identity is a server's age identity: one or more secret keys and their
// public keys. Its String method shows only the file and public keys.
type Identity struct {
	path       string
	source     string // "file PATH", "systemd credential NAME in DIR"
	plugins    []string
	identities []age.Identity
	publicKeys []string
}

// Path returns the file the identity was loaded from, or the name given to
// Parse.
func (id *Identity) Path() string { return id.path }

// Source names where the identity came from, for a log line: "file PATH"
// or "systemd credential NAME in DIR", and "age plugin NAME" for each plugin
// its keys go through. It never shows key material.
func (id *Identity) Source() string {
	src := id.source
	if src == "" {
		src = id.path
	}
	for _, p := range id.plugins {
		src += ", age plugin " + p
	}
	return src
}

// Plugins returns the names of the age plugins the identity's keys go
// through ("yubikey" runs age-plugin-yubikey).
func (id *Identity) Plugins() []string { return id.plugins }

// Identities returns the age identities, for age.Decrypt.
func (id *Identity) Identities() []age.Identity { return id.identities }

// PublicKeys returns the public keys (age1...) of the identity's secret keys,
// where they are known. A plugin identity's public key is known only if the
// file names it in a "# public key:" or "# Recipient:" comment.
func (id *Identity) PublicKeys() []string { return id.publicKeys }

// PublicKey returns the first public key, or "(unknown)".
func (id *Identity) PublicKey() string {
	if len(id.publicKeys) == 0 {
		return "(unknown)"
	}
	return id.publicKeys[0]
}

// String shows the path and public keys, never secret material.
func (id *Identity) String() string {
	return fmt.Sprintf("identity %s (%s)", id.path, strings.Join(id.publicKeys, ", "))
}

// GoString is the same as String.
func (id *Identity) GoString() string { return id.String() }

// Generate returns a new identity in the format age-keygen writes (comment
// lines, then the secret key) and its public key. With pq it makes a hybrid
// post-quantum key (age1pq1...).
func Generate(pq bool, now time.Time) (file []byte, publicKey string, err error) {
	var secret fmt.Stringer
	if pq {
		k, err := age.GenerateHybridIdentity()
		if err != nil {
			return nil, "", fmt.Errorf("generating post-quantum identity: %w", err)
		}
		secret, publicKey = k, k.Recipient().String()
	} else {
		k, err := age.GenerateX25519Identity()
		if err != nil {
			return nil, "", fmt.Errorf("generating identity: %w", err)
		}
		secret, publicKey = k, k.Recipient().String()
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# created: %s\n", now.Format(time.RFC3339))
	fmt.Fprintf(&b, "# public key: %s\n", publicKey)
	fmt.Fprintf(&b, "%s\n", secret)
	return b.Bytes(), publicKey, nil
}

// WriteNew generates an identity and writes it to path with mode 0600. It
// never overwrites: the file is created with O_EXCL. It returns the public
// key.
func WriteNew(path string, pq bool) (string, error) {
	data, pub, err := Generate(pq, time.Now())
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("identity file %s already exists; refusing to overwrite it", path)
		}
		return "", fmt.Errorf("creating identity file: %w", err)
	}
	_, werr := f.Write(data)
	clear(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return "", fmt.Errorf("writing identity file %s: %w", path, werr)
	}
	return pub, nil
}

// Load reads an identity file. It refuses a file whose mode lets group or
// others read or write it (a *PermissionError).
func Load(path string) (*Identity, error) {
	f, err := OpenSecret(path, "identity file", Private)
	if err != nil {
		return nil, err
	}
	return parseFile(f, path, "file "+path)
}

// parseFile parses the identity in f, which it closes, read from path;
// source is what Source reports.
func parseFile(f *os.File, path, source string) (*Identity, error) {
	defer f.Close()
	id, err := Parse(f, path)
	if err != nil {
		return nil, err
	}
	id.path, id.source = path, source
	return id, nil
}

// Parse reads an identity in age-keygen's format from r; name is used in
// errors. It does not check file permissions: use Load for files.
func Parse(r io.Reader, name string) (*Identity, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxIdentityFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading identity file %s: %w", name, err)
	}
	defer clear(data)
	if len(data) > maxIdentityFile {
		return nil, fmt.Errorf("identity file %s is larger than %d bytes", name, maxIdentityFile)
	}
	id := &Identity{path: name}
	var commentKeys []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxIdentityFile)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if !utf8.ValidString(line) {
			return nil, fmt.Errorf("identity file %s: line %d is not valid UTF-8", name, n)
		}
		if c, ok := strings.CutPrefix(line, "#"); ok {
			if k := commentPublicKey(c); k != "" {
				commentKeys = append(commentKeys, k)
			}
			continue
		}
		switch {
		case strings.HasPrefix(line, "AGE-SECRET-KEY-PQ-1"):
			k, err := age.ParseHybridIdentity(line)
			if err != nil {
				return nil, fmt.Errorf("identity file %s: line %d: malformed post-quantum secret key", name, n)
			}
			id.identities = append(id.identities, k)
			id.publicKeys = append(id.publicKeys, k.Recipient().String())
		case strings.HasPrefix(line, "AGE-SECRET-KEY-1"):
			k, err := age.ParseX25519Identity(line)
			if err != nil {
				return nil, fmt.Errorf("identity file %s: line %d: malformed secret key", name, n)
			}
			id.identities = append(id.identities, k)
			id.publicKeys = append(id.publicKeys, k.Recipient().String())
		case strings.HasPrefix(line, "AGE-PLUGIN-"):
			k, err := newPluginIdentity(line)
			if err != nil {
				return nil, fmt.Errorf("identity file %s: line %d: malformed plugin identity", name, n)
			}
			id.identities = append(id.identities, k)
			if !slices.Contains(id.plugins, k.name) {
				id.plugins = append(id.plugins, k.name)
			}
		default:
			// The message names no key prefix, so that "AGE-SECRET-KEY" in
			// any output always means a leak.
			return nil, fmt.Errorf("identity file %s: line %d is not an age secret key (as age-keygen writes) or an age plugin identity", name, n)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading identity file %s: %w", name, err)
	}
	if len(id.identities) == 0 {
		return nil, fmt.Errorf("identity file %s holds no secret key", name)
	}
	if len(id.publicKeys) == 0 {
		id.publicKeys = commentKeys
	}
	return id, nil
}

// commentPublicKey returns the public key a comment line names, as
// age-keygen ("public key: age1...") and age-plugin-yubikey ("Recipient:
// age1yubikey1...") write them.
func commentPublicKey(c string) string {
	c = strings.TrimSpace(c)
	for _, p := range []string{"public key:", "Recipient:"} {
		if k, ok := strings.CutPrefix(c, p); ok {
			k = strings.TrimSpace(k)
			if strings.HasPrefix(k, "age1") {
				return k
			}
		}
	}
	return ""
}
