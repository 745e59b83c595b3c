package secrets

import (
	"context"
	"errors"
	"fmt"
)

// Source is a place credentials are read from: an age-sealed file or Vault.
//
// Fetch returns the named entries. It fails as a whole, without partial data,
// if any name is missing or the source cannot be read; the error names the
// source and the entry and never contains a password.
type Source interface {
	Fetch(ctx context.Context, names []string) (map[string]Credential, error)
	// String describes the source for logs ("age file /etc/sealrelay/credentials.age").
	String() string
}

// VersionSource is implemented by sources that can tell an entry's current
// version more cheaply than fetching it (Vault's KV metadata). The Store
// polls it and fetches only the entries whose version changed.
type VersionSource interface {
	Source
	Versions(ctx context.Context, names []string) (map[string]string, error)
}

// WatchSource is implemented by sources that can notice changes themselves
// (a file watched with fsnotify). Watch blocks until ctx ends, sending on
// changed whenever the source may have changed; a send may be spurious.
type WatchSource interface {
	Source
	Watch(ctx context.Context, changed chan<- struct{}) error
}

// Starter is implemented by sources with a lifecycle of their own (Vault:
// log in and keep the token alive until ctx ends). Store.Start starts such
// a source; until Start has succeeded, Fetch fails, and the source keeps
// trying in the background.
type Starter interface {
	Source
	Start(ctx context.Context) error
}

// RefreshTokenWriter is implemented by sources that can keep a refresh
// token the identity provider rotated (Vault; docs/credentials.md,
// "Rotated refresh tokens"). WriteRefreshToken writes cur's entry again
// with its refresh token replaced by token, as a new version, only if the
// entry is still at cur's version, so that a newer version an operator
// wrote is never overwritten; it returns the new version. Its errors name
// the entry, never a secret.
type RefreshTokenWriter interface {
	Source
	WriteRefreshToken(ctx context.Context, cur Credential, token string) (string, error)
}

// ErrNotFound is wrapped by Fetch errors for an entry the source does not
// hold.
var ErrNotFound = errors.New("no such credential entry")

// NotFoundError reports an entry missing from a source.
type NotFoundError struct {
	Source string
	Name   string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("%s has no entry %q", e.Source, e.Name)
}

// Unwrap returns ErrNotFound.
func (e *NotFoundError) Unwrap() error { return ErrNotFound }
