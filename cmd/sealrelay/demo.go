package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/internal/relayhost"
	"github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/secrets"
)

// demoTimeout bounds the whole demo.
const demoTimeout = 60 * time.Second

// demoFlags defines demo's flags.
func demoFlags(fs *flag.FlagSet) (keep, verbose *bool) {
	return fs.Bool("keep", false, "keep the temporary directory"),
		fs.Bool("v", false, "show the agent's log on standard error")
}

// cmdDemo runs the whole path on loopback in a temporary directory: a fresh
// server key, a sealed credential, an embedded relay host that demands
// STARTTLS and AUTH (with its own CA handed to the agent as ca_file), the
// agent, and one message. It succeeds only when the relay host received
// the message on an authenticated TLS session.
func cmdDemo(e *env, args []string) error {
	fs := newFlags("demo")
	keep, verbose := demoFlags(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("demo takes no arguments")
	}
	ctx, cancel := context.WithTimeout(e.ctx, demoTimeout)
	defer cancel()
	d := &demo{e: e}
	dir, err := os.MkdirTemp("", "sealrelay-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if *keep {
		defer fmt.Fprintf(e.stdout, "kept %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	d.say("working in %s", dir)
	up, err := d.setUp(dir)
	if err != nil {
		return err
	}
	defer up.Close()
	logOut := io.Discard
	if *verbose {
		logOut = e.stderr
	}
	return d.run(ctx, filepath.Join(dir, "sealrelay.toml"), up, logOut)
}

// demo narrates the demo's steps.
type demo struct {
	e    *env
	step int
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.e.stdout, "[%d/8] %s\n", d.step, fmt.Sprintf(format, args...))
}

// demoUser is the demo relay host's account.
const demoUser = "demo-relay@upstream.test"

// setUp writes the server key, the sealed credential, the relay host's CA
// and the config in dir, and starts the relay host.
func (d *demo) setUp(dir string) (*relayhost.Server, error) {
	password := randomPassword()
	f, err := rig.Seal(dir, "this server (demo)", secrets.NewCredential("upstream", demoUser, password, ""))
	if err != nil {
		return nil, err
	}
	d.say("made this server's key %s (mode 0600); its public key is %s", f.Identity, f.PublicKey)
	d.say("sealed credential \"upstream\" (%s, a random password that is never shown) to %s in %s", demoUser, f.Recipients, f.Credentials)
	up, err := relayhost.Start(relayhost.Config{Accounts: map[string]string{demoUser: password}, RequireAuth: true})
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "upstream-ca.pem")
	if err := up.WriteCA(caFile); err != nil {
		up.Close()
		return nil, err
	}
	d.say("started an upstream relay on %s that demands STARTTLS and AUTH; its CA is %s", up.Addr(), caFile)
	if _, err := rig.WriteConfig(dir, rig.Config{
		Comment:  "sealrelay demo config",
		Hostname: "sealrelay-demo.test",
		Relay:    rig.Relay{Address: up.Addr(), Credential: "upstream", CAFile: "upstream-ca.pem"},
		Source:   "age",
		Queue:    "min_backoff = \"1s\"\nmax_backoff = \"5s\"\n",
	}); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	return up, nil
}

// run starts the agent with cfgFile, sends it one message, and checks
// that the relay host received it authenticated over TLS.
func (d *demo) run(ctx context.Context, cfgFile string, up *relayhost.Server, logOut io.Writer) error {
	cfg, err := config.Load(cfgFile)
	if err != nil {
		return err
	}
	log := newLogger(cfg, logOut)
	src, err := openSource(cfg, log)
	if err != nil {
		return err
	}
	a, stopAgent, err := rig.StartAgent(ctx, cfg, src, log)
	if err != nil {
		return err
	}
	defer stopAgent()
	d.say("started the agent (config %s) listening on %s", cfgFile, a.Addr())

	msgID := fmt.Sprintf("<demo.%d@sealrelay.test>", time.Now().UnixNano())
	if err := rig.Send(a.Addr().String(), "app.localhost", "app@localhost", []string{"someone@example.net"}, demoMessage(msgID)); err != nil {
		return fmt.Errorf("demo: sending to the agent: %w", err)
	}
	d.say("an application sent one message to the agent: 250, it is on disk in %s", cfg.SpoolDir())

	if err := rig.Poll(ctx, func() bool { return up.Count() > 0 }); err != nil {
		return fmt.Errorf("demo: the upstream did not receive the message within %s (see the log with -v)", demoTimeout)
	}
	m := up.Messages()[0]
	if m.Username != demoUser || !m.TLS || m.MessageID != msgID {
		return fmt.Errorf("demo: the upstream received a message, but not as expected (authenticated as %q, TLS %v)", m.Username, m.TLS)
	}
	d.say("the upstream received it over TLS on a session authenticated as %s", m.Username)
	if err := stopAgent(); err != nil {
		return err
	}
	d.say("the agent stopped cleanly; the demo worked")
	return nil
}

// demoMessage is the message the demo's application sends.
func demoMessage(msgID string) string {
	return strings.ReplaceAll(fmt.Sprintf(`From: app@localhost
To: someone@example.net
Subject: sealrelay demo
Message-ID: %s
Date: %s

Relayed through sealrelay with a sealed credential.
`, msgID, time.Now().Format(time.RFC1123Z)), "\n", "\r\n")
}

// randomPassword returns 32 random characters.
func randomPassword() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
