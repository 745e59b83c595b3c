package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestAuthReplyEchoIsNotKept: the relay echoes the SASL payload (base64 as
// sent, and decoded) in its 535, as some relays do. That reply must not
// carry the password anywhere sealrelay writes it: the log, the spool
// files, `queue list`, `check`, and the DSN the sender gets when the
// message expires (auth failures defer, so the DSN comes at max_lifetime).
// The code and enhanced code stay visible.
func TestAuthReplyEchoIsNotKept(t *testing.T) {
	const pass = "Echoed-Pa55word-5e1f-never-leak"
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, pass)
	up := startUpstream(t, dir, upstream.Config{
		Accounts: map[string]string{rigUser: "not-" + pass},
		Behavior: upstream.Behavior{EchoAuth: true},
	})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "max_lifetime = \"4s\"\n")
	var printed bytes.Buffer
	cli := func(args ...string) {
		_, out, errs := runCLI(t, args...)
		printed.WriteString(out + errs)
	}

	p := startProcess(t, cfg)
	if err := send(p.addr, "app@client.test", "user@example.net", "<echo.1@rig>"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "a 535 in the log", func() bool { return strings.Contains(p.stderr.String(), "535 5.7.8") })
	cli("queue", "list", "-c", cfg)
	cli("check", "-c", cfg)
	// The message expires; its DSN to app@client.test waits for the relay
	// like any message. Then the relay takes the password.
	waitFor(t, 20*time.Second, "the expiry of the message", func() bool {
		return strings.Contains(p.stderr.String(), "expired")
	})
	up.SetBehavior(upstream.Behavior{})
	up.SetPassword(rigUser, pass)
	if err := up.WaitMessages(1, 20*time.Second); err != nil {
		t.Fatalf("the DSN never reached the relay: %v", err)
	}
	cli("queue", "list", "-c", cfg)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	printed.WriteString(p.stderr.String())

	msgs := up.Messages()
	if len(msgs) != 1 || msgs[0].From != "" || !strings.Contains(strings.Join(msgs[0].To, ","), "app@client.test") {
		t.Fatalf("relay received %+v, want the DSN to app@client.test", msgs)
	}
	dsn := msgs[0].Data
	// Positive controls: the relay did echo, the reply's codes are kept,
	// and what is searched holds what it should.
	if !strings.Contains(printed.String(), "535 5.7.8") || !bytes.Contains(dsn, []byte("535 5.7.8")) {
		t.Errorf("the 535 5.7.8 is not reported:\nDSN:\n%s\noutput:\n%s", dsn, printed.String())
	}
	if !bytes.Contains(dsn, []byte("user@example.net")) || !strings.Contains(printed.String(), "user@example.net") {
		t.Error("the DSN or the output lacks the recipient: the search would be blind")
	}

	forbidden := secretForms(rigUser, pass)
	look := func(where string, data []byte) {
		t.Helper()
		for what, s := range forbidden {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s contains the %s", where, what)
			}
		}
	}
	look("the agent's log and the commands' output", printed.Bytes())
	look("the DSN", dsn)
	if files := testlib.ReadTree(t, filepath.Join(dir, "data"), nil, look); files == 0 {
		t.Error("no spool file looked at")
	}
}
