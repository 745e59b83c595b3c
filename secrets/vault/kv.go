package vault

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"filippo.io/age/armor"
	"github.com/hashicorp/vault/api"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
)

// Entry is what List shows of a KV entry: never its password.
type Entry struct {
	Name     string
	Username string
	Version  int  // KV version number of the current version
	Sealed   bool // the password is an age-armored ciphertext
	Deleted  bool // the current version is deleted; Username is empty
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
	dataPath := s.cfg.Mount + "/data/" + p
	var kv *api.KVSecret
	err = s.call(ctx, dataPath, func(c *api.Client) error {
		var err error
		kv, err = c.KVv2(s.cfg.Mount).Get(ctx, p)
		return err
	})
	if err != nil {
		return secrets.Credential{}, err
	}
	if kv.Data == nil {
		return secrets.Credential{}, &Error{Path: dataPath, Kind: secrets.ErrNotFound,
			Detail: "its current version is deleted", hint: s.setHint(name)}
	}
	username, err := s.stringKey(dataPath, name, kv.Data, "username")
	if err != nil {
		return secrets.Credential{}, err
	}
	password, err := s.stringKey(dataPath, name, kv.Data, "password")
	if err != nil {
		return secrets.Credential{}, err
	}
	version := ""
	if kv.VersionMetadata != nil {
		version = strconv.Itoa(kv.VersionMetadata.Version)
	}
	sealed := isArmored(password)
	switch {
	case s.cfg.Sealed && !sealed:
		return secrets.Credential{}, &Error{Path: dataPath, Kind: ErrSealMismatch,
			Detail: "sealed = true, but the password is not an age-armored ciphertext", hint: s.setHint(name)}
	case !s.cfg.Sealed && sealed:
		return secrets.Credential{}, &Error{Path: dataPath, Kind: ErrSealMismatch,
			Detail: "the password is an age-armored ciphertext, but sealed = false",
			hint:   "set sealed = true in [credentials.vault], or store the entry unsealed"}
	case s.cfg.Sealed:
		plain, err := keys.Open([]byte(password), s.cfg.Identity, "vault entry "+s.cfg.Mount+"/"+p)
		if err != nil {
			return secrets.Credential{}, err
		}
		password = string(plain)
		clear(plain)
	}
	return secrets.NewCredential(name, username, password, version), nil
}

// stringKey returns the non-empty string under key, or an ErrMissingKey
// error that never quotes the value.
func (s *Source) stringKey(dataPath, name string, data map[string]any, key string) (string, error) {
	v, ok := data[key]
	detail := ""
	switch str, isStr := v.(string); {
	case !ok:
		detail = fmt.Sprintf("the entry has no %q key", key)
	case !isStr:
		detail = fmt.Sprintf("the %q key is not a string", key)
	case str == "":
		detail = fmt.Sprintf("the %q key is empty", key)
	default:
		return str, nil
	}
	return "", &Error{Path: dataPath, Kind: ErrMissingKey, Detail: detail + " (it needs username and password)", hint: s.setHint(name)}
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

// Put writes entry name with username and password and returns its new KV
// version. With Sealed, the password is sealed to recipients first (which
// must then be given) and the username stays in clear; without, recipients
// must be nil, so a value meant to be sealed is never stored in clear.
func (s *Source) Put(ctx context.Context, name, username, password string, recipients *keys.RecipientList) (int, error) {
	p, err := s.entry(name)
	if err != nil {
		return 0, err
	}
	dataPath := s.cfg.Mount + "/data/" + p
	if username == "" || password == "" {
		return 0, fmt.Errorf("%s: username and password must not be empty", dataPath)
	}
	value := password
	switch {
	case s.cfg.Sealed && recipients == nil:
		return 0, fmt.Errorf("%s: sealed = true, so a recipient list is needed to seal the password", dataPath)
	case !s.cfg.Sealed && recipients != nil:
		return 0, fmt.Errorf("%s: a recipient list was given, but sealed = false: the password would be stored in clear", dataPath)
	case s.cfg.Sealed:
		ct, err := keys.Seal([]byte(password), recipients)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", dataPath, err)
		}
		value = string(ct)
	}
	var kv *api.KVSecret
	err = s.call(ctx, dataPath, func(c *api.Client) error {
		var err error
		kv, err = c.KVv2(s.cfg.Mount).Put(ctx, p, map[string]any{"username": username, "password": value})
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
// usernames and versions and whether they are sealed. Passwords are read
// (KV has no other way to get the username) but never returned.
func (s *Source) List(ctx context.Context) ([]Entry, error) {
	listPath := s.cfg.Mount + "/metadata/" + s.cfg.Path
	var sec *api.Secret
	err := s.call(ctx, listPath, func(c *api.Client) error {
		var err error
		sec, err = c.Logical().ListWithContext(ctx, listPath)
		return err
	})
	if err != nil {
		return nil, err
	}
	var names []string
	if sec != nil {
		raw, _ := sec.Data["keys"].([]any)
		for _, k := range raw {
			if n, ok := k.(string); ok && !strings.HasSuffix(n, "/") {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	entries := make([]Entry, 0, len(names))
	for _, name := range names {
		p := s.cfg.Path + "/" + name
		var kv *api.KVSecret
		err := s.call(ctx, s.cfg.Mount+"/data/"+p, func(c *api.Client) error {
			var err error
			kv, err = c.KVv2(s.cfg.Mount).Get(ctx, p)
			return err
		})
		if err != nil {
			return nil, err
		}
		e := Entry{Name: name, Deleted: kv.Data == nil}
		if kv.VersionMetadata != nil {
			e.Version = kv.VersionMetadata.Version
		}
		if !e.Deleted {
			e.Username, _ = kv.Data["username"].(string)
			pw, _ := kv.Data["password"].(string)
			e.Sealed = isArmored(pw)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

var (
	_ secrets.VersionSource = (*Source)(nil)
	_ secrets.Starter       = (*Source)(nil)
)
