// Package hydra runs a real OAuth2 server, ORY Hydra, for tests: the token
// endpoint sealrelay's OAuth2 credentials talk to, and the introspection
// endpoint a relay host (Dovecot's oauth2 passdb) checks bearer tokens at.
//
// The Hydra binary comes from $SEALRELAY_HYDRA_BIN, else from the cache
// (${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}/hydra-2.3.0),
// else tools/hydra/build.sh builds it (a few minutes, once). A missing
// binary is built, and a failed build fails the test: nothing is skipped.
//
// Each Server runs `hydra serve all --dev` with an in-memory database on
// 127.0.0.1, public and admin API at free ports, answers /health/ready on
// both before Start returns, and is stopped in t.Cleanup. Everything it
// holds (clients, keys, tokens) is gone when it stops.
//
// In front of the public API sits a small reverse proxy that belongs to the
// rig: it only counts token requests (TokenRequests), remembers the tokens
// it saw handed out (IssuedTokens, for secret hygiene checks), and can be
// switched down (Down, Up) so that the token endpoint refuses connections,
// one fault at a time.
//
// Clients: client_credentials clients with a secret or a key
// (CreateClient), and delegated clients whose refresh token comes from
// the authorization code flow, run headless through the admin API
// (DelegatedClient); Hydra rotates refresh tokens on every use. The issuer Hydra announces, and so the token endpoint URL a
// private_key_jwt assertion must name as its audience, is the proxy's.
package hydra

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// Version is the Hydra version the tests run.
const Version = "2.3.0"

// Options configure a Server.
type Options struct {
	// AccessTokenTTL is the lifetime of access tokens (TTL_ACCESS_TOKEN);
	// 0 means Hydra's default, one hour. Hydra counts in whole seconds.
	AccessTokenTTL time.Duration
	// OpaqueTokens makes access tokens opaque strings instead of JWTs
	// (STRATEGIES_ACCESS_TOKEN=opaque). Introspection works for both;
	// only JWTs can be checked against JWKSURL.
	OpaqueTokens bool
}

// Server is one running Hydra.
type Server struct {
	// Issuer is the issuer Hydra names in its tokens and discovery
	// document: the counting proxy's base URL, http://127.0.0.1:PORT.
	Issuer string
	// TokenURL is the token endpoint through the counting proxy: the URL a
	// client under test is given, and the audience of a private_key_jwt
	// assertion.
	TokenURL string
	// JWKSURL serves the public keys that sign JWT access tokens
	// (through the proxy).
	JWKSURL string
	// RevokeURL is the token revocation endpoint (through the proxy).
	RevokeURL string
	// IntrospectURL is the admin API's token introspection endpoint, the
	// one a relay host's Dovecot is configured with.
	IntrospectURL string
	// PublicURL is Hydra's own public API, not through the proxy: the
	// rig's helpers use it, so they are not counted and work while the
	// proxy is down.
	PublicURL string
	// AdminURL is Hydra's admin API.
	AdminURL string

	dir    string
	proxy  *proxy
	cmd    *exec.Cmd
	exited chan struct{}
	http   *http.Client

	stopOnce sync.Once
}

// Start runs Hydra for one test and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	p, err := startProxy()
	if err != nil {
		t.Fatalf("hydra: %v", err)
	}
	var s *Server
	for range 3 { // a free port can be taken between choosing and binding it
		if s, err = start(bin, dir, p, opts); err == nil || !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		p.close()
		t.Fatalf("hydra: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hydra log %s (end):\n%s", s.LogFile(), testlib.Tail(s.Log(), 4000))
		}
		s.Stop()
	})
	return s
}

var errAddrInUse = errors.New("address in use")

func start(bin, dir string, p *proxy, opts Options) (*Server, error) {
	publicPort, err := testlib.FreePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := testlib.FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		Issuer:    "http://" + p.addr,
		PublicURL: "http://127.0.0.1:" + strconv.Itoa(publicPort),
		AdminURL:  "http://127.0.0.1:" + strconv.Itoa(adminPort),
		dir:       dir,
		proxy:     p,
		http:      &http.Client{Timeout: 10 * time.Second},
	}
	s.TokenURL = s.Issuer + "/oauth2/token"
	s.JWKSURL = s.Issuer + "/.well-known/jwks.json"
	s.RevokeURL = s.Issuer + "/oauth2/revoke"
	s.IntrospectURL = s.AdminURL + "/admin/oauth2/introspect"

	secret := make([]byte, 24)
	rand.Read(secret)
	strategy := "jwt"
	if opts.OpaqueTokens {
		strategy = "opaque"
	}
	env := []string{
		"PATH=/usr/bin:/bin",
		"HOME=" + dir,
		"DSN=memory",
		"SECRETS_SYSTEM=" + hex.EncodeToString(secret),
		"SERVE_PUBLIC_HOST=127.0.0.1",
		"SERVE_PUBLIC_PORT=" + strconv.Itoa(publicPort),
		"SERVE_ADMIN_HOST=127.0.0.1",
		"SERVE_ADMIN_PORT=" + strconv.Itoa(adminPort),
		"URLS_SELF_ISSUER=" + s.Issuer,
		"STRATEGIES_ACCESS_TOKEN=" + strategy,
		"LOG_LEVEL=info",
	}
	if opts.AccessTokenTTL > 0 {
		env = append(env, fmt.Sprintf("TTL_ACCESS_TOKEN=%ds", int(opts.AccessTokenTTL.Round(time.Second)/time.Second)))
	}
	logf, err := os.OpenFile(s.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("hydra log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out")
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.exited) }() //nolint:errcheck // the exit status says nothing a test needs
	if err := s.waitReady(60 * time.Second); err != nil {
		s.kill()
		if strings.Contains(s.Log(), "address already in use") {
			return nil, fmt.Errorf("ports %d/%d: %w", publicPort, adminPort, errAddrInUse)
		}
		return nil, fmt.Errorf("hydra on ports %d/%d: %w\nlog %s (end):\n%s", publicPort, adminPort, err, s.LogFile(), testlib.Tail(s.Log(), 3000))
	}
	p.setTarget(s.PublicURL)
	return s, nil
}

// waitReady waits until both APIs answer /health/ready with 200.
func (s *Server) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	hc := &http.Client{Timeout: 2 * time.Second}
	for _, base := range []string{s.AdminURL, s.PublicURL} {
		for {
			select {
			case <-s.exited:
				return errors.New("exited before it was ready")
			default:
			}
			resp, err := hc.Get(base + "/health/ready")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s/health/ready did not answer 200 within %v", base, limit)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// Stop stops Hydra (SIGTERM, then SIGKILL after 5 s) and the proxy. It is
// safe to call more than once; Start's cleanup calls it.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.cmd != nil {
			s.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited
			select {
			case <-s.exited:
			case <-time.After(5 * time.Second):
				s.kill()
			}
		}
		s.proxy.close()
	})
}

func (s *Server) kill() {
	s.cmd.Process.Kill() //nolint:errcheck // it may have exited
	<-s.exited
}

// LogFile is the file Hydra's output goes to.
func (s *Server) LogFile() string { return filepath.Join(s.dir, "hydra.log") }

// Log returns Hydra's output so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogFile())
	return string(b)
}

// TokenRequests is how many requests reached the token endpoint through
// the proxy (TokenURL) since Start, refused ones while Down not counted.
func (s *Server) TokenRequests() int { return s.proxy.count() }

// IssuedTokens are the access and refresh tokens the token endpoint
// handed out through the proxy (TokenURL) since Start, for tests that
// look for them where they must not be.
func (s *Server) IssuedTokens() []string { return s.proxy.issuedTokens() }

// Down makes TokenURL (every URL through the proxy) refuse connections,
// as an unreachable token endpoint does, and drops open ones. Hydra itself
// keeps running: IntrospectURL and PublicURL still work.
func (s *Server) Down(t testing.TB) {
	t.Helper()
	s.proxy.down()
}

// Up undoes Down: the proxy listens again on the same address.
func (s *Server) Up(t testing.TB) {
	t.Helper()
	if err := s.proxy.up(); err != nil {
		t.Fatalf("hydra: proxy back up on %s: %v", s.proxy.addr, err)
	}
}

// Binary returns the path of the Hydra binary, building it with
// tools/hydra/build.sh if needed. It fails the test if there is none.
func Binary(t testing.TB) string {
	t.Helper()
	return tool.Binary(t)
}

// tool is the Hydra binary: $SEALRELAY_HYDRA_BIN, the cached build, or
// a new one from tools/hydra/build.sh (a few minutes, once).
var tool = &testlib.Tool{
	Name:          "Hydra",
	EnvVar:        "SEALRELAY_HYDRA_BIN",
	Cached:        "hydra-" + Version,
	VersionOutput: "v" + Version + "\n",
	Script:        "tools/hydra/build.sh",
	BuildTimeout:  30 * time.Minute,
}
