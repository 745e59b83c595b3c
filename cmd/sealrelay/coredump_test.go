package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// The tests here run the built binary with secrets in memory and look at
// what the kernel would let out of it: core files and, through
// dumpability, ptrace and /proc by processes of the same user.

// nobody is the user the children run as when the tests run as root, so
// that /proc shows their dumpability (see dumpable).
const nobody = 65534

// coreRig is a rig whose files and directory the child's user owns.
type coreRig struct {
	dir, cfg string
	up       *upstream.Server
	uid      int // the children's user
}

// newCoreRig makes a rig in a fresh directory that the children's user
// owns, with an upstream that stalls every session at its greeting: a
// `check` against it has unsealed the credentials and waits.
func newCoreRig(t *testing.T, pass string) *coreRig {
	t.Helper()
	dir, err := os.MkdirTemp("", "sealrelay-core-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	rigFiles(t, dir, rigUser, pass)
	up := startUpstream(t, dir, upstream.Config{Behavior: upstream.Behavior{Stall: 1, StallDuration: time.Hour, StallAt: upstream.StallGreeting}})
	r := &coreRig{dir: dir, cfg: rigConfig(t, dir, up.Addr(), relayOpts{}, ""), up: up, uid: os.Getuid()}
	// A check waits at the stalled greeting until it is killed.
	writeTestFile(t, r.cfg, strings.Replace(readTestFile(t, r.cfg), `command_timeout = "10s"`, `command_timeout = "10m"`, 1))
	if r.uid == 0 {
		r.uid = nobody
		filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
			if err == nil {
				err = os.Lchown(path, nobody, nobody)
			}
			if err != nil {
				t.Fatal(err)
			}
			return nil
		})
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// The children's user must reach the binary.
		if err := os.Chmod(filepath.Dir(builtBinary(t)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// child is the built binary running as the rig's user.
type child struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed when it has exited
}

// start runs the built binary with args as the rig's user in the rig's
// directory. With blocked, its stdout is a pipe already full, so it blocks
// at its first line of output. shell, if set, is a sh(1) command run
// first, then the binary is exec'd.
func (r *coreRig) start(t *testing.T, blocked bool, shell string, env []string, args ...string) *child {
	t.Helper()
	var cmd *exec.Cmd
	if shell != "" {
		cmd = exec.Command("/bin/sh", append([]string{"-c", shell + `; exec "$0" "$@"`, builtBinary(t)}, args...)...)
	} else {
		cmd = exec.Command(builtBinary(t), args...)
	}
	if blocked {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pr.Close(); pw.Close() })
		pw.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			if _, err := pw.Write(make([]byte, 4096)); err != nil {
				break
			}
		}
		cmd.Stdout = pw
	}
	c := &child{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Dir, cmd.Stderr = r.dir, c.stderr
	cmd.Env = append(os.Environ(), env...)
	r.asUser(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(c.done) }() //nolint:errcheck // the tests read ProcessState
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", strings.Join(args, " "), c.stderr)
		}
	})
	return c
}

// asUser makes cmd run as the rig's user.
func (r *coreRig) asUser(cmd *exec.Cmd) {
	if r.uid != os.Getuid() {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(r.uid), Gid: nobody}}
	}
}

// control runs `sleep` as the rig's user in its directory with core dumps
// unlimited: a plain process, to show what the kernel does with one. It
// returns once sleep runs.
func (r *coreRig) control(t *testing.T) *exec.Cmd {
	t.Helper()
	ctl := exec.Command("/bin/sh", "-c", "ulimit -c unlimited; exec sleep 60")
	ctl.Dir = r.dir
	r.asUser(ctl)
	if err := ctl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctl.Process.Kill(); ctl.Wait() })
	waitFor(t, 10*time.Second, "the control to exec sleep", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ctl.Process.Pid))
		return bytes.HasPrefix(b, []byte("sleep"))
	})
	return ctl
}

// waitStalled waits until a check has connected to the upstream: it has
// unsealed the credentials by then.
func (r *coreRig) waitStalled(t *testing.T) {
	t.Helper()
	waitFor(t, 20*time.Second, "check to reach the upstream", func() bool {
		ss := r.up.Sessions()
		return len(ss) > 0 && ss[0].Stalled
	})
}

var noCoreLimit = regexp.MustCompile(`(?m)^Max core file size\s+0\s+0\s`)

// dumpable reports what /proc shows of pid's dumpability: the files in
// /proc/PID of a process that is not dumpable are owned by root (proc(5)).
// It means something only for a process whose user is not root.
func dumpable(pid int) (bool, error) {
	fi, err := os.Stat(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, err
	}
	return fi.Sys().(*syscall.Stat_t).Uid != 0, nil
}

// TestSecretCommandsCannotDumpCore: check, creds, demo and serve, each at a
// point where it holds a secret, run with no core dumps (RLIMIT_CORE 0,
// soft and hard) and are not dumpable, even when started with core dumps
// unlimited.
func TestSecretCommandsCannotDumpCore(t *testing.T) {
	r := newCoreRig(t, "Core-Pa55word-"+t.Name())
	// Positive control: a plain process of the same user is dumpable and
	// has the unlimited limit, so the checks below can see a change.
	ctl := r.control(t)
	ctlLimits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", ctl.Process.Pid))
	ctlDumpable, err := dumpable(ctl.Process.Pid)
	if err != nil || !ctlDumpable || noCoreLimit.Match(ctlLimits) {
		t.Fatalf("control process: dumpable %v (%v), limits:\n%s", ctlDumpable, err, ctlLimits)
	}

	cases := []struct {
		name    string
		args    []string
		blocked bool                                   // stdout full: it stops at its first line
		ready   func(t *testing.T, stderr *syncBuffer) // waits until it holds a secret
	}{
		{"check", []string{"check", "-c", r.cfg}, false, func(t *testing.T, _ *syncBuffer) { r.waitStalled(t) }},
		{"creds list", []string{"creds", "list", "-f", "credentials.age", "-i", "identity.txt"}, true, nil},
		{"demo", []string{"demo"}, true, nil},
		{"serve", []string{"serve", "-c", r.cfg}, false, func(t *testing.T, stderr *syncBuffer) {
			waitFor(t, 20*time.Second, "serve to listen", func() bool { return strings.Contains(stderr.String(), "msg=listening") })
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch := r.start(t, c.blocked, "ulimit -c unlimited", nil, c.args...)
			if c.ready != nil {
				c.ready(t, ch.stderr)
			}
			pid := ch.cmd.Process.Pid
			var limits []byte
			var dump bool
			// The child is blocked (output, upstream) or serving; what its
			// start set is in place within a moment of exec.
			deadline := time.Now().Add(10 * time.Second)
			for {
				limits, _ = os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
				dump, err = dumpable(pid)
				if err == nil && !dump && noCoreLimit.Match(limits) {
					return
				}
				if time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("reading /proc/%d: %v", pid, err)
			}
			if dump {
				t.Errorf("%s is dumpable", c.name)
			}
			if !noCoreLimit.Match(limits) {
				t.Errorf("%s can dump core:\n%s", c.name, limits)
			}
		})
	}
}

// TestCheckCrashWritesNoCore: `check` crashes (SIGQUIT with
// GOTRACEBACK=crash, which makes the Go runtime abort with a core dump)
// while it holds the unsealed password, started with core dumps
// unlimited, in a directory where the kernel writes cores. No core file
// may appear.
func TestCheckCrashWritesNoCore(t *testing.T) {
	pattern, err := os.ReadFile("/proc/sys/kernel/core_pattern")
	if err != nil {
		t.Skipf("cannot read core_pattern: %v", err)
	}
	if p := strings.TrimSpace(string(pattern)); strings.HasPrefix(p, "|") || strings.Contains(p, "/") {
		t.Skipf("core_pattern is %q: cores do not land in the process's directory, and changing it would touch the whole machine; "+
			"TestSecretCommandsCannotDumpCore checks the limit and dumpability instead", p)
	}
	pass := "Crash-Pa55word-never-in-a-core"
	r := newCoreRig(t, pass)
	cores := func() []string {
		m, _ := filepath.Glob(filepath.Join(r.dir, "core*"))
		return m
	}

	// Positive control: a process of the same user, same directory and
	// same limit leaves a core when SIGQUIT kills it.
	ctl := r.control(t)
	ctl.Process.Signal(syscall.SIGQUIT)
	ctl.Wait()
	if len(cores()) == 0 {
		t.Skipf("the kernel wrote no core for a plain process here (core_pattern %q): the crash cannot be checked this way", pattern)
	}
	for _, c := range cores() {
		os.Remove(c)
	}

	ch := r.start(t, false, "ulimit -c unlimited", []string{"GOTRACEBACK=crash"}, "check", "-c", r.cfg)
	r.waitStalled(t)
	ch.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-ch.done:
	case <-time.After(20 * time.Second):
		t.Fatal("check still runs 20s after SIGQUIT")
	}
	if ws, ok := ch.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGABRT {
		t.Errorf("check ended with %v, want killed by SIGABRT (the runtime's crash)", ch.cmd.ProcessState)
	}
	for _, c := range cores() {
		b, _ := os.ReadFile(c)
		n := bytes.Count(b, []byte(pass))
		t.Errorf("check left a core %s (%d bytes) holding the password %d times", c, len(b), n)
	}
}
