// Package vaulttest runs a real Vault server (`vault server -dev`) for tests
// and sets up what they need in it: KV entries, policies, AppRole roles,
// secret IDs (plain or response-wrapped) and short-lived tokens.
//
// The Vault binary comes from $SEALRELAY_VAULT_BIN, else from the cache
// (${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}/vault-1.21.0),
// else tools/vault/build.sh builds it. Tests are never skipped for want of
// Vault: a missing binary is built, and a failed build fails the test.
//
// Each server listens on 127.0.0.1 at a free port, answers /v1/sys/health
// before Start returns, and is killed by its PID in t.Cleanup.
//
// Dev mode keeps everything in memory: after Restart the server is empty
// again (only the KV v2 mount at secret/ and the root token "root" come
// back). Functions registered with Seed run at once and again after every
// Restart, so a test can put back its entries, roles and tokens; every
// helper here accepts fixed IDs (role ID, secret ID, token ID) so the
// re-seeded credentials are the ones the code under test already holds.
package vaulttest

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// RootToken is the dev server's root token.
const RootToken = "root"

// Version is the Vault version the tests run.
const Version = "1.21.0"

// Server is one running `vault server -dev`.
type Server struct {
	// Addr is the server's address, "http://127.0.0.1:PORT". It stays the
	// same across Restart.
	Addr string
	// Client is an API client for Addr holding the root token.
	Client *api.Client

	bin     string
	port    int
	dir     string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	seeds   []func(testing.TB, *Server)
	started int

	removeDir bool // StartMain made dir; Stop removes it
}

// Start runs a dev server for one test and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start(t.TempDir())
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartMain runs a dev server shared by a package's tests. Call it from
// TestMain, and call Stop after m.Run. Its files go to a temporary
// directory that Stop removes. Tests sharing it should use their own KV
// paths and role names.
func StartMain() (*Server, error) {
	dir, err := os.MkdirTemp("", "vaulttest-")
	if err != nil {
		return nil, fmt.Errorf("vaulttest: %w", err)
	}
	s, err := start(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("vaulttest: %w", err)
	}
	s.removeDir = true
	return s, nil
}

func start(dir string) (*Server, error) {
	bin, err := tool.Path()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir}
	for range 3 { // a free port can be taken between choosing and binding it
		port, perr := testlib.FreePort()
		if perr != nil {
			return nil, perr
		}
		s.port = port
		s.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
		if err = s.run(); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if s.Client, err = NewClient(s.Addr, RootToken); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// NewClient returns an API client for addr with token, configured only by
// its arguments (no VAULT_* environment variables).
func NewClient(addr, token string) (*api.Client, error) {
	conf := &api.Config{Address: addr, MaxRetries: 0, Timeout: 10 * time.Second}
	c, err := api.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("vault client for %s: %w", addr, err)
	}
	c.SetToken(token)
	return c, nil
}

// Seed runs fn now and again after every Restart. fn puts into Vault what
// the test needs (dev mode forgets everything when it stops).
func (s *Server) Seed(t testing.TB, fn func(t testing.TB, s *Server)) {
	t.Helper()
	s.mu.Lock()
	s.seeds = append(s.seeds, fn)
	s.mu.Unlock()
	fn(t, s)
}

// Stop kills the server and waits for it to exit. Stopping a stopped
// server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Kill() //nolint:errcheck // it may have exited already
		<-s.exited
		s.cmd = nil
	}
	if s.removeDir {
		os.RemoveAll(s.dir)
	}
}

// Restart starts a stopped server again on the same port (stopping it
// first if it runs), waits for it to answer, and runs the Seed functions
// with t. It is for servers from Start, not StartMain.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err = s.run(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // the old socket may linger briefly
	}
	if err != nil {
		t.Fatalf("vaulttest: restarting: %v", err)
	}
	s.mu.Lock()
	seeds := append([]func(testing.TB, *Server){}, s.seeds...)
	s.mu.Unlock()
	for _, fn := range seeds {
		fn(t, s)
	}
}

// run starts the process and waits until it answers /v1/sys/health.
func (s *Server) run() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started++
	logPath := filepath.Join(s.dir, fmt.Sprintf("vault-%d.log", s.started))
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	home := filepath.Join(s.dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	cmd := exec.Command(s.bin, "server", "-dev",
		"-dev-root-token-id="+RootToken,
		"-dev-no-store-token",
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", s.port))
	cmd.Env = cleanEnv(home)
	cmd.SysProcAttr = procAttr()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // exit status is expected to be "killed"
	if err := waitHealthy(s.Addr, exited, 60*time.Second); err != nil {
		cmd.Process.Kill() //nolint:errcheck
		<-exited
		return fmt.Errorf("vault dev server on port %d: %w\n%s", s.port, err, tail(logPath))
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// cleanEnv is the environment without VAULT_* variables, with HOME set to
// the test's directory so nothing is written to the real home.
func cleanEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home)
}

func waitHealthy(addr string, exited <-chan struct{}, limit time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-exited:
			return errors.New("exited before answering")
		default:
		}
		resp, err := hc.Get(addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no healthy answer on /v1/sys/health within %v", limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	return testlib.Tail(string(b), 4000)
}

// Binary returns the path of the Vault binary, building it with
// tools/vault/build.sh if needed. It fails the test if there is none.
func Binary(t testing.TB) string {
	t.Helper()
	return tool.Binary(t)
}

// tool is the Vault binary: $SEALRELAY_VAULT_BIN, the cached build, or
// a new one from tools/vault/build.sh.
var tool = &testlib.Tool{
	Name:          "Vault",
	EnvVar:        "SEALRELAY_VAULT_BIN",
	Cached:        "vault-" + Version,
	VersionOutput: "Vault v" + Version,
	Script:        "tools/vault/build.sh",
	BuildTimeout:  40 * time.Minute,
}
