package testlib

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// CachePath returns name inside the directory where the test tools keep
// what they build or download once (the Vault and Hydra binaries, the
// unpacked OpenSMTPD), as the scripts under tools/ do:
// ${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}. It
// returns "" if there is no home directory to put the cache in.
func CachePath(name string) string {
	dir := os.Getenv("SEALRELAY_CACHE")
	if dir == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return ""
			}
			base = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(base, "sealrelay")
	}
	return filepath.Join(dir, name)
}

// Tool is a test server's binary that a script under tools/ builds into
// the cache directory (the Vault and Hydra servers).
type Tool struct {
	// Name names the server in errors ("Vault").
	Name string
	// EnvVar names a variable that may hold the path of a binary to use
	// instead ("SEALRELAY_VAULT_BIN").
	EnvVar string
	// Cached is the binary's name in the cache directory ("vault-1.21.0").
	Cached string
	// VersionOutput is what `BINARY version` prints when the cached binary
	// is the right one ("Vault v1.21.0").
	VersionOutput string
	// Script builds the binary, relative to the module root
	// ("tools/vault/build.sh"); it prints the binary's path.
	Script string
	// BuildTimeout bounds the build.
	BuildTimeout time.Duration

	once sync.Once
	path string
	err  error
}

// Path returns Find's answer, found once per process.
func (tl *Tool) Path() (string, error) {
	tl.once.Do(func() { tl.path, tl.err = tl.Find() })
	return tl.path, tl.err
}

// Binary returns Path, or fails the test if there is no binary.
func (tl *Tool) Binary(t testing.TB) string {
	t.Helper()
	p, err := tl.Path()
	if err != nil {
		t.Fatalf("%s: %v", tl.Name, err)
	}
	return p
}

// Find returns the path of the binary: $EnvVar if set, else the cached
// one if it is the right version, else what Script builds. Tests never
// skip for want of it: a failed build is an error.
func (tl *Tool) Find() (string, error) {
	if p := os.Getenv(tl.EnvVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %w", tl.EnvVar, err)
		}
		return p, nil
	}
	if p := CachePath(tl.Cached); p != "" {
		if out, err := exec.Command(p, "version").Output(); err == nil && strings.Contains(string(out), tl.VersionOutput) {
			return p, nil
		}
	}
	script := filepath.Join(Root(), filepath.FromSlash(tl.Script))
	ctx, cancel := context.WithTimeout(context.Background(), tl.BuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, script)
	cmd.Env = os.Environ()
	if _, err := exec.LookPath("go"); err != nil {
		cmd.Env = append(cmd.Env, "GO=/usr/local/go/bin/go") // the machine image's Go, not on PATH
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building the %s test server with %s: %w\n%s", tl.Name, script, err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}
