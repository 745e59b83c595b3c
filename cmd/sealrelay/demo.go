package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/internal/relayhost"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

// demoTimeout bounds the whole demo.
const demoTimeout = 60 * time.Second

// demoFlags defines demo's flags.
func demoFlags(fs *flag.FlagSet) (keep, verbose *bool) {
	return fs.Bool("keep", false, "keep the temporary directory"),
		fs.Bool("v", false, "show the agent's log on standard error")
}

// cmdDemo runs the whole path on loopback in a temporary directory: a fresh
// server key, a sealed credential, an embedded upstream that demands
// STARTTLS and AUTH (with its own CA handed to the agent as ca_file), the
// agent, and one message. It succeeds only when the upstream received the
// message on an authenticated TLS session.
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

	step := 0
	say := func(format string, args ...any) {
		step++
		fmt.Fprintf(e.stdout, "[%d/8] %s\n", step, fmt.Sprintf(format, args...))
	}

	dir, err := os.MkdirTemp("", "sealrelay-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if *keep {
		defer fmt.Fprintf(e.stdout, "kept %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	say("working in %s", dir)

	idFile := filepath.Join(dir, "identity.txt")
	pub, err := keys.WriteNew(idFile, false)
	if err != nil {
		return err
	}
	say("made this server's key %s (mode 0600); its public key is %s", idFile, pub)

	recFile := filepath.Join(dir, "recipients.txt")
	if err := os.WriteFile(recFile, []byte("# this server (demo)\n"+pub+"\n"), 0o644); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	recipients, err := keys.LoadRecipients(recFile)
	if err != nil {
		return err
	}
	const user = "demo-relay@upstream.test"
	password := randomPassword()
	credFile := filepath.Join(dir, "credentials.age")
	if err := agefile.Write(credFile, []secrets.Credential{secrets.NewCredential("upstream", user, password, "")}, recipients); err != nil {
		return err
	}
	say("sealed credential \"upstream\" (%s, a random password that is never shown) to %s in %s", user, recFile, credFile)

	up, err := relayhost.Start(relayhost.Config{
		Accounts:    map[string]string{user: password},
		RequireAuth: true,
	})
	if err != nil {
		return err
	}
	defer up.Close()
	caFile := filepath.Join(dir, "upstream-ca.pem")
	if err := up.WriteCA(caFile); err != nil {
		return err
	}
	say("started an upstream relay on %s that demands STARTTLS and AUTH; its CA is %s", up.Addr(), caFile)

	cfgFile := filepath.Join(dir, "sealrelay.toml")
	if err := os.WriteFile(cfgFile, []byte(demoConfig(dir, up.Addr())), 0o644); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	cfg, err := config.Load(cfgFile)
	if err != nil {
		return err
	}
	logOut := io.Discard
	if *verbose {
		logOut = e.stderr
	}
	log := newLogger(cfg, logOut)
	src, err := openSource(cfg, log)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, src, agent.Options{Logger: log})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(runCtx) }()
	stopAgent := sync.OnceValue(func() error { stop(); return <-runErr })
	defer stopAgent()
	say("started the agent (config %s) listening on %s", cfgFile, a.Addr())

	msgID := fmt.Sprintf("<demo.%d@sealrelay.test>", time.Now().UnixNano())
	if err := demoSend(a.Addr().String(), msgID); err != nil {
		return fmt.Errorf("demo: sending to the agent: %w", err)
	}
	say("an application sent one message to the agent: 250, it is on disk in %s", cfg.SpoolDir())

	if err := waitCtx(ctx, func() bool { return up.Count() > 0 }); err != nil {
		return fmt.Errorf("demo: the upstream did not receive the message within %s (see the log with -v)", demoTimeout)
	}
	msgs := up.Messages()
	m := msgs[0]
	if m.Username != user || !m.TLS || m.MessageID != msgID {
		return fmt.Errorf("demo: the upstream received a message, but not as expected (authenticated as %q, TLS %v)", m.Username, m.TLS)
	}
	say("the upstream received it over TLS on a session authenticated as %s", m.Username)
	if err := stopAgent(); err != nil {
		return err
	}
	say("the agent stopped cleanly; the demo worked")
	return nil
}

// demoConfig is the agent config the demo writes; relative paths are taken
// from the config file's directory.
func demoConfig(dir, upstreamAddr string) string {
	return fmt.Sprintf(`# sealrelay demo config
hostname = "sealrelay-demo.test"
data_dir = "data"

[listen]
address = "127.0.0.1:0"

[[relay]]
name = "upstream"
address = %q
tls = "starttls"
auth = "required"
credential = "upstream"
ca_file = "upstream-ca.pem"
server_name = "localhost"

[credentials]
source = "age"
identity = "identity.txt"
file = "credentials.age"

[queue]
min_backoff = "1s"
max_backoff = "5s"
`, upstreamAddr)
}

// demoSend plays the application: one message over SMTP to the agent.
func demoSend(addr, msgID string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("app.localhost"); err != nil {
		return err
	}
	body := strings.ReplaceAll(fmt.Sprintf(`From: app@localhost
To: someone@example.net
Subject: sealrelay demo
Message-ID: %s
Date: %s

Relayed through sealrelay with a sealed credential.
`, msgID, time.Now().Format(time.RFC1123Z)), "\n", "\r\n")
	if err := c.SendMail("app@localhost", []string{"someone@example.net"}, strings.NewReader(body)); err != nil {
		return err
	}
	return c.Quit()
}

// randomPassword returns 32 random characters.
func randomPassword() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// waitCtx polls cond until it holds or ctx ends.
func waitCtx(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return errors.New("timed out")
		case <-t.C:
		}
	}
	return nil
}
