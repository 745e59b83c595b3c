package main

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/secrets"
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
	if _, err := rig.Seal(dir, "rig server", secrets.NewCredential("upstream", user, pass, "")); err != nil {
		t.Fatal(err)
	}
}

// rigConfig writes dir/sealrelay.toml relaying to upstreamAddr, and
// returns its path. extra is appended verbatim to the [queue] table (more
// keys, or more tables).
func rigConfig(t testing.TB, dir, upstreamAddr string, r relayOpts, extra string) string {
	t.Helper()
	if r.CAFile == "" {
		r.CAFile = "upstream-ca.pem"
	}
	cred := "upstream"
	if r.NoCred {
		cred = ""
	}
	path, err := rig.WriteConfig(dir, rig.Config{
		Hostname: "agent.test",
		Relay: rig.Relay{Name: "up", Address: upstreamAddr, TLS: r.TLS, Auth: r.Auth, Credential: cred,
			CAFile: r.CAFile, AllowPlaintextAuth: r.AllowPlain,
			Extra: "idle_timeout = \"2s\"\nconnect_timeout = \"5s\"\ncommand_timeout = \"10s\"\n"},
		Queue: rig.QuickQueue + extra,
	})
	if err != nil {
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
	up := testlib.StartUpstream(t, cfg)
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
	a, stop, err := rig.StartAgent(context.Background(), cfg, src, log)
	if err != nil {
		t.Fatal(err)
	}
	ra := &runningAgent{Agent: a, logs: logs, stop: stop}
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
	return rig.Send(addr, "client.test", from, []string{to}, testMessage(from, to, msgID))
}

func testMessage(from, to, msgID string) string {
	return "From: " + from + "\r\nTo: " + to + "\r\nSubject: test\r\nMessage-ID: " + msgID +
		"\r\n\r\nHello from the rig.\r\n"
}

// The shared helpers, under the names these tests use.
var (
	waitFor       = testlib.WaitFor
	readTestFile  = testlib.ReadFile
	writeTestFile = testlib.WriteFile
)

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

// builtBinary builds ./cmd/sealrelay once per test binary, for the tests
// that must kill or signal a real process.
func builtBinary(t testing.TB) string {
	t.Helper()
	bin, err := rig.Binary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// agentProcess is `sealrelay serve` running as a child process.
type agentProcess struct {
	p      *rig.Process
	cmd    *exec.Cmd
	stderr *syncBuffer // its log, as it comes
	addr   string
	done   <-chan struct{}
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
	logs := &syncBuffer{}
	p, err := rig.Launch(builtBinary(t), cfgFile, logs, extraEnv...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("agent process log:\n%s", logs.String())
		}
	})
	return &agentProcess{p: p, cmd: p.Cmd(), stderr: logs, done: p.Done()}
}

// waitListening waits until the process logs the address it listens on.
func (p *agentProcess) waitListening(t testing.TB) {
	t.Helper()
	if err := p.p.WaitListening(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	p.addr = p.p.Addr()
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
