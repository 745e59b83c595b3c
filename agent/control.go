package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The control socket lets `sealrelay queue retry|delete` act on a running
// agent's spool. It is a Unix socket in data_dir, mode 0600, speaking one
// command line and one reply line per connection:
//
//	retry [ID]   ->  ok | error: ...
//	delete ID    ->  ok | error: ...

// ErrNotRunning is returned by Control when no agent listens on the socket.
var ErrNotRunning = errors.New("no agent is running")

// ControlSocket is the control socket's path for a data directory.
func ControlSocket(dataDir string) string { return filepath.Join(dataDir, "control.sock") }

func (a *Agent) listenControl() (net.Listener, error) {
	path := ControlSocket(a.cfg.DataDir)
	// A socket left by an agent killed with SIGKILL: nobody answers on it.
	if err := Control(path, "ping"); errors.Is(err, ErrNotRunning) {
		os.Remove(path)
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
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
