package rotate

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Hooks are the programs, with their arguments, that act at the relay or
// the provider. Each gets a HookInput as JSON on standard input, and
// exits 0 when it did what was asked.
type Hooks struct {
	// Make makes the new secret and prints a HookOutput as JSON; optional
	// for passwords, which sealrelay makes itself.
	Make []string
	// Set makes the new secret valid at the relay beside the old one.
	// Optional when Make made it valid at the provider already.
	Set []string
	// Retire retires the old secret (retire-old), or the new one when a
	// rotation is rolled back (retire-new).
	Retire []string
	// Timeout bounds each run.
	Timeout time.Duration
}

// The actions a hook is run for, in HookInput.Action.
const (
	ActionMake      = "make"
	ActionSetNew    = "set-new"
	ActionRetireOld = "retire-old"
	ActionRetireNew = "retire-new"
)

// HookInput is what a hook reads on standard input, as one JSON object.
// Secret is the new secret (absent for make): set-new adds it for
// Username beside what OldUsername has; retire-old removes every secret
// of OldUsername but this one (with a new Username, the old account
// altogether); retire-new removes this one. The old secret is never
// given to a hook.
type HookInput struct {
	Action        string `json:"action"`
	Name          string `json:"name"`
	Kind          string `json:"kind"`
	Username      string `json:"username"`
	Secret        string `json:"secret,omitempty"`
	Generation    string `json:"generation"`
	OldUsername   string `json:"old_username"`
	OldGeneration string `json:"old_generation"`
}

// HookOutput is what a make hook prints: the new secret, and the new
// username if it changes (an ses access key id, another Mailgun login).
type HookOutput struct {
	Secret   string `json:"secret"`
	Username string `json:"username,omitempty"`
}

// maxHookOutput caps what a make hook may print.
const maxHookOutput = 64 << 10

// HookError is a hook that failed: it exited non-zero, was killed, or
// could not start. Its text names the hook and its last line on standard
// error, with every secret replaced.
type HookError struct {
	Action string
	Path   string
	Msg    string
}

func (e *HookError) Error() string {
	return fmt.Sprintf("the %s hook %s %s", e.Action, e.Path, e.Msg)
}

// runHook runs argv for in.Action with in as JSON on standard input, in a
// process group of its own, killed after timeout. Its standard error, and
// its standard output unless keepStdout, are copied to show line by line,
// each secret in redact replaced by "[redacted]"; with keepStdout its
// standard output is returned instead (at most maxHookOutput bytes).
func runHook(ctx context.Context, argv []string, timeout time.Duration, in HookInput, redact []string, show io.Writer, keepStdout bool) ([]byte, error) {
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, argv[0], argv[1:]...)
	cmd.Env = hookEnv(in)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	input, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	defer clear(input)
	cmd.Stdin = bytes.NewReader(append(input, '\n'))
	// Standard output and error are copied by two goroutines: one lock
	// keeps their lines whole.
	show = &lockedWriter{w: show}
	stderr := &lineShow{prefix: "hook " + in.Action + ": ", redact: redact, w: show}
	cmd.Stderr = stderr
	var stdout capped
	if keepStdout {
		cmd.Stdout = &stdout
	} else {
		cmd.Stdout = &lineShow{prefix: "hook " + in.Action + ": ", redact: redact, w: show}
	}
	err = cmd.Run()
	stderr.flush()
	if o, ok := cmd.Stdout.(*lineShow); ok {
		o.flush()
	}
	he := &HookError{Action: in.Action, Path: argv[0]}
	var ee *exec.ExitError
	switch {
	case err == nil && stdout.over:
		clear(stdout.buf.Bytes())
		he.Msg = fmt.Sprintf("printed more than %d bytes", maxHookOutput)
		return nil, he
	case err == nil:
		return stdout.buf.Bytes(), nil
	case hctx.Err() == context.DeadlineExceeded && ctx.Err() == nil:
		he.Msg = fmt.Sprintf("did not finish within %s (rotation.hook_timeout) and was killed", timeout)
	case ctx.Err() != nil:
		he.Msg = "was stopped: " + ctx.Err().Error()
	case errors.As(err, &ee):
		he.Msg = "exited with " + exitText(ee)
		if last := stderr.lastLine(); last != "" {
			he.Msg += ": " + last
		} else {
			he.Msg += " and printed nothing on standard error"
		}
	default:
		he.Msg = "could not be run: " + err.Error()
	}
	clear(stdout.buf.Bytes())
	return nil, he
}

// exitText is "status 3" or "signal killed".
func exitText(ee *exec.ExitError) string {
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ee.ExitCode())
}

// hookEnv is the hook's environment: this process's, without what may
// hold a credential of its own (VAULT_TOKEN), and with the action and the
// entry's name. Never a secret of the rotation.
func hookEnv(in HookInput) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "VAULT_TOKEN" || strings.HasPrefix(k, "SEALRELAY_HOOK_") || k == "SEALRELAY_CREDENTIAL" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "SEALRELAY_HOOK_ACTION="+in.Action, "SEALRELAY_CREDENTIAL="+in.Name)
}

// redactions lists every form of the secrets a hook's output must not
// show: each as is, and in standard base64.
func redactions(secrets ...string) []string {
	var out []string
	for _, s := range secrets {
		if s == "" {
			continue
		}
		out = append(out, s, base64.StdEncoding.EncodeToString([]byte(s)))
	}
	return out
}

// lineShow copies what a hook prints, line by line, with each secret
// replaced, and keeps the last line for the error message.
type lineShow struct {
	prefix string
	redact []string
	w      io.Writer

	mu   sync.Mutex
	part []byte
	last string
}

func (l *lineShow) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		l.emit(string(l.part[:i]))
		l.part = l.part[i+1:]
	}
	if len(l.part) > 4096 { // a line without end: show it in pieces
		l.emit(string(l.part))
		l.part = nil
	}
	return len(p), nil
}

func (l *lineShow) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.part) > 0 {
		l.emit(string(l.part))
		l.part = nil
	}
}

func (l *lineShow) emit(line string) {
	line = strings.TrimRight(line, "\r")
	for _, s := range l.redact {
		line = strings.ReplaceAll(line, s, "[redacted]")
	}
	if strings.TrimSpace(line) == "" {
		return
	}
	l.last = line
	fmt.Fprintf(l.w, "sealrelay: %s%s\n", l.prefix, line)
}

func (l *lineShow) lastLine() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == nil {
		return len(p), nil
	}
	return l.w.Write(p)
}

// capped keeps what a make hook prints, up to maxHookOutput bytes.
type capped struct {
	buf  bytes.Buffer
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if c.buf.Len()+len(p) > maxHookOutput {
		c.over = true
		return len(p), nil
	}
	return c.buf.Write(p)
}

// readHookOutput parses a make hook's output, and clears it.
func readHookOutput(b []byte, path string) (HookOutput, error) {
	defer clear(b)
	var out HookOutput
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		// The decoder's error may quote what it read: say only where.
		return HookOutput{}, &HookError{Action: ActionMake, Path: path,
			Msg: `did not print one JSON object such as {"secret": "...", "username": "..."}`}
	}
	return out, nil
}
