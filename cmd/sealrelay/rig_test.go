package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

// The end-to-end rig: a real upstream (go-smtp with STARTTLS and AUTH), a
// server key and an age-sealed credential file on disk, a config file, and
// the agent built exactly as `sealrelay serve` builds it.

const (
	rigUser = "relay-account@upstream.test"
	rigPass = "rig-Pa55word-that-must-never-leak"
)

// relayOpts is the [[relay]] part of a rig's config.
type relayOpts struct {
	TLS        string // default starttls
	Auth       string // default required
	AllowPlain bool
	NoCred     bool
	CAFile     string // default the upstream's CA
}

// rigFiles makes a server key, a recipient list and a credential file
// holding entry "upstream" in dir.
func rigFiles(t testing.TB, dir, user, pass string) {
	t.Helper()
	pub, err := keys.WriteNew(filepath.Join(dir, "identity.txt"), false)
	if err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(dir, "recipients.txt")
	if err := os.WriteFile(rec, []byte("# rig server\n"+pub+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rl, err := keys.LoadRecipients(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := agefile.Write(filepath.Join(dir, "credentials.age"),
		[]secrets.Credential{secrets.NewCredential("upstream", user, pass, "")}, rl); err != nil {
		t.Fatal(err)
	}
}

// rigConfig writes dir/sealrelay.toml relaying to upstreamAddr, and
// returns its path. extra is appended verbatim (more tables).
func rigConfig(t testing.TB, dir, upstreamAddr string, r relayOpts, extra string) string {
	t.Helper()
	if r.TLS == "" {
		r.TLS = "starttls"
	}
	if r.Auth == "" {
		r.Auth = "required"
	}
	if r.CAFile == "" {
		r.CAFile = "upstream-ca.pem"
	}
	cred := `credential = "upstream"`
	if r.NoCred {
		cred = ""
	}
	cfg := fmt.Sprintf(`hostname = "agent.test"
data_dir = "data"

[listen]
address = "127.0.0.1:0"

[[relay]]
name = "up"
address = %q
tls = %q
auth = %q
%s
ca_file = %q
server_name = "localhost"
allow_plaintext_auth = %v
idle_timeout = "2s"
connect_timeout = "5s"
command_timeout = "10s"

[credentials]
identity = "identity.txt"
file = "credentials.age"

[queue]
min_backoff = "200ms"
max_backoff = "1s"
drain_timeout = "5s"
%s`, upstreamAddr, r.TLS, r.Auth, cred, r.CAFile, r.AllowPlain, extra)
	path := filepath.Join(dir, "sealrelay.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startUpstream starts an upstream that knows rigUser and writes its CA to
// dir/upstream-ca.pem.
func startUpstream(t testing.TB, dir string, cfg upstream.Config) *upstream.Server {
	t.Helper()
	if cfg.Accounts == nil {
		cfg.Accounts = map[string]string{rigUser: rigPass}
	}
	up, err := upstream.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	if err := up.WriteCA(filepath.Join(dir, "upstream-ca.pem")); err != nil {
		t.Fatal(err)
	}
	return up
}

// runningAgent is an agent running in this process.
type runningAgent struct {
	*agent.Agent
	logs *syncBuffer
	stop func() error
}

// startAgent builds the agent as `serve` does and runs it until the test
// ends (or stop is called).
func startAgent(t testing.TB, cfgFile string) *runningAgent {
	t.Helper()
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	src, err := openSource(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, src, agent.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	ra := &runningAgent{Agent: a, logs: logs}
	ra.stop = sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() {
		if err := ra.stop(); err != nil {
			t.Errorf("agent stopped with: %v", err)
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	return ra
}

// send submits one message to addr and returns the error of the SMTP
// transaction (nil means 250).
func send(addr, from, to, msgID string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.SendMail(from, []string{to}, strings.NewReader(testMessage(from, to, msgID))); err != nil {
		return err
	}
	return c.Quit()
}

func testMessage(from, to, msgID string) string {
	return "From: " + from + "\r\nTo: " + to + "\r\nSubject: test\r\nMessage-ID: " + msgID +
		"\r\n\r\nHello from the rig.\r\n"
}

// waitFor polls cond for up to d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// queued returns the spool's item with the given Message-ID's message, by
// position: the rig's tests queue one message at a time.
func onlyItem(t testing.TB, q *spool.Queue) spool.Info {
	t.Helper()
	items := q.List()
	if len(items) != 1 {
		t.Fatalf("queue holds %d items, want 1", len(items))
	}
	return items[0]
}

// waitRelayed waits up to a minute until the relay holds every message in
// accepted (Message-ID to when the agent took it).
func waitRelayed(t testing.TB, up *upstream.Server, accepted map[string]time.Time) {
	t.Helper()
	waitFor(t, 60*time.Second, "every accepted message at the relay", func() bool {
		got := map[string]bool{}
		for _, m := range up.Messages() {
			got[m.MessageID] = true
		}
		for id := range accepted {
			if !got[id] {
				return false
			}
		}
		return true
	})
}

// syncBuffer is a log sink the test reads while the code writes to it.
type syncBuffer = testlib.LogBuf

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// builtBinary builds ./cmd/sealrelay once per test binary, for the tests
// that must kill or signal a real process.
func builtBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sealrelay-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "sealrelay")
		cmd := exec.Command(filepath.Join(goRoot(), "bin", "go"), "build", "-o", binPath, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("building sealrelay: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// agentProcess is `sealrelay serve` running as a child process.
type agentProcess struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	addr   string
	done   chan struct{}
}

// startProcess runs `sealrelay serve -c cfgFile` and waits until it logs
// the address it listens on.
func startProcess(t testing.TB, cfgFile string, extraEnv ...string) *agentProcess {
	t.Helper()
	p := launchProcess(t, cfgFile, extraEnv...)
	p.waitListening(t)
	return p
}

// launchProcess runs `sealrelay serve -c cfgFile` without waiting for it
// to listen (the crash loop kills some processes before they do).
func launchProcess(t testing.TB, cfgFile string, extraEnv ...string) *agentProcess {
	t.Helper()
	p := &agentProcess{stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(builtBinary(t), "serve", "-c", cfgFile)
	if len(extraEnv) > 0 {
		p.cmd.Env = append(os.Environ(), extraEnv...)
	}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }() //nolint:errcheck // exit status read from ProcessState
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("agent process log:\n%s", p.stderr.String())
		}
	})
	return p
}

// waitListening waits until the process logs the address it listens on.
func (p *agentProcess) waitListening(t testing.TB) {
	t.Helper()
	// The text and the JSON form of the "listening" log line.
	re := regexp.MustCompile(`msg=listening address=(\S+)|"msg":"listening","address":"([^"]+)"`)
	waitFor(t, 20*time.Second, "the agent process to listen", func() bool {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			p.addr = m[1] + m[2]
			return true
		}
		select {
		case <-p.done:
			t.Fatalf("agent process exited early: %v\n%s", p.cmd.ProcessState, p.stderr.String())
		default:
		}
		return false
	})
}

// wait waits for the process to exit and returns its exit code.
func (p *agentProcess) wait(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("agent process still running after %s", d)
	}
	return -1
}

func readTestFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeTestFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
