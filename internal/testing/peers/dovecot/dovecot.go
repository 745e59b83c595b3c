// Package dovecot runs private Dovecot instances, from Debian's dovecot-core,
// as the SASL backend of a private Postfix (internal/testing/peers/postfixtest): the relay
// host a test's SMTP client authenticates to with PLAIN, LOGIN, CRAM-MD5,
// SCRAM-SHA-256, or an OAuth2 bearer token (XOAUTH2, OAUTHBEARER) that
// Dovecot checks at a real OAuth2 server's introspection endpoint
// (internal/testing/peers/hydra). StartRelay wires Dovecot, Postfix and an upstream
// that receives what Postfix relays.
//
// Each Server has its own directory (config, passwd files, sockets, log),
// runs `dovecot -F -c DIR/dovecot.conf` with no mail protocols, only the
// auth service, offers Postfix one unix socket (SocketPath), and stops with
// `doveadm stop` in t.Cleanup. Any number can run at once.
//
// Passwords live in passwd-file passdbs with {PLAIN} passwords (test
// secrets only). A user may have several live passwords at once, as during
// a rotation: a passwd-file holds one line per user, so there are Slots
// files, one passdb block each, and a user's i-th password is in file i.
// Dovecot tries the passdbs in order: for PLAIN and LOGIN, which hand
// Dovecot the password to check, a password that fails one passdb is tried
// against the next, so every live password works. CRAM-MD5 and SCRAM look
// up the one stored secret of the first passdb that knows the user and
// check the client's proof against it: only a user's first password works
// for them.
//
// Found by trying, with Dovecot 2.3.19:
//
//   - A passwd-file is read again only when its mtime or size changed, and
//     it is looked at no more than once per second (per auth process). The
//     rig therefore gives each written file a new mtime and, after a
//     change, waits for the next second, so that the next AUTH sees it; a
//     reload is never needed.
//   - After a failed AUTH, Dovecot's auth penalty delays the next request
//     from that IP (up to 15 s), longer than Postfix waits for Dovecot
//     (10 s, which then answers 454): the penalty is switched off (anvil's
//     auth-penalty socket with mode 0), and so is auth_failure_delay (2 s
//     per failure by default). auth_cache_size is 0: a cache would keep
//     accepting a revoked token.
//   - With auth_debug, Dovecot logs bearer tokens; Config.Debug turns it on.
package dovecot

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// Commands the package runs; Available checks them.
const (
	dovecotCmd = "/usr/sbin/dovecot"
	doveadmCmd = "/usr/bin/doveadm"
)

// InstallHint says how to get what Available misses.
const InstallHint = "make test installs Dovecot (tools/deps.sh: dovecot-core); run it as root"

// Available reports why a private Dovecot cannot run here, or nil: the
// dovecot and doveadm commands, the dovecot and postfix users, and root.
func Available() error {
	var missing []string
	for _, p := range []string{dovecotCmd, doveadmCmd} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("dovecot: %s not found; %s", strings.Join(missing, ", "), InstallHint)
	}
	for _, u := range []string{"dovecot", "dovenull", "postfix"} {
		if _, err := user.Lookup(u); err != nil {
			return fmt.Errorf("dovecot: no %s user (%v); %s", u, err, InstallHint)
		}
	}
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("dovecot: a private Dovecot must be started as root (uid is %d); %s", uid, InstallHint)
	}
	return nil
}

// Config describes an instance.
type Config struct {
	// Mechanisms are the SASL mechanisms Dovecot offers (auth_mechanisms),
	// e.g. {"CRAM-MD5"} or {"SCRAM-SHA-256"}. Default: PLAIN and LOGIN if
	// there are Users, plus XOAUTH2 and OAUTHBEARER (and PLAIN if
	// OAuth2.Plain) with OAuth2.
	Mechanisms []string
	// Users maps user names to their password (passwd-file passdbs).
	// Names are lower-cased, as Dovecot's default auth_username_format
	// does with what clients send. Neither may hold ':' or a line break.
	Users map[string]string
	// Slots is how many passwords a user may have at once (passdb blocks);
	// default 2, an old and a new one.
	Slots int
	// OAuth2, if set, adds an oauth2 passdb that checks bearer tokens.
	OAuth2 *OAuth2
	// ListenerUser owns SocketPath, with the group of the same name and
	// mode 0660; default "postfix".
	ListenerUser string
	// Debug sets auth_debug = yes: every lookup is logged, bearer tokens
	// included.
	Debug bool
}

// OAuth2 configures the oauth2 passdb, in introspection mode: Dovecot
// POSTs token=... to IntrospectionURL and accepts the token if the answer
// has "active": true and its "sub" equals the user name the client gave.
type OAuth2 struct {
	// IntrospectionURL is the OAuth2 server's introspection endpoint
	// (hydra.Server.IntrospectURL).
	IntrospectionURL string
	// Scope, if set, must be in the introspection answer's "scope".
	Scope string
	// Plain also accepts AUTH PLAIN with the token as the password.
	Plain bool
}

// Server is a running Dovecot.
type Server struct {
	cfg    Config
	dir    string
	slots  int
	cmd    *exec.Cmd
	exited chan struct{}
	gid    int

	mu        sync.Mutex
	passwords map[string][]string
	mtime     time.Time

	stopOnce sync.Once
	stopErr  error
}

// Start starts an instance for one test and stops it when the test ends;
// a test that failed gets the end of Dovecot's log. It fails the test if
// Dovecot cannot run here (see Available) or does not start.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	s, err := start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dovecot log %s (end):\n%s", s.LogFile(), testlib.Tail(s.Log(), 4000))
		}
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

var mechName = regexp.MustCompile(`^[A-Z0-9-]+$`)

func start(cfg Config) (_ *Server, err error) {
	if len(cfg.Users) == 0 && cfg.OAuth2 == nil {
		return nil, errors.New("dovecot: Config needs Users or OAuth2")
	}
	if cfg.OAuth2 != nil && cfg.OAuth2.IntrospectionURL == "" {
		return nil, errors.New("dovecot: OAuth2.IntrospectionURL is required")
	}
	if len(cfg.Mechanisms) == 0 {
		cfg.Mechanisms = defaultMechanisms(cfg)
	}
	for _, m := range cfg.Mechanisms {
		if !mechName.MatchString(m) {
			return nil, fmt.Errorf("dovecot: mechanism %q is not an upper-case SASL name", m)
		}
	}
	if cfg.Slots <= 0 {
		cfg.Slots = 2
	}
	if cfg.ListenerUser == "" {
		cfg.ListenerUser = "postfix"
	}
	grp, err := user.LookupGroup("dovecot")
	if err != nil {
		return nil, fmt.Errorf("dovecot: %w", err)
	}
	gid, _ := strconv.Atoi(grp.Gid)
	// Socket paths must stay under 108 bytes: a short directory in
	// os.TempDir(), not a test's (long) TempDir.
	dir, err := os.MkdirTemp("", "dovecot-")
	if err != nil {
		return nil, fmt.Errorf("dovecot: %w", err)
	}
	s := &Server{cfg: cfg, dir: dir, slots: cfg.Slots, gid: gid, passwords: map[string][]string{}}
	defer func() {
		if err != nil {
			s.Stop() //nolint:errcheck // the start error says more
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil { // the auth process (user dovecot) reads files here
		return nil, fmt.Errorf("dovecot: %w", err)
	}
	for name, pass := range cfg.Users {
		name = strings.ToLower(name)
		if err := checkEntry(name, pass); err != nil {
			return nil, err
		}
		s.passwords[name] = []string{pass}
	}
	if err := s.writePasswd(); err != nil {
		return nil, err
	}
	if err := s.writeConfig(); err != nil {
		return nil, err
	}
	if err := s.run(); err != nil {
		return nil, err
	}
	return s, nil
}

func defaultMechanisms(cfg Config) []string {
	var m []string
	if len(cfg.Users) > 0 || (cfg.OAuth2 != nil && cfg.OAuth2.Plain) {
		m = append(m, "PLAIN")
	}
	if len(cfg.Users) > 0 {
		m = append(m, "LOGIN")
	}
	if cfg.OAuth2 != nil {
		m = append(m, "XOAUTH2", "OAUTHBEARER")
	}
	return m
}

// run starts `dovecot -F` and waits until the auth service answers on
// SocketPath with the configured mechanisms.
func (s *Server) run() error {
	logf, err := os.OpenFile(filepath.Join(s.dir, "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(dovecotCmd, "-F", "-c", s.ConfigFile())
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dovecot: start %s: %w", dovecotCmd, err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.exited) }() //nolint:errcheck // exit status: see the log
	mechs, err := s.handshake(20 * time.Second)
	if err != nil {
		stderr, _ := os.ReadFile(filepath.Join(s.dir, "stderr.log"))
		return fmt.Errorf("dovecot: instance %s: %w\n%s\nlog %s (end):\n%s", s.dir, err, stderr, s.LogFile(), testlib.Tail(s.Log(), 3000))
	}
	for _, m := range s.cfg.Mechanisms {
		if !slices.Contains(mechs, m) {
			return fmt.Errorf("dovecot: instance %s offers %v, not %s\nlog:\n%s", s.dir, mechs, m, testlib.Tail(s.Log(), 3000))
		}
	}
	return nil
}

// handshake connects to SocketPath as an auth client (Dovecot's auth
// protocol 1.2) and returns the mechanisms the server announces.
func (s *Server) handshake(limit time.Duration) ([]string, error) {
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-s.exited:
			return nil, errors.New("dovecot exited")
		default:
		}
		c, err := net.DialTimeout("unix", s.SocketPath(), time.Second)
		if err == nil {
			mechs, herr := authHandshake(c, deadline)
			c.Close()
			return mechs, herr
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("auth socket %s: %w", s.SocketPath(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func authHandshake(c net.Conn, deadline time.Time) ([]string, error) {
	c.SetDeadline(deadline) //nolint:errcheck // a failed read says more
	if _, err := fmt.Fprintf(c, "VERSION\t1\t2\nCPID\t%d\n", os.Getpid()); err != nil {
		return nil, fmt.Errorf("auth handshake: %w", err)
	}
	var mechs []string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		switch f[0] {
		case "MECH":
			mechs = append(mechs, f[1])
		case "DONE":
			return mechs, nil
		}
	}
	return nil, fmt.Errorf("auth handshake: no DONE from the auth service: %v", sc.Err())
}

// SocketPath is the auth socket for Postfix (postfixtest.Config.DovecotSASL).
func (s *Server) SocketPath() string { return filepath.Join(s.dir, "auth-smtpd") }

// Dir is the instance's directory.
func (s *Server) Dir() string { return s.dir }

// ConfigFile is dovecot.conf.
func (s *Server) ConfigFile() string { return filepath.Join(s.dir, "dovecot.conf") }

// LogFile is Dovecot's log_path.
func (s *Server) LogFile() string { return filepath.Join(s.dir, "dovecot.log") }

// Log returns Dovecot's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogFile())
	return string(b)
}

// Mechanisms returns the mechanisms the instance offers.
func (s *Server) Mechanisms() []string { return slices.Clone(s.cfg.Mechanisms) }

// Stop stops the instance (`doveadm stop`), waits for it (killing it after
// 10 s) and removes its directory. It is safe to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Server) stop() error {
	var errs []error
	if s.cmd != nil {
		select {
		case <-s.exited:
		default:
			if out, err := exec.Command(doveadmCmd, "-c", s.ConfigFile(), "stop").CombinedOutput(); err != nil {
				s.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // may be gone
				errs = append(errs, fmt.Errorf("dovecot: doveadm stop: %v %s", err, strings.TrimSpace(string(out))))
			}
			select {
			case <-s.exited:
			case <-time.After(10 * time.Second):
				s.cmd.Process.Kill() //nolint:errcheck // may be gone
				<-s.exited
				errs = append(errs, fmt.Errorf("dovecot: instance %s did not stop in 10 s; killed", s.dir))
			}
		}
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("dovecot: remove %s: %w", s.dir, err))
	}
	return errors.Join(errs...)
}
