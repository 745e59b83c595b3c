// Package postfixtest runs private Postfix instances, from Debian's postfix
// package, on loopback: for the interop tests (Postfix as a client relaying
// into sealrelay, and as a relay host that demands SASL AUTH over STARTTLS)
// and for the benchmark (Postfix as a tuned, authenticated smarthost client,
// the contender sealrelay is measured against).
//
// Each Instance has its own config_directory, queue_directory and
// data_directory under a fresh directory, chroot off, smtpd on 127.0.0.1 at
// a port of its own, and its own log file. Any number of instances can run
// at once. Stop ends every process of the instance, waiting for them and
// killing stragglers, and removes the directory.
//
// Start needs no test, so the benchmark runs Postfix too; StartT is Start
// for a test.
//
// What Postfix 3.7 (Debian 12) needs for a private instance, found by trying:
//
//   - Root. `postfix -c DIR start` as root accepts any DIR: the check that
//     DIR is listed in alternate_config_directories (or
//     multi_instance_directories) of the default /etc/postfix/main.cf only
//     guards (by Postfix's documentation) the set-gid commands (postdrop,
//     postqueue, so sendmail -C) run by other users. Debian's "No
//     configuration" install has no /etc/postfix/main.cf at all, and that
//     is fine. Mail is injected over SMTP, never with sendmail, so postdrop
//     is never involved.
//   - queue_directory may be owned by root; `postfix start` (its
//     check-fatal step, post-install create-missing) creates the queue
//     subdirectories with the right owners and modes. data_directory must
//     be owned by mail_owner (postfix), or master cannot create master.lock.
//     Every parent directory must be searchable by the postfix user: the
//     instance directory is made 0755 (os.MkdirTemp makes 0700).
//   - maillog_file must start with one of maillog_file_prefixes (default
//     /var, /dev/stdout), else every command dies with "maillog_file value
//     ... does not match any prefix". The log is written by postlogd, which
//     needs a "postlog unix-dgram" line in master.cf.
//   - The postfix command reports errors only to the log (and to stderr
//     only when stderr is a terminal): on failure, read the log.
//   - `postfix start` daemonizes master, which calls setsid: every process
//     of the instance has master's PID as its session ID, which is how Stop
//     finds them. `postfix stop` returns before they are gone.
//   - Debian's Postfix reads the Cyrus SASL server config from
//     $config_directory/sasl/<smtpd_sasl_path>.conf (here etc/sasl/smtpd.conf),
//     whatever cyrus_sasl_config_path says (set it there as well). Without
//     that file Cyrus falls back to /etc/sasldb2 and every mechanism it has.
//     The sasldb file (saslpasswd2 -f FILE -c -p -u DOMAIN USER, password on
//     stdin) must be readable by the postfix user; clients log in as
//     USER@DOMAIN.
//   - The SMTP client's default smtp_sasl_security_options is "noplaintext,
//     noanonymous", which refuses PLAIN and LOGIN: set it to noanonymous.
//   - smtpd logs an authenticated client on the queue ID's client= line:
//     "QUEUEID: client=localhost[127.0.0.1], sasl_method=PLAIN,
//     sasl_username=USER@DOMAIN"; the message's ID on cleanup's
//     "QUEUEID: message-id=<...>" line; and each session's commands on its
//     "disconnect from ... ehlo=2 starttls=1 auth=0/1 quit=1" line. With
//     smtpd_relay_restrictions = permit_sasl_authenticated, reject an
//     unauthenticated RCPT gets "554 5.7.1 <rcpt>: Recipient address
//     rejected: Access denied" (MAIL itself is accepted).
//   - The password map of the SMTP client (smtp_sasl_password_maps) can be
//     texthash: (no postmap step) and readable by root only: smtp opens it
//     before dropping privileges. So is smtpd's TLS key.
//   - smtp_tls_connection_reuse needs a tlsproxy line in master.cf; the
//     log then shows conn_use=N on status=sent lines.
//   - alias_maps defaults to a NIS map and /etc/aliases.db, which log errors
//     on every session; both are emptied (nothing is delivered locally).
package postfixtest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// Commands the package runs; Available checks them.
const (
	postfixCmd  = "/usr/sbin/postfix"
	saslpasswd2 = "/usr/sbin/saslpasswd2"
	daemonDir   = "/usr/lib/postfix/sbin"
)

// InstallHint says how to get what Available misses.
const InstallHint = "make test installs Postfix and Cyrus SASL (tools/deps.sh: postfix, sasl2-bin, libsasl2-modules, libsasl2-modules-db); run it as root"

// Available reports why Postfix instances cannot run here, or nil: the
// postfix and saslpasswd2 commands, the postfix user and root are needed.
func Available() error {
	return available([]string{postfixCmd, saslpasswd2, filepath.Join(daemonDir, "master")}, os.Geteuid())
}

// available is Available with the files and the effective UID as
// arguments, so that a test can see what a machine without Postfix gets.
func available(files []string, euid int) error {
	var missing []string
	for _, p := range files {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("postfixtest: %s not found; %s", strings.Join(missing, ", "), InstallHint)
	}
	if _, err := user.Lookup("postfix"); err != nil {
		return fmt.Errorf("postfixtest: no postfix user (%v); %s", err, InstallHint)
	}
	if euid != 0 {
		return fmt.Errorf("postfixtest: a private Postfix instance must be started as root (uid is %d); %s", euid, InstallHint)
	}
	return nil
}

// Config describes an instance. Postfix always relays every message to
// Relayhost; what differs is how it talks to the relayhost (TLS, AUTH) and
// what its own smtpd demands from clients (SASL users).
type Config struct {
	// Port is smtpd's port on 127.0.0.1; 0 picks a free one.
	Port int
	// Hostname is myhostname; default "postfix.test".
	Hostname string

	// Relayhost is the host:port Postfix relays all mail to (required).
	Relayhost string
	// RelayCAPEM, if set, makes the SMTP client require TLS
	// (smtp_tls_security_level = encrypt) with this CA as smtp_tls_CAfile.
	// Without it the client does not use TLS.
	RelayCAPEM []byte
	// RelayUser and RelayPassword, if set, make the SMTP client
	// authenticate (smtp_sasl_auth_enable) with a password map. The map is
	// a file readable by root only (Postfix opens it before dropping
	// privileges) and goes away with the instance directory.
	RelayUser, RelayPassword string

	// SASLUsers, if not empty, turns smtpd into a relay host that relays
	// only for clients that authenticated (smtpd_relay_restrictions =
	// permit_sasl_authenticated, reject) with AUTH PLAIN or LOGIN, offered
	// only after STARTTLS (smtpd_tls_auth_only), checked by Cyrus SASL
	// against a sasldb file. Keys are "user@domain"; TLSCert is required.
	// Without SASLUsers, DovecotSASL or ClientCAPEM, smtpd relays for
	// 127.0.0.0/8 (mynetworks).
	SASLUsers map[string]string
	// DovecotSASL, if set, is the absolute path of a Dovecot auth socket
	// (a unix_listener the postfix user may use, as internal/testing/peers/dovecot
	// makes): smtpd then checks AUTH through Dovecot (smtpd_sasl_type =
	// dovecot) with the mechanisms Dovecot offers, only after STARTTLS, and
	// relays only for clients that authenticated. line_length_limit is
	// raised to 8192 so that an AUTH line with a bearer token fits.
	// Dovecot must be running before Start. TLSCert is required;
	// SASLUsers must be empty.
	DovecotSASL string
	// ClientCAPEM, if set, makes smtpd ask TLS clients for a certificate
	// (smtpd_tls_ask_ccert) and verify it against this CA
	// (smtpd_tls_CAfile): a client whose certificate verifies may relay
	// without AUTH (permit_tls_all_clientcerts); any other client only
	// after AUTH (with SASLUsers or DovecotSASL), else never. TLSCert is
	// required.
	ClientCAPEM []byte
	// TLSCert is smtpd's certificate and key (STARTTLS offered when set).
	TLSCert *tls.Certificate

	// Tuned applies what a careful operator sets for throughput on a
	// smarthost client (see TunedParams); the durability of the queue is
	// Postfix's default (queue files are fsynced before the 250).
	Tuned bool
	// Params are extra main.cf parameters; they override everything else.
	Params map[string]string
	// BaseDir is where the instance directory is made; default
	// os.TempDir(). Every directory above it must be searchable by the
	// postfix user.
	BaseDir string
	// Keep leaves the instance directory in place after Stop, for
	// debugging and profiling.
	Keep bool
	// Logger receives the instance's lifecycle messages; default discards.
	Logger *slog.Logger
}

// TunedParams are the main.cf settings of Config.Tuned, for a smarthost
// client sending everything to one relay it trusts.
var TunedParams = map[string]string{
	// Up to 20 parallel deliveries to the relayhost, from the start (no
	// slow start for a relay we know).
	"default_destination_concurrency_limit": "20",
	"initial_destination_concurrency":       "20",
	// Keep TLS connections to the relayhost open and reuse them: tlsproxy
	// holds the TLS state, scache the connections; cache them even when
	// the queue is not backed up.
	"smtp_tls_connection_reuse":         "yes",
	"smtp_connection_cache_on_demand":   "yes",
	"smtp_tls_session_cache_database":   "btree:${data_directory}/smtp_scache",
	"smtp_connection_cache_time_limit":  "10s",
	"smtp_connection_reuse_count_limit": "0",
	"smtp_connection_reuse_time_limit":  "300s",
	// No reverse lookup of the (loopback) clients; TLS logging at its
	// default (nothing per connection).
	"smtpd_peername_lookup": "no",
	"smtp_tls_loglevel":     "0",
	// Room for 100 client sessions plus 20 deliveries, and no per-client
	// limits on the local applications. in_flow_delay (smtpd slows down
	// when the queue manager falls behind) stays on: it protects the queue.
	"default_process_limit":               "300",
	"smtpd_client_connection_count_limit": "0",
	"smtpd_client_connection_rate_limit":  "0",
	"smtpd_client_message_rate_limit":     "0",
}

// Instance is a running Postfix.
type Instance struct {
	cfg    Config
	log    *slog.Logger
	dir    string
	addr   string
	master int

	stopOnce sync.Once
	stopErr  error
}

// Start creates a private instance and starts it with `postfix -c DIR
// start`. When Port is 0 and the picked port is taken before Postfix binds
// it, Start tries again with another.
func Start(cfg Config) (*Instance, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if cfg.Relayhost == "" {
		return nil, errors.New("postfixtest: Config.Relayhost is required")
	}
	if _, _, err := net.SplitHostPort(cfg.Relayhost); err != nil {
		return nil, fmt.Errorf("postfixtest: relayhost %q: %w", cfg.Relayhost, err)
	}
	if err := checkAuth(cfg); err != nil {
		return nil, err
	}
	if (cfg.RelayUser == "") != (cfg.RelayPassword == "") {
		return nil, errors.New("postfixtest: RelayUser and RelayPassword go together")
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "postfix.test"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tries := 1
	if cfg.Port == 0 {
		tries = 3
	}
	var err error
	for range tries {
		var p *Instance
		if p, err = start(cfg); err == nil {
			return p, nil
		}
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	return nil, err
}

var errAddrInUse = errors.New("address in use")

func start(cfg Config) (_ *Instance, err error) {
	port := cfg.Port
	if port == 0 {
		if port, err = testlib.FreePort(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp(cfg.BaseDir, "postfixtest-")
	if err != nil {
		return nil, fmt.Errorf("postfixtest: %w", err)
	}
	p := &Instance{cfg: cfg, log: cfg.Logger.With("postfix", dir), dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	defer func() {
		if err != nil {
			p.Stop() //nolint:errcheck // the start error says more
		}
	}()
	if err := p.writeFiles(port); err != nil {
		return nil, err
	}
	if out, err := p.postfix("start"); err != nil {
		logTail := p.logTail(20)
		if strings.Contains(logTail, "Address already in use") {
			return nil, fmt.Errorf("postfixtest: start on %s: %w", p.addr, errAddrInUse)
		}
		return nil, fmt.Errorf("postfixtest: postfix -c %s start: %v %s\nlog %s:\n%s", p.ConfigDir(), err, out, p.LogFile(), logTail)
	}
	if p.master, err = p.readMasterPID(); err != nil {
		return nil, err
	}
	// master -w returns once the daemon is initialized, so smtpd's socket
	// is bound: a connection proves it is this instance that answers.
	c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("postfixtest: instance %s started but %s does not answer: %w\nlog:\n%s", dir, p.addr, err, p.logTail(20))
	}
	c.Close()
	p.log.Debug("postfix started", "addr", p.addr, "master", p.master)
	return p, nil
}

// Addr is smtpd's host:port on 127.0.0.1.
func (p *Instance) Addr() string { return p.addr }

// Dir is the instance's directory.
func (p *Instance) Dir() string { return p.dir }

// ConfigDir is the config_directory (main.cf, master.cf).
func (p *Instance) ConfigDir() string { return filepath.Join(p.dir, "etc") }

// LogFile is the maillog_file.
func (p *Instance) LogFile() string { return filepath.Join(p.dir, "maillog") }

// Log returns the log so far ("" if there is none yet).
func (p *Instance) Log() string {
	b, err := os.ReadFile(p.LogFile())
	if err != nil {
		return ""
	}
	return string(b)
}

// logTail returns the last n lines of the log.
func (p *Instance) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitLog waits until the log has a line containing substr and returns that
// line; the error holds the end of the log.
func (p *Instance) WaitLog(substr string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range strings.Split(p.Log(), "\n") {
			if strings.Contains(l, substr) {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("postfixtest: no log line with %q after %s; log %s ends:\n%s", substr, timeout, p.LogFile(), p.logTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PIDs returns the processes of the instance: master and its children
// (master's session).
func (p *Instance) PIDs() []int {
	if p.master <= 0 {
		return nil
	}
	return sessionMembers(p.master)
}

// Stop stops the instance (`postfix -c DIR stop`), waits until every one of
// its processes is gone (killing those still there after 10 s) and removes
// its directory unless Config.Keep. It is safe to call more than once.
func (p *Instance) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Instance) stop() error {
	var errs []error
	if p.master == 0 {
		// Start failed after `postfix start`: a master may run anyway.
		p.master, _ = p.readMasterPID()
	}
	if p.master > 0 {
		if len(p.PIDs()) > 0 {
			if out, err := p.postfix("stop"); err != nil {
				errs = append(errs, fmt.Errorf("postfix -c %s stop: %v %s", p.ConfigDir(), err, out))
			}
		}
		if !waitGone(p.master, 10*time.Second) {
			left := p.PIDs()
			p.log.Warn("postfix processes still running after stop; killing them", "pids", left)
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck // may be gone already
			}
			if !waitGone(p.master, 5*time.Second) {
				errs = append(errs, fmt.Errorf("postfix instance %s: processes %v survive SIGKILL", p.dir, p.PIDs()))
			}
		}
	}
	if p.cfg.Keep {
		p.log.Info("kept postfix instance directory", "dir", p.dir)
	} else if err := os.RemoveAll(p.dir); err != nil {
		errs = append(errs, fmt.Errorf("postfixtest: remove %s: %w", p.dir, err))
	}
	return errors.Join(errs...)
}

// postfix runs `postfix -c CONFIG_DIR args...`.
func (p *Instance) postfix(args ...string) (string, error) {
	cmd := exec.Command(postfixCmd, append([]string{"-c", p.ConfigDir()}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (p *Instance) readMasterPID() (int, error) {
	path := filepath.Join(p.dir, "queue", "pid", "master.pid")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("postfixtest: read master PID: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("postfixtest: %s holds no PID: %q", path, b)
	}
	return pid, nil
}

// writeFiles lays out the instance directory.
func (p *Instance) writeFiles(port int) error {
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	etc, queue, data, sasl := p.ConfigDir(), filepath.Join(p.dir, "queue"), filepath.Join(p.dir, "data"), filepath.Join(p.ConfigDir(), "sasl")
	if err := os.Chmod(p.dir, 0o755); err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	for _, d := range []string{etc, queue, data, sasl} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("postfixtest: %w", err)
		}
	}
	if err := os.Chown(data, uid, -1); err != nil {
		return fmt.Errorf("postfixtest: data_directory %s: %w", data, err)
	}

	params := map[string]string{
		"compatibility_level":      "3.6",
		"queue_directory":          queue,
		"data_directory":           data,
		"mail_owner":               "postfix",
		"setgid_group":             "postdrop",
		"myhostname":               p.cfg.Hostname,
		"mydestination":            "",
		"alias_maps":               "",
		"alias_database":           "",
		"local_recipient_maps":     "",
		"inet_interfaces":          "127.0.0.1",
		"inet_protocols":           "ipv4",
		"mynetworks":               "127.0.0.0/8",
		"maillog_file":             p.LogFile(),
		"maillog_file_prefixes":    p.dir,
		"syslog_name":              "postfix-" + filepath.Base(p.dir),
		"relayhost":                relayhost(p.cfg.Relayhost),
		"smtpd_relay_restrictions": "permit_mynetworks, reject",
		"smtp_tls_security_level":  "none",
		"smtp_tls_loglevel":        "1",
		"smtpd_tls_loglevel":       "1",
		"biff":                     "no",
		"append_dot_mydomain":      "no",
		"smtputf8_enable":          "no",
	}
	if c := p.cfg.TLSCert; c != nil {
		certFile, keyFile := filepath.Join(etc, "smtpd-cert.pem"), filepath.Join(etc, "smtpd-key.pem")
		if err := writeCert(certFile, keyFile, c); err != nil {
			return err
		}
		params["smtpd_tls_security_level"] = "may"
		params["smtpd_tls_cert_file"] = certFile
		params["smtpd_tls_key_file"] = keyFile
	}
	if err := p.smtpdAuth(params, sasl, uid); err != nil {
		return err
	}
	if len(p.cfg.RelayCAPEM) > 0 {
		caFile := filepath.Join(etc, "relay-ca.pem")
		if err := os.WriteFile(caFile, p.cfg.RelayCAPEM, 0o644); err != nil {
			return fmt.Errorf("postfixtest: %w", err)
		}
		params["smtp_tls_security_level"] = "encrypt"
		params["smtp_tls_CAfile"] = caFile
	}
	if p.cfg.RelayUser != "" {
		// texthash: read at process start (as root, before privileges are
		// dropped), no postmap step. Only root can read the file.
		mapFile := filepath.Join(etc, "sasl_passwd")
		line := relayhost(p.cfg.Relayhost) + " " + p.cfg.RelayUser + ":" + p.cfg.RelayPassword + "\n"
		if err := os.WriteFile(mapFile, []byte(line), 0o600); err != nil {
			return fmt.Errorf("postfixtest: %w", err)
		}
		maps.Copy(params, map[string]string{
			"smtp_sasl_auth_enable":          "yes",
			"smtp_sasl_password_maps":        "texthash:" + mapFile,
			"smtp_sasl_security_options":     "noanonymous",
			"smtp_sasl_tls_security_options": "noanonymous",
		})
	}
	if p.cfg.Tuned {
		maps.Copy(params, TunedParams)
		params["smtp_connection_cache_destinations"] = relayhost(p.cfg.Relayhost)
	}
	maps.Copy(params, p.cfg.Params)

	var main bytes.Buffer
	main.WriteString("# private Postfix instance written by internal/testing/peers/postfixtest\n")
	for _, k := range slices.Sorted(maps.Keys(params)) {
		fmt.Fprintf(&main, "%s = %s\n", k, params[k])
	}
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), main.Bytes(), 0o644); err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	master := fmt.Sprintf("127.0.0.1:%d inet n - n - - smtpd\n", port) + masterCF
	if err := os.WriteFile(filepath.Join(etc, "master.cf"), []byte(master), 0o644); err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	return nil
}

// masterCF is Debian's master.cf with chroot off everywhere, less the
// services nothing here uses (local delivery, pipe transports), plus
// tlsproxy (for smtp_tls_connection_reuse) and postlogd (for maillog_file).
const masterCF = `pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
tlsproxy  unix  -       -       n       -       0       tlsproxy
postlog   unix-dgram n  -       n       -       1       postlogd
`

// relayhost writes host:port as Postfix's "[host]:port" (no MX lookup).
func relayhost(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return "[" + host + "]:" + port
}

// writeCert writes c's leaf as PEM to certFile and its key (PKCS #8) to
// keyFile, readable by root only: smtpd loads it before dropping privileges.
func writeCert(certFile, keyFile string, c *tls.Certificate) error {
	var certPEM []byte
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return fmt.Errorf("postfixtest: smtpd TLS key: %w", err)
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	return nil
}
