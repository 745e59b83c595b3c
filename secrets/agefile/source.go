package agefile

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/fsnotify/fsnotify"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
)

// Source is a credential file read with this server's identity. It
// implements secrets.Source and secrets.WatchSource.
type Source struct {
	path string
	id   *keys.Identity
}

var (
	_ secrets.Source      = (*Source)(nil)
	_ secrets.WatchSource = (*Source)(nil)
)

// NewSource returns a Source reading the credential file at path with id.
func NewSource(path string, id *keys.Identity) *Source {
	return &Source{path: path, id: id}
}

// String describes the source for logs: "age file PATH".
func (s *Source) String() string { return "age file " + s.path }

// Fetch reads and decrypts the file and returns the named entries. A name
// the file does not hold is a *secrets.NotFoundError; no partial result is
// returned.
func (s *Source) Fetch(ctx context.Context, names []string) (map[string]secrets.Credential, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	creds, err := Read(s.path, s.id)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]secrets.Credential, len(creds))
	for _, c := range creds {
		byName[c.Name] = c
	}
	out := make(map[string]secrets.Credential, len(names))
	for _, n := range names {
		c, ok := byName[n]
		if !ok {
			return nil, &secrets.NotFoundError{Source: s.String(), Name: n}
		}
		out[n] = c
	}
	return out, nil
}

// testHookWatching, when set by a test, is called once Watch has added its
// watch, so the test knows changes from then on are seen.
var testHookWatching func()

// kubernetesData is the symlink Kubernetes swaps to update a mounted Secret
// or ConfigMap: the file is a link through it.
const kubernetesData = "..data"

// Watch watches the file's directory, so that an atomic rename over the file
// (as Write and config management tools do) and a Kubernetes-style swap of
// the ..data symlink are seen, and sends on changed, without blocking, for
// every event that touches the file. It returns nil when ctx ends, or the
// watcher's error.
func (s *Source) Watch(ctx context.Context, changed chan<- struct{}) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", s.path, err)
	}
	defer w.Close()
	dir := filepath.Dir(s.path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watching directory %s of %s: %w", dir, s.path, err)
	}
	if testHookWatching != nil {
		testHookWatching()
	}
	base := filepath.Base(s.path)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watching %s: the watcher stopped", s.path)
			}
			if touches(ev, base) {
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watching %s: the watcher stopped", s.path)
			}
			return fmt.Errorf("watching %s: %w", s.path, err)
		}
	}
}

// touches reports whether ev, an event in the file's directory, may have
// changed the file named base.
func touches(ev fsnotify.Event, base string) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Base(ev.Name)
	return name == base || name == kubernetesData
}
