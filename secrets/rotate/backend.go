package rotate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
	"github.com/sealrelay/sealrelay/secrets/vault"
)

// Role says which credential of a rotation a Backend keeps.
type Role string

// The two credentials a rotation keeps until it ends.
const (
	RolePrevious Role = "previous" // the entry before the rotation
	RolePending  Role = "pending"  // the new entry
)

// Backend is where the entry lives, sealed: the age file or Vault.
type Backend interface {
	// String names it in messages: "age file /etc/sealrelay/credentials.age".
	String() string
	// Current returns the entry as it is now.
	Current(ctx context.Context, name string) (secrets.Credential, error)
	// Keep keeps c, sealed, so that a later run can read it back with
	// Kept, and returns what the state file records: never a secret in
	// clear.
	Keep(ctx context.Context, role Role, c secrets.Credential) (string, error)
	// Kept reads back what Keep kept.
	Kept(ctx context.Context, role Role, name, ref string) (secrets.Credential, error)
	// KeepsIn says where Keep keeps entry name's new entry, for the log:
	// the state file at statePath, or elsewhere.
	KeepsIn(name, statePath string) string
	// Forget drops what Keep kept outside the state file, if anything.
	Forget(ctx context.Context, name string) error
	// Install makes c the entry (step 3), and says how, for the log.
	Install(ctx context.Context, c secrets.Credential) (string, error)
	// Restore puts back the entry Keep kept as RolePrevious under ref.
	Restore(ctx context.Context, name, ref string) (string, error)
}

// AgeFile is the sealed credential file: read with Identity, written
// sealed to Recipients. The previous and new entries wait, sealed to the
// same recipients, in the state file.
type AgeFile struct {
	Path       string
	Recipients *keys.RecipientList
	Identity   *keys.Identity
}

func (a *AgeFile) String() string { return "age file " + a.Path }

// Current reads the file and returns entry name.
func (a *AgeFile) Current(_ context.Context, name string) (secrets.Credential, error) {
	creds, err := agefile.Read(a.Path, a.Identity)
	if err != nil {
		return secrets.Credential{}, err
	}
	i := slices.IndexFunc(creds, func(c secrets.Credential) bool { return c.Name == name })
	if i < 0 {
		return secrets.Credential{}, &secrets.NotFoundError{Source: a.String(), Name: name}
	}
	return creds[i], nil
}

// Keep seals c, as a one-entry credential file, to the recipient list.
func (a *AgeFile) Keep(_ context.Context, role Role, c secrets.Credential) (string, error) {
	plain, err := agefile.Marshal([]secrets.Credential{c})
	if err != nil {
		return "", err
	}
	defer clear(plain)
	sealed, err := keys.Seal(plain, a.Recipients)
	if err != nil {
		return "", fmt.Errorf("sealing the %s entry for the rotation state: %w", role, err)
	}
	return string(sealed), nil
}

// Kept opens what Keep sealed.
func (a *AgeFile) Kept(_ context.Context, role Role, name, ref string) (secrets.Credential, error) {
	what := "the rotation state's " + string(role) + " entry"
	plain, err := keys.Open([]byte(ref), a.Identity, what)
	if err != nil {
		return secrets.Credential{}, err
	}
	defer clear(plain)
	creds, err := agefile.Parse(plain, what)
	if err != nil {
		return secrets.Credential{}, err
	}
	if len(creds) != 1 || creds[0].Name != name {
		return secrets.Credential{}, fmt.Errorf("%s is not entry %q", what, name)
	}
	return creds[0], nil
}

// KeepsIn is the state file.
func (a *AgeFile) KeepsIn(_, statePath string) string {
	return "sealed to the recipient list in " + statePath
}

// Forget has nothing to do: the state file goes.
func (a *AgeFile) Forget(context.Context, string) error { return nil }

// Install reads the file, replaces entry c.Name and writes it sealed to
// the recipient list, keeping the other entries.
func (a *AgeFile) Install(_ context.Context, c secrets.Credential) (string, error) {
	creds, err := agefile.Read(a.Path, a.Identity)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	i := slices.IndexFunc(creds, func(x secrets.Credential) bool { return x.Name == c.Name })
	if i < 0 {
		return "", &secrets.NotFoundError{Source: a.String(), Name: c.Name}
	}
	creds[i] = c
	if err := agefile.Write(a.Path, creds, a.Recipients); err != nil {
		return "", err
	}
	return "sealed to " + a.Recipients.Describe(), nil
}

// Restore writes the previous entry back.
func (a *AgeFile) Restore(ctx context.Context, name, ref string) (string, error) {
	prev, err := a.Kept(ctx, RolePrevious, name, ref)
	if err != nil {
		return "", err
	}
	return a.Install(ctx, prev)
}

// Vault is the Vault KV entry: the previous entry is its KV version
// before the rotation; the new one waits, sealed as entries are, at the
// source's pending path. Recipients are needed with sealed = true.
type Vault struct {
	Source     *vault.Source
	Recipients *keys.RecipientList
}

func (v *Vault) String() string { return v.Source.String() }

// Current reads the entry's current version.
func (v *Vault) Current(ctx context.Context, name string) (secrets.Credential, error) {
	got, err := v.Source.Fetch(ctx, []string{name})
	if err != nil {
		return secrets.Credential{}, err
	}
	return got[name], nil
}

// Keep records the previous entry's KV version, and writes the new entry
// to the pending path.
func (v *Vault) Keep(ctx context.Context, role Role, c secrets.Credential) (string, error) {
	if role == RolePrevious {
		if _, err := strconv.Atoi(c.Version); err != nil {
			return "", fmt.Errorf("entry %q has no KV version", c.Name)
		}
		return c.Version, nil
	}
	if err := v.Source.PutPending(ctx, c, v.Recipients); err != nil {
		return "", err
	}
	return v.Source.PendingPath(c.Name), nil
}

// Kept reads the previous version, or the pending entry.
func (v *Vault) Kept(ctx context.Context, role Role, name, ref string) (secrets.Credential, error) {
	if role == RolePending {
		return v.Source.Pending(ctx, name)
	}
	n, err := strconv.Atoi(ref)
	if err != nil {
		return secrets.Credential{}, fmt.Errorf("the rotation state's previous version %q is not a number", ref)
	}
	return v.Source.FetchVersion(ctx, name, n)
}

// KeepsIn is the pending path.
func (v *Vault) KeepsIn(name, _ string) string {
	how := "unsealed"
	if v.Recipients != nil {
		how = "sealed"
	}
	return how + " at " + v.Source.PendingPath(name)
}

// Forget deletes the pending entry.
func (v *Vault) Forget(ctx context.Context, name string) error {
	return v.Source.DropPending(ctx, name)
}

// Install writes c as a new KV version.
func (v *Vault) Install(ctx context.Context, c secrets.Credential) (string, error) {
	n, err := v.Source.PutCredential(ctx, c, v.Recipients)
	if err != nil {
		return "", err
	}
	how := "unsealed"
	if v.Recipients != nil {
		how = "sealed to " + v.Recipients.Describe()
	}
	return fmt.Sprintf("as version %d, %s", n, how), nil
}

// Restore writes the previous version again as the newest.
func (v *Vault) Restore(ctx context.Context, name, ref string) (string, error) {
	n, err := strconv.Atoi(ref)
	if err != nil {
		return "", fmt.Errorf("the rotation state's previous version %q is not a number", ref)
	}
	got, err := v.Source.RestoreVersion(ctx, name, n)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("as version %d, a copy of version %d", got, n), nil
}
