package vault

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/secrets"
)

// shared is the Vault dev server the package's tests share. Each test uses
// its own KV path, policy and role names, so they do not see each other.
var shared *vaulttest.Server

func TestMain(m *testing.M) {
	s, err := vaulttest.StartMain()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

// logs captures a Source's log lines and checks, when the test ends, that
// none of the registered secrets appears in them.
type logs struct {
	testlib.LogBuf
	mu      sync.Mutex // guards secrets
	secrets []string
}

// count returns how many lines contain s.
func (l *logs) count(s string) int { return len(l.Lines(s)) }

// forbid registers values that must never be logged.
func (l *logs) forbid(values ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.secrets = append(l.secrets, values...)
}

func newLogs(t *testing.T) (*logs, *slog.Logger) {
	l := &logs{}
	t.Cleanup(func() {
		out := l.String()
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, s := range l.secrets {
			if s != "" && strings.Contains(out, s) {
				t.Errorf("a secret value appears in the log:\n%s", out)
			}
		}
	})
	return l, slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testPath returns a KV path (under the secret/ mount) for this test only.
func testPath(t *testing.T) string {
	return "t/" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
}

// writeFile writes content to a new file in dir with mode and returns its
// path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // the umask may have narrowed it
		t.Fatal(err)
	}
	return p
}

// readToken makes a token that may read path, writes it to a 0600 file and
// returns the file and the token.
func readToken(t *testing.T, path string, spec vaulttest.Token) (file, token string) {
	t.Helper()
	policy := strings.ReplaceAll(path, "/", "-")
	shared.Policy(t, policy, vaulttest.WritePolicy(vaulttest.KVMount, path))
	spec.Policies = append(spec.Policies, policy)
	token = shared.CreateToken(t, spec)
	return writeFile(t, t.TempDir(), "token", token, 0o600), token
}

// newSource returns a Source for cfg, with its log captured. Settings the
// test leaves unset, which the agent's config always fills, take the
// shared dev server's values.
func newSource(t *testing.T, cfg Config) (*Source, *logs) {
	t.Helper()
	l, log := newLogs(t)
	cfg.Logger = log
	if cfg.Address == "" && len(cfg.Addresses) == 0 {
		cfg.Address = shared.Addr
	}
	cfg = withSettings(cfg)
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, l
}

// start runs s.Start with a context that ends with the test.
func start(t *testing.T, s *Source) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return s.Start(ctx)
}

// fetchOne fetches name and fails the test on error.
func fetchOne(t *testing.T, s *Source, name string) (username, password, version string) {
	t.Helper()
	c := fetchCred(t, s, name)
	return c.Username, c.Password(), c.Version
}

// fetchCred fetches name and fails the test on error.
func fetchCred(t *testing.T, s *Source, name string) secrets.Credential {
	t.Helper()
	got, err := s.Fetch(ctx(t), []string{name})
	if err != nil {
		t.Fatalf("Fetch(%s): %v", name, err)
	}
	return got[name]
}

// ctx returns a context bounded in time that ends with the test.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// wantErr checks that err is not nil and its text contains every part.
func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", parts)
	}
	t.Logf("error: %v", err)
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

// hintOf returns the first hint in err's chain.
func hintOf(err error) string {
	for err != nil {
		if h, ok := err.(interface{ Hint() string }); ok && h.Hint() != "" {
			return h.Hint()
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if h := hintOf(e); h != "" {
					return h
				}
			}
			return ""
		default:
			return ""
		}
	}
	return ""
}

// withSettings fills the settings cfg leaves unset with the dev server's:
// its KV mount, a path, the auth mounts where Vault enables them by
// default, and a request timeout.
func withSettings(cfg Config) Config {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&cfg.Mount, vaulttest.KVMount)
	set(&cfg.Path, "sealrelay")
	set(&cfg.AppRoleMount, "approle")
	set(&cfg.KubernetesMount, "kubernetes")
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	return cfg
}
