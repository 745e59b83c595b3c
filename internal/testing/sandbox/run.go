package sandbox

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options say what the sandboxed command may see besides the read-only
// root file system.
type Options struct {
	// UID and GID run the command as another user (setpriv needs root);
	// -1 keeps the caller's.
	UID, GID int
	// ReadOnly are paths to bind read-only: those under /tmp or a home
	// directory, which the private /tmp and ProtectHome hide.
	ReadOnly []string
	// ReadWrite are paths to bind read-write: the state directory.
	ReadWrite []string
	// Env is the command's whole environment.
	Env []string
}

// Cmd is a command prepared to run in the sandbox.
type Cmd struct {
	*exec.Cmd
	info *os.File // bwrap writes {"child-pid": N} here
}

// Command prepares argv to run in the sandbox the unit describes. Start
// it, then call ChildPID for the sandboxed process's PID.
func (u *Unit) Command(opt Options, argv ...string) (*Cmd, error) {
	if err := u.check(); err != nil {
		return nil, err
	}
	filter, err := u.BuildFilter()
	if err != nil {
		return nil, err
	}
	for _, tool := range []string{"bwrap", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("sandbox: %s is not installed (tools/deps.sh installs it): %w", tool, err)
		}
	}
	seccompR, seccompW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	infoR, infoW, err := os.Pipe()
	if err != nil {
		seccompR.Close()
		seccompW.Close()
		return nil, err
	}
	// The filter is small enough for the pipe's buffer.
	if _, err := seccompW.Write(filter.Prog); err != nil {
		return nil, fmt.Errorf("sandbox: writing the seccomp filter: %w", err)
	}
	seccompW.Close()

	// fd 3: the filter, fd 4: bwrap's info.
	bw := []string{"bwrap", "--seccomp", "3", "--info-fd", "4", "--die-with-parent", "--as-pid-1"}
	if u.Yes("PrivateUsers") {
		bw = append(bw, "--unshare-user")
	}
	if u.Value("ProtectProc") != "" {
		bw = append(bw, "--unshare-pid")
	}
	if u.Yes("PrivateIPC") {
		bw = append(bw, "--unshare-ipc")
	}
	if u.Yes("ProtectHostname") {
		bw = append(bw, "--unshare-uts")
	}
	bw = append(bw, "--ro-bind", "/", "/")
	if u.Yes("ProtectHome") {
		for _, d := range []string{"/home", "/root", "/run/user"} {
			if _, err := os.Stat(d); err == nil {
				bw = append(bw, "--tmpfs", d)
			}
		}
	}
	if u.Yes("PrivateTmp") {
		bw = append(bw, "--tmpfs", "/tmp", "--tmpfs", "/var/tmp")
	}
	if u.Yes("PrivateDevices") {
		bw = append(bw, "--dev", "/dev")
	}
	if u.Value("ProtectProc") != "" {
		bw = append(bw, "--proc", "/proc")
	}
	for _, p := range opt.ReadOnly {
		bw = append(bw, "--ro-bind", p, p)
	}
	for _, p := range opt.ReadWrite {
		bw = append(bw, "--bind", p, p)
	}
	bw = append(bw, "--")
	bw = append(bw, argv...)

	var pre []string
	if opt.UID >= 0 {
		pre = []string{"setpriv", "--reuid=" + strconv.Itoa(opt.UID), "--regid=" + strconv.Itoa(opt.GID), "--clear-groups"}
	} else {
		pre = []string{"setpriv"}
	}
	pre = append(pre, "--bounding-set=-all", "--inh-caps=-all", "--")
	shell := `umask "$1" && ulimit -c "$2" && shift 2 && exec "$@"`
	umask := u.Value("UMask")
	if umask == "" {
		umask = "0022"
	}
	core := u.Value("LimitCORE")
	if core == "" {
		core = "unlimited"
	}
	args := append(pre, "/bin/sh", "-c", shell, "sh", umask, core)
	args = append(args, bw...)

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = opt.Env
	cmd.ExtraFiles = []*os.File{seccompR, infoW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return &Cmd{Cmd: cmd, info: infoR}, nil
}

// ChildPID waits up to d for bwrap to say the PID (in the caller's PID
// namespace) of the sandboxed process. Call it once, after Start.
func (c *Cmd) ChildPID(d time.Duration) (int, error) {
	for _, f := range c.ExtraFiles {
		f.Close() // the child holds its copies
	}
	defer c.info.Close()
	c.info.SetReadDeadline(time.Now().Add(d)) //nolint:errcheck // a pipe supports deadlines
	line, err := bufio.NewReader(c.info).ReadString('}')
	if err != nil {
		return 0, fmt.Errorf("sandbox: no child PID from bwrap: %w", err)
	}
	var info struct {
		ChildPID int `json:"child-pid"`
	}
	if err := json.Unmarshal([]byte(line), &info); err != nil || info.ChildPID == 0 {
		return 0, fmt.Errorf("sandbox: bwrap info %q: %v", line, errors.Join(err, errors.New("no child-pid")))
	}
	return info.ChildPID, nil
}

// CopyExecutable copies the program at src to dst (mode 0755), for a
// sandboxed user who cannot reach src, or a private /tmp that hides it.
func CopyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ProcStatus returns the fields of /proc/PID/status.
func ProcStatus(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out, nil
}
