package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The control socket lets `sealrelay queue retry|delete` act on a running
// agent's spool. It is a Unix socket in data_dir, mode 0600, speaking one
// command line and one reply line per connection (the socket is created
// 0600 without changing the process's umask: see listenControl):
//
//	retry [ID]   ->  ok | error: ...
//	delete ID    ->  ok | error: ...

// ErrNotRunning is returned by Control when no agent listens on the socket.
var ErrNotRunning = errors.New("no agent is running")

// controlTmpPrefix names the private directory a new control socket is
// bound in before it is renamed into place.
const controlTmpPrefix = ".ctl"

// ControlSocket is the control socket's path for a data directory.
func ControlSocket(dataDir string) string { return filepath.Join(dataDir, "control.sock") }

func (a *Agent) listenControl() (net.Listener, error) {
	return listenControl(ControlSocket(a.cfg.DataDir))
}

// listenControl binds the control socket at path with mode 0600, without
// ever touching the process's umask (which other goroutines' files
// depend on) and without a moment when anyone else could connect: the
// socket is bound inside a fresh directory of mode 0700, set to 0600, and
// only then renamed into place.
func listenControl(path string) (net.Listener, error) {
	// A socket left by an agent killed with SIGKILL: nobody answers on it.
	switch err := Control(path, "ping"); {
	case err == nil:
		return nil, fmt.Errorf("control socket %s: another agent answers on it", path)
	case !errors.Is(err, ErrNotRunning):
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("control socket: removing the stale socket: %w", err)
	}
	// Directories left by an agent killed while it made its socket (the
	// spool's lock says no other agent uses this data directory).
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(path), controlTmpPrefix+"*"))
	for _, d := range old {
		os.RemoveAll(d)
	}
	dir, err := controlTmpDir(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // it is renamed: controlListener removes it
	fail := func(err error) (net.Listener, error) {
		ul.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if fi, err := os.Lstat(tmp); err != nil {
		return fail(err)
	} else if m := fi.Mode(); m.Type() != fs.ModeSocket || m.Perm() != 0o600 {
		return fail(fmt.Errorf("%s has mode %s after chmod 600", tmp, m))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return &controlListener{UnixListener: ul, path: path}, nil
}

// controlTmpDir makes a new directory of mode 0700 in dir. Its name is
// short: a socket's path is limited to 107 bytes, and the temporary
// socket's path must be no longer than the final one.
func controlTmpDir(dir string) (string, error) {
	for {
		p := filepath.Join(dir, fmt.Sprintf("%s%04x", controlTmpPrefix, rand.N(1<<16)))
		err := os.Mkdir(p, 0o700)
		if !errors.Is(err, fs.ErrExist) {
			return p, err
		}
	}
}

// controlListener removes the socket file when closed.
type controlListener struct {
	*net.UnixListener
	path string
}

func (l *controlListener) Close() error {
	err := l.UnixListener.Close()
	os.Remove(l.path)
	return err
}

func (a *Agent) serveControl(ctx context.Context, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			reply := "ok"
			if err := a.control(strings.Fields(line)); err != nil {
				reply = "error: " + err.Error()
			}
			fmt.Fprintln(c, reply)
		}()
	}
}

func (a *Agent) control(args []string) error {
	if len(args) == 0 {
		return errors.New("empty command")
	}
	switch {
	case args[0] == "ping" && len(args) == 1:
		return nil
	case args[0] == "retry" && len(args) == 1:
		return a.queue.Retry("")
	case args[0] == "retry" && len(args) == 2:
		return a.queue.Retry(args[1])
	case args[0] == "delete" && len(args) == 2:
		return a.queue.Delete(args[1])
	}
	return fmt.Errorf("unknown command %q", strings.Join(args, " "))
}

// Control sends one command to the agent listening on socket. It returns
// ErrNotRunning if none does.
func Control(socket, command string) error {
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return ErrNotRunning
		}
		return fmt.Errorf("control socket %s: %w", socket, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintln(c, command); err != nil {
		return fmt.Errorf("control socket %s: %w", socket, err)
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("control socket %s: no reply: %w", socket, err)
	}
	reply = strings.TrimSpace(reply)
	if msg, ok := strings.CutPrefix(reply, "error: "); ok {
		return errors.New(msg)
	}
	return nil
}
