package vault

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"filippo.io/age/armor"
	"github.com/hashicorp/vault/api"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
)

// Entry is what List shows of a KV entry: never a secret.
type Entry struct {
	Name     string
	Username string
	Version  int  // KV version number of the current version
	Sealed   bool // its secret values are age-armored ciphertexts
	Deleted  bool // the current version is deleted; the fields below are empty
	// Public is the entry as secrets.ParsePublic reads it: its kind,
	// generation, non-secret fields and the names of its secret keys,
	// and no secret.
	Public secrets.Credential
	// Err is why the entry does not fit the schema of its kind, if it
	// does not; Public is then empty.
	Err error
}

// entry returns the path of entry name under the mount ("sealrelay/primary").
func (s *Source) entry(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") ||
		slices.Contains(strings.Split(name, "/"), "..") || strings.ContainsAny(name, "\x00\r\n") {
		return "", fmt.Errorf("vault: %q is not a valid entry name", name)
	}
	return s.cfg.Path + "/" + name, nil
}

// Fetch reads the named entries. It fails as a whole if any entry cannot
// be read, lacks a username or password, or (with Sealed) cannot be
// opened. Each Credential's Version is the entry's KV version number.
func (s *Source) Fetch(ctx context.Context, names []string) (map[string]secrets.Credential, error) {
	out := make(map[string]secrets.Credential, len(names))
	for _, name := range names {
		c, err := s.fetch(ctx, name)
		if err != nil {
			return nil, err
		}
		out[name] = c
	}
	return out, nil
}

func (s *Source) fetch(ctx context.Context, name string) (secrets.Credential, error) {
	p, err := s.entry(name)
	if err != nil {
		return secrets.Credential{}, err
	}
	return s.fetchAt(ctx, p, name, 0)
}

// fetchAt reads entry name from the KV path p under the mount: its
// current version, or the given one.
func (s *Source) fetchAt(ctx context.Context, p, name string, version int) (secrets.Credential, error) {
	dataPath := s.cfg.Mount + "/data/" + p
	kv, err := s.get(ctx, p, version)
	if err != nil {
		return secrets.Credential{}, err
	}
	if kv.Data == nil {
		return secrets.Credential{}, &Error{Path: dataPath, Kind: secrets.ErrNotFound,
			Detail: "its current version is deleted", hint: s.setHint(name)}
	}
	data, err := s.open(p, name, kv.Data)
	if err != nil {
		return secrets.Credential{}, err
	}
	c, err := secrets.ParseEntry(name, data)
	if err != nil {
		return secrets.Credential{}, s.entryError(dataPath, name, err)
	}
	if kv.VersionMetadata != nil {
		c.Version = strconv.Itoa(kv.VersionMetadata.Version)
	}
	return c, nil
}

// get reads the KV path p under the mount: its current version, or the
// given one.
func (s *Source) get(ctx context.Context, p string, version int) (*api.KVSecret, error) {
	var kv *api.KVSecret
	err := s.call(ctx, s.cfg.Mount+"/data/"+p, func(c *api.Client) error {
		var err error
		if version > 0 {
			kv, err = c.KVv2(s.cfg.Mount).GetVersion(ctx, p, version)
		} else {
			kv, err = c.KVv2(s.cfg.Mount).Get(ctx, p)
		}
		return err
	})
	return kv, err
}

// open returns a copy of an entry's data with every secret value opened
// (with Sealed), after checking that each secret value is sealed exactly
// when Sealed says so.
func (s *Source) open(p, name string, data map[string]any) (map[string]any, error) {
	dataPath := s.cfg.Mount + "/data/" + p
	out := make(map[string]any, len(data))
	for k, v := range data {
		out[k] = v
		str, ok := v.(string)
		if !ok || str == "" || !secrets.IsSecretKey(k) {
			continue
		}
		sealed := isArmored(str)
		switch {
		case s.cfg.Sealed && !sealed:
			return nil, &Error{Path: dataPath, Kind: ErrSealMismatch,
				Detail: fmt.Sprintf("sealed = true, but the %s is not an age-armored ciphertext", k), hint: s.setHint(name)}
		case !s.cfg.Sealed && sealed:
			return nil, &Error{Path: dataPath, Kind: ErrSealMismatch,
				Detail: fmt.Sprintf("the %s is an age-armored ciphertext, but sealed = false", k),
				hint:   "set sealed = true in [credentials.vault], or store the entry unsealed"}
		case s.cfg.Sealed:
			plain, err := keys.Open([]byte(str), s.cfg.Identity, "vault entry "+s.cfg.Mount+"/"+p)
			if err != nil {
				return nil, err
			}
			out[k] = string(plain)
			clear(plain)
		}
	}
	return out, nil
}

// entryError reports an entry that does not fit its kind's schema: an
// *Error of the schema's kind (secrets.ErrMissingKey, ErrUnknownKey,
// ErrInvalidEntry), whose text never quotes a value.
func (s *Source) entryError(dataPath, name string, err error) error {
	var ee *secrets.EntryError
	if !errors.As(err, &ee) {
		return &Error{Path: dataPath, Kind: secrets.ErrInvalidEntry, Err: err, hint: s.setHint(name)}
	}
	return &Error{Path: dataPath, Kind: ee.Err, Detail: ee.Error(), hint: s.setHint(name)}
}

func (s *Source) setHint(name string) string {
	return "write it with `sealrelay creds set " + name + " --vault -c CONFIG`"
}

// isArmored reports whether v is an ASCII-armored age file.
func isArmored(v string) bool {
	return strings.HasPrefix(strings.TrimLeft(v, " \t\r\n"), armor.Header)
}

// Versions returns each entry's current KV version number, from its
// metadata (cheaper than reading the entry, and no secret crosses the wire).
func (s *Source) Versions(ctx context.Context, names []string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	for _, name := range names {
		p, err := s.entry(name)
		if err != nil {
			return nil, err
		}
		var md *api.KVMetadata
		err = s.call(ctx, s.cfg.Mount+"/metadata/"+p, func(c *api.Client) error {
			var err error
			md, err = c.KVv2(s.cfg.Mount).GetMetadata(ctx, p)
			return err
		})
		if err != nil {
			return nil, err
		}
		out[name] = strconv.Itoa(md.CurrentVersion)
	}
	return out, nil
}

// Put writes a password entry name with username and password, and a
// new generation, and returns its new KV version; see PutCredential.
func (s *Source) Put(ctx context.Context, name, username, password string, recipients *keys.RecipientList) (int, error) {
	c := secrets.NewCredential(name, username, password, "")
	c.Generation = secrets.NewGeneration()
	return s.PutCredential(ctx, c, recipients)
}

// PutCredential writes c as entry c.Name, with the keys its kind stores
// (secrets.Credential.RevealEntry; scopes as a list), and returns the new
// KV version. It writes c.Generation as it is: the caller makes a new one
// for a new secret (secrets.NewGeneration). With Sealed, every secret
// value is sealed to recipients first (which must then be given) and the
// other keys stay in clear; without, recipients must be nil, so a value
// meant to be sealed is never stored in clear. An entry that ParseEntry
// would refuse is refused.
func (s *Source) PutCredential(ctx context.Context, c secrets.Credential, recipients *keys.RecipientList) (int, error) {
	return s.put(ctx, c, recipients)
}

// WriteRefreshToken writes a refresh token the identity provider rotated
// back to the entry cur came from (secrets.RefreshTokenWriter): a new KV
// version holding cur with the new token and a new generation, its
// secrets sealed to Config.Recipients with Sealed, written with
// check-and-set at cur's version so that a version written meanwhile is
// never overwritten. The token needs the create and update capabilities
// on the entry's data path besides read. It returns the new version.
func (s *Source) WriteRefreshToken(ctx context.Context, cur secrets.Credential, token string) (string, error) {
	ver, err := strconv.Atoi(cur.Version)
	if err != nil {
		return "", fmt.Errorf("vault: credential %q has no KV version to write after", cur.Name)
	}
	next, err := cur.WithRefreshToken(token)
	if err != nil {
		return "", err
	}
	if s.cfg.Sealed && s.cfg.Recipients == nil {
		return "", fmt.Errorf("vault: credential %q: sealed = true and no recipient list to seal the refresh token to (credentials.recipients)", cur.Name)
	}
	var rl *keys.RecipientList
	if s.cfg.Sealed {
		rl = s.cfg.Recipients
	}
	v, err := s.put(ctx, next, rl, api.WithCheckAndSet(ver))
	if err != nil {
		return "", err
	}
	return strconv.Itoa(v), nil
}

func (s *Source) put(ctx context.Context, c secrets.Credential, recipients *keys.RecipientList, opts ...api.KVOption) (int, error) {
	p, err := s.entry(c.Name)
	if err != nil {
		return 0, err
	}
	return s.putAt(ctx, p, c, recipients, opts...)
}

// putAt writes c to the KV path p under the mount, as PutCredential says.
func (s *Source) putAt(ctx context.Context, p string, c secrets.Credential, recipients *keys.RecipientList, opts ...api.KVOption) (int, error) {
	dataPath := s.cfg.Mount + "/data/" + p
	switch {
	case s.cfg.Sealed && recipients == nil:
		return 0, fmt.Errorf("%s: sealed = true, so a recipient list is needed to seal the secrets", dataPath)
	case !s.cfg.Sealed && recipients != nil:
		return 0, fmt.Errorf("%s: a recipient list was given, but sealed = false: the secrets would be stored in clear", dataPath)
	}
	if err := c.Check(); err != nil {
		return 0, fmt.Errorf("%s: %w", dataPath, err)
	}
	data := map[string]any{}
	for _, f := range c.RevealEntry() {
		switch {
		case f.Key == secrets.KeyScopes:
			data[f.Key] = strings.Fields(f.Value)
		case f.Secret && s.cfg.Sealed:
			ct, err := keys.Seal([]byte(f.Value), recipients)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", dataPath, err)
			}
			data[f.Key] = string(ct)
		default:
			data[f.Key] = f.Value
		}
	}
	return s.putData(ctx, p, data, opts...)
}

// putData writes data as a new version of the KV path p under the mount
// (with opts: only over a given version) and returns the version.
func (s *Source) putData(ctx context.Context, p string, data map[string]any, opts ...api.KVOption) (int, error) {
	dataPath := s.cfg.Mount + "/data/" + p
	var kv *api.KVSecret
	err := s.call(ctx, dataPath, func(cl *api.Client) error {
		var err error
		kv, err = cl.KVv2(s.cfg.Mount).Put(ctx, p, data, opts...)
		return err
	})
	if err != nil {
		return 0, err
	}
	if kv.VersionMetadata == nil {
		return 0, &Error{Path: dataPath, Kind: ErrUnexpected, Detail: "the write returned no version"}
	}
	return kv.VersionMetadata.Version, nil
}

// List returns the entries under the path, sorted by name, with their
// kinds, usernames, generations, versions, non-secret fields and whether
// they are sealed. Secret values are read (KV has no other way to get the
// rest) but never opened or returned.
func (s *Source) List(ctx context.Context) ([]Entry, error) {
	names, err := s.list(ctx, s.cfg.Path)
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(names))
	for _, name := range names {
		kv, err := s.get(ctx, s.cfg.Path+"/"+name, 0)
		if err != nil {
			return nil, err
		}
		e := Entry{Name: name, Deleted: kv.Data == nil}
		if kv.VersionMetadata != nil {
			e.Version = kv.VersionMetadata.Version
		}
		if !e.Deleted {
			describe(&e, kv.Data)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// describe fills e from an entry's data, without opening a secret.
func describe(e *Entry, data map[string]any) {
	for k, v := range data {
		if str, ok := v.(string); ok && secrets.IsSecretKey(k) && isArmored(str) {
			e.Sealed = true
		}
	}
	c, err := secrets.ParsePublic(e.Name, data)
	if err != nil {
		e.Username, _ = data[secrets.KeyUsername].(string)
		e.Err = err
		return
	}
	e.Username, e.Public = c.Username, c
}

var (
	_ secrets.VersionSource = (*Source)(nil)
	_ secrets.Starter       = (*Source)(nil)
)
