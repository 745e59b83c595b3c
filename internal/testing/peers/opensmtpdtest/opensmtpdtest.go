// Package opensmtpdtest runs private OpenSMTPD instances for tests: a real
// relay host that is stricter than Postfix in ways that matter to a client
// (it answers a second EHLO on one session with 503 5.5.1 "Already
// identified").
//
// OpenSMTPD conflicts with Postfix as a Debian package, so it is never
// installed: tools/deps.sh downloads Debian's package (6.8.0p2) and unpacks
// it into the cache, ${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}/opensmtpd-6.8.0p2,
// and creates the opensmtpd and opensmtpq users its daemon drops to. An
// instance runs that unpacked smtpd as root in a mount namespace of its own
// (unshare -m), where its compiled-in directories (/var/spool/smtpd, the
// chroot /var/lib/opensmtpd/empty, its control socket in /run) are
// directories of the instance, bound over the system's.
//
// Facts that shape it:
//   - 6.8.0p2 cannot complete a TLS handshake with Debian 12's OpenSSL 3,
//     so an instance listens in plaintext and offers no AUTH.
//   - A recipient that no rule matches gets 550 at RCPT; an instance
//     accepts mail for one domain and relays it, in plaintext, to a
//     relayhost (a recording upstream, say).
//
// The package does not import "testing".
package opensmtpdtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// Version is the OpenSMTPD release tools/deps.sh unpacks.
const Version = "6.8.0p2"

// InstallHint says how to get what Available misses.
const InstallHint = "make test unpacks Debian's opensmtpd package into the cache and creates its users (tools/deps.sh); run it as root"

// Root returns where tools/deps.sh unpacks the package.
func Root() string { return testlib.CachePath("opensmtpd-" + Version) }

// smtpd is the daemon in the unpacked package.
func smtpd() string { return filepath.Join(Root(), "usr", "sbin", "smtpd") }

// Available reports why an instance cannot run here, or nil.
func Available() error {
	if _, err := os.Stat(smtpd()); err != nil {
		return fmt.Errorf("opensmtpdtest: %s not found; %s", smtpd(), InstallHint)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return fmt.Errorf("opensmtpdtest: unshare (util-linux) not found: %w", err)
	}
	for _, u := range []string{"opensmtpd", "opensmtpq"} {
		if _, err := user.Lookup(u); err != nil {
			return fmt.Errorf("opensmtpdtest: no %s user (%v); %s", u, err, InstallHint)
		}
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("opensmtpdtest: smtpd must be started as root (uid is %d); %s", os.Geteuid(), InstallHint)
	}
	return nil
}

// Config describes an instance.
type Config struct {
	// Domain is the recipient domain it accepts (and relays); other
	// recipients get 550. Default "example.net".
	Domain string
	// Relayhost is the host:port it relays accepted mail to, in plaintext
	// (required).
	Relayhost string
	// Hostname is its name in the greeting; default "opensmtpd.test".
	Hostname string
}

// Instance is a running OpenSMTPD.
type Instance struct {
	// Addr is the host:port it listens on (127.0.0.1).
	Addr string

	dir  string
	cmd  *exec.Cmd
	log  *testlib.LogBuf
	done chan struct{}
	once sync.Once
}

// Start starts an instance and waits until it takes connections. Close
// stops it and removes its directory.
func Start(cfg Config) (*Instance, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if cfg.Relayhost == "" {
		return nil, errors.New("opensmtpdtest: Config.Relayhost is required")
	}
	if cfg.Domain == "" {
		cfg.Domain = "example.net"
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "opensmtpd.test"
	}
	var err error
	for range 3 { // the port picked may be taken before smtpd binds it
		var in *Instance
		if in, err = start(cfg); err == nil {
			return in, nil
		}
	}
	return nil, err
}

func start(cfg Config) (*Instance, error) {
	port, err := testlib.FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "opensmtpd-")
	if err != nil {
		return nil, fmt.Errorf("opensmtpdtest: %w", err)
	}
	in := &Instance{Addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, log: &testlib.LogBuf{}, done: make(chan struct{})}
	fail := func(err error) (*Instance, error) {
		in.Close()
		return nil, fmt.Errorf("opensmtpdtest: %w\n%s", err, in.Log())
	}
	// smtpd checks that these belong to root and that others cannot write
	// them; the chroot must be empty.
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{"spool", 0o755}, {"run", 0o755}, {"lib", 0o755}, {"lib/opensmtpd", 0o755}, {"lib/opensmtpd/empty", 0o711}} {
		p := filepath.Join(dir, d.path)
		if err := os.Mkdir(p, d.mode); err != nil {
			return fail(err)
		}
		if err := os.Chmod(p, d.mode); err != nil {
			return fail(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	conf := filepath.Join(dir, "smtpd.conf")
	text := fmt.Sprintf("listen on 127.0.0.1 port %d hostname %q\n"+
		"action \"relay\" relay host smtp://%s\n"+
		"match from local for domain %q action \"relay\"\n", port, cfg.Hostname, cfg.Relayhost, cfg.Domain)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return fail(err)
	}
	script := `set -e
mount --bind "$1/spool" /var/spool
mount --bind "$1/run" /run
mount --bind "$1/lib" /var/lib
exec "$2" -d -f "$1/smtpd.conf"`
	in.cmd = exec.Command("unshare", "-m", "--propagation", "private", "/bin/sh", "-c", script, "sh", dir, smtpd())
	in.cmd.Stdout, in.cmd.Stderr = in.log, in.log
	in.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := in.cmd.Start(); err != nil {
		return fail(err)
	}
	go func() { in.cmd.Wait(); close(in.done) }() //nolint:errcheck // the log says why it ended
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", in.Addr, time.Second)
		if err == nil {
			c.Close()
			return in, nil
		}
		select {
		case <-in.done:
			return fail(errors.New("smtpd exited before it listened"))
		default:
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("smtpd does not listen on %s after 10s", in.Addr))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log returns what smtpd logged (it runs with -d: to stderr).
func (in *Instance) Log() string { return in.log.String() }

// Close stops the instance (SIGTERM to its process group, SIGKILL after
// 5 s) and removes its directory.
func (in *Instance) Close() error {
	in.once.Do(func() {
		if in.cmd != nil && in.cmd.Process != nil {
			syscall.Kill(-in.cmd.Process.Pid, syscall.SIGTERM) //nolint:errcheck // it may be gone
			select {
			case <-in.done:
			case <-time.After(5 * time.Second):
				syscall.Kill(-in.cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // it may be gone
				<-in.done
			}
		}
		os.RemoveAll(in.dir)
	})
	return nil
}
