// Package rig is sealrelay on disk, for the tests and the benchmark: a
// setup (server key, recipient list, age-sealed credential file, config)
// and the built sealrelay binary run as a child process.
//
// The package does not import "testing".
package rig

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

// CredentialName is the entry of the sealed credential file that the
// written config's relay uses.
const CredentialName = "upstream"

// Options describe a sealrelay setup relaying to one relay host.
type Options struct {
	// Relay is the relay host's host:port (required).
	Relay string
	// Auth is the relay's auth policy: required (default), enabled,
	// disabled.
	Auth string
	// User and Password are sealed into credentials.age as entry
	// CredentialName (required).
	User, Password string
	// CAPEM is the relay's CA, written to ca_file (required: the relay is
	// reached with STARTTLS and verified).
	CAPEM []byte
	// ServerName is the TLS name of the relay; default "localhost".
	ServerName string
	// Listen is the listener's address; default "127.0.0.1:0".
	Listen string
	// MaxConnections is the relay's max_connections; 0 keeps the default.
	MaxConnections int
	// ListenExtra is added to the [listen] table verbatim (more keys, one
	// per line).
	ListenExtra string
	// Extra is appended to sealrelay.toml verbatim (more tables).
	Extra string
}

// Setup is a sealrelay configuration written to Dir.
type Setup struct {
	Dir    string
	Config string // Dir/sealrelay.toml
}

// WriteSetup writes, in dir: identity.txt (a new server key, 0600),
// recipients.txt (its public key), credentials.age (User and Password
// sealed to that list; the password is in no other file), relay-ca.pem and
// sealrelay.toml with the spool under dir/data.
func WriteSetup(dir string, o Options) (*Setup, error) {
	if o.Relay == "" || o.User == "" || o.Password == "" || len(o.CAPEM) == 0 {
		return nil, errors.New("rig: Options.Relay, User, Password and CAPEM are required")
	}
	if o.Auth == "" {
		o.Auth = "required"
	}
	if o.ServerName == "" {
		o.ServerName = "localhost"
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	s := &Setup{Dir: dir, Config: filepath.Join(dir, "sealrelay.toml")}
	identity := filepath.Join(dir, "identity.txt")
	pub, err := keys.WriteNew(identity, false)
	if err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	recipients := filepath.Join(dir, "recipients.txt")
	if err := os.WriteFile(recipients, []byte("# rig server\n"+pub+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	rl, err := keys.LoadRecipients(recipients)
	if err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	creds := filepath.Join(dir, "credentials.age")
	if err := agefile.Write(creds, []secrets.Credential{secrets.NewCredential(CredentialName, o.User, o.Password, "")}, rl); err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	caFile := filepath.Join(dir, "relay-ca.pem")
	if err := os.WriteFile(caFile, o.CAPEM, 0o644); err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	maxConns := ""
	if o.MaxConnections > 0 {
		maxConns = fmt.Sprintf("max_connections = %d\n", o.MaxConnections)
	}
	cfg := fmt.Sprintf(`hostname = "sealrelay.test"
data_dir = %q

[listen]
address = %q
%s
[[relay]]
name = "upstream"
address = %q
tls = "starttls"
auth = %q
credential = %q
ca_file = %q
server_name = %q
%s
[credentials]
source = "age"
identity = %q
file = %q
%s`, filepath.Join(dir, "data"), o.Listen, o.ListenExtra, o.Relay, o.Auth, CredentialName, caFile, o.ServerName, maxConns,
		identity, creds, o.Extra)
	if err := os.WriteFile(s.Config, []byte(cfg), 0o644); err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	return s, nil
}

// BuildBinary builds cmd/sealrelay into dir and returns the binary's path.
// It runs the go command found as $GOROOT/bin/go or on PATH, from inside
// the module.
func BuildBinary(dir string) (string, error) {
	goCmd := "go"
	if root := os.Getenv("GOROOT"); root != "" {
		if _, err := os.Stat(filepath.Join(root, "bin", "go")); err == nil {
			goCmd = filepath.Join(root, "bin", "go")
		}
	}
	bin := filepath.Join(dir, "sealrelay")
	cmd := exec.Command(goCmd, "build", "-o", bin, "github.com/sealrelay/sealrelay/cmd/sealrelay")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("rig: building sealrelay: %v\n%s", err, out)
	}
	return bin, nil
}

// Process is `sealrelay serve` running as a child process.
type Process struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	mu   sync.Mutex
	logs []byte // the last maxLogs bytes or so of the log
}

// maxLogs bounds what Logs keeps: a benchmark run logs a line per message.
const maxLogs = 1 << 20

var listeningRE = regexp.MustCompile(`msg=listening address=(\S+)`)

// StartProcess runs `bin serve -c config`, copies its log (stderr) to logw
// if not nil, and waits up to 30 s until it logs the address it listens on.
func StartProcess(bin, config string, logw io.Writer) (*Process, error) {
	p := &Process{done: make(chan struct{})}
	p.cmd = exec.Command(bin, "serve", "-c", config)
	// Its own process group: a Ctrl-C meant for the caller is the
	// caller's to handle (and to pass on with Stop).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("rig: start %s: %w", bin, err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs = append(append(p.logs, line...), '\n')
			if len(p.logs) > maxLogs {
				p.logs = append(p.logs[:0], p.logs[len(p.logs)-maxLogs/2:]...)
			}
			p.mu.Unlock()
			if logw != nil {
				fmt.Fprintln(logw, line)
			}
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr) //nolint:errcheck // drain after a scan error
		p.cmd.Wait()                //nolint:errcheck // the exit status is in ProcessState
		close(p.done)
	}()
	select {
	case p.addr = <-addrc:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("rig: sealrelay exited before listening: %v\n%s", p.cmd.ProcessState, p.Logs())
	case <-time.After(30 * time.Second):
		p.Kill()
		return nil, fmt.Errorf("rig: sealrelay not listening after 30s\n%s", p.Logs())
	}
}

// Addr is the address the agent listens on.
func (p *Process) Addr() string { return p.addr }

// PID is the agent's process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Logs returns what the agent logged so far.
func (p *Process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.logs)
}

// Stop sends SIGTERM (the agent drains) and waits until ctx ends, then
// kills it. It returns the exit error, if any.
func (p *Process) Stop(ctx context.Context) error {
	p.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // may have exited
	select {
	case <-p.done:
	case <-ctx.Done():
		p.Kill()
	}
	if st := p.cmd.ProcessState; st != nil && !st.Success() {
		return fmt.Errorf("rig: sealrelay exited with %v", st)
	}
	return nil
}

// Kill kills the agent with SIGKILL and waits for it.
func (p *Process) Kill() {
	p.cmd.Process.Kill() //nolint:errcheck // may have exited
	<-p.done
}
