package rig

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// GoCommand returns the go command: $GOROOT/bin/go if GOROOT is set, else
// the one on PATH, else the machine image's /usr/local/go/bin/go.
func GoCommand() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// BuildBinary builds cmd/sealrelay into dir and returns the binary's path.
// It runs GoCommand from inside the module.
func BuildBinary(dir string) (string, error) {
	bin := filepath.Join(dir, "sealrelay")
	cmd := exec.Command(GoCommand(), "build", "-o", bin, "github.com/sealrelay/sealrelay/cmd/sealrelay")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("rig: building sealrelay: %v\n%s", err, out)
	}
	return bin, nil
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary builds cmd/sealrelay once per process, into a directory of its
// own under the system's temporary directory, and returns its path.
func Binary() (string, error) {
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sealrelay-bin-")
		if err != nil {
			binErr = fmt.Errorf("rig: %w", err)
			return
		}
		binPath, binErr = BuildBinary(dir)
	})
	return binPath, binErr
}

// Process is `sealrelay serve` running as a child process, in a process
// group of its own: a Ctrl-C meant for the caller is the caller's to
// handle (and to pass on with Stop).
type Process struct {
	cmd   *exec.Cmd
	done  chan struct{}
	addrc chan string
	addr  string
	mu    sync.Mutex
	logs  []byte // the last maxLogs bytes or so of the log
}

// maxLogs bounds what Logs keeps: a benchmark run logs a line per message.
const maxLogs = 1 << 20

// listeningRE finds the "listening" log line, in the text and the JSON
// log format.
var listeningRE = regexp.MustCompile(`msg=listening address=(\S+)|"msg":"listening","address":"([^"]+)"`)

// Launch runs `bin serve -c config` with env added to its environment,
// and returns at once. Its log (stderr) is kept, and copied line by line
// to logw if not nil.
func Launch(bin, config string, logw io.Writer, env ...string) (*Process, error) {
	p := &Process{done: make(chan struct{}), addrc: make(chan string, 1)}
	p.cmd = exec.Command(bin, "serve", "-c", config)
	if len(env) > 0 {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("rig: start %s: %w", bin, err)
	}
	go p.readLog(stderr, logw)
	return p, nil
}

// readLog keeps the log, watches it for the listening line, and reaps the
// process at its end.
func (p *Process) readLog(stderr io.Reader, logw io.Writer) {
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
			case p.addrc <- m[1] + m[2]:
			default:
			}
		}
	}
	io.Copy(io.Discard, stderr) //nolint:errcheck // drain after a scan error
	p.cmd.Wait()                //nolint:errcheck // the exit status is in ProcessState
	close(p.done)
}

// WaitListening waits up to d until the agent logs the address it listens
// on. It fails if the agent exits first; it does not stop the agent.
func (p *Process) WaitListening(d time.Duration) error {
	if p.addr != "" {
		return nil
	}
	select {
	case p.addr = <-p.addrc:
		return nil
	case <-p.done:
		return fmt.Errorf("rig: sealrelay exited before listening: %v\n%s", p.cmd.ProcessState, p.Logs())
	case <-time.After(d):
		return fmt.Errorf("rig: sealrelay not listening after %s\n%s", d, p.Logs())
	}
}

// StartProcess launches `bin serve -c config` (Launch) and waits up to
// 30 s until it listens; if it does not, it is killed.
func StartProcess(bin, config string, logw io.Writer) (*Process, error) {
	p, err := Launch(bin, config, logw)
	if err != nil {
		return nil, err
	}
	if err := p.WaitListening(30 * time.Second); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// Addr is the address the agent listens on, once WaitListening returned.
func (p *Process) Addr() string { return p.addr }

// PID is the agent's process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Cmd is the running command, to signal it or, once Done, read its
// ProcessState.
func (p *Process) Cmd() *exec.Cmd { return p.cmd }

// Done is closed when the agent has exited and its log is read to the end.
func (p *Process) Done() <-chan struct{} { return p.done }

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
