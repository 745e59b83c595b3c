package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sealrelay/sealrelay/internal/relayhost"
	"github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/internal/testing/peers/postfixtest"
)

// The contenders, in the order -contenders lists them by default. Plain
// and the null and durable hops run only when asked for.
const (
	Direct    = "direct"
	Plain     = "plain"
	Postfix   = "postfix"
	Sealrelay = "sealrelay"
	Nullhop   = "nullhop"
	Durable   = "durablehop"
)

var (
	defaultContenders = []string{Direct, Postfix, Sealrelay}
	allContenders     = []string{Direct, Plain, Postfix, Sealrelay, Nullhop, Durable}
)

// hops are the contenders that relay, whose rates are compared with each
// ceiling's.
var hops = []string{Sealrelay, Nullhop, Durable}

// ceilings are the contenders that feed the upstream directly.
var ceilings = []string{Direct, Plain}

// A contender is something the load generator sends to that ends up at the
// upstream.
type contender interface {
	// Target is where the load goes.
	Target() Target
	// PIDs are the processes whose RSS is the contender's; nil means not
	// measured (the upstream fed directly runs inside the driver).
	PIDs() []int
	// Stop stops it and every process it started.
	Stop() error
	// Describe says what runs, and where its files are when kept.
	Describe() string
}

// env is what every contender shares in one benchmark run.
type env struct {
	up      *relayhost.Server
	user    string
	pass    string
	baseDir string // where contenders keep their state
	keep    bool   // keep their directories (and say where)
	bin     string // the sealrelay binary
	log     *slog.Logger
	logw    io.Writer // sealrelay's log when verbose; nil discards
}

func startContender(name string, e *env) (contender, error) {
	switch name {
	case Direct:
		return direct{e}, nil
	case Plain:
		return plain{e}, nil
	case Postfix:
		return startPostfix(e)
	case Sealrelay:
		return startSealrelay(e)
	case Nullhop:
		return startNullhop(e, false)
	case Durable:
		return startNullhop(e, true)
	}
	return nil, fmt.Errorf("unknown contender %q (want %s)", name, strings.Join(allContenders, ", "))
}

// direct is the upstream fed directly: the ceiling.
type direct struct{ e *env }

func (d direct) Target() Target {
	return Target{Addr: d.e.up.Addr(), TLS: d.e.up.ClientTLSConfig(), User: d.e.user, Pass: d.e.pass}
}
func (d direct) PIDs() []int { return nil }
func (d direct) Stop() error { return nil }
func (d direct) Describe() string {
	return "the upstream itself, STARTTLS + AUTH PLAIN from the load generator"
}

// plain is the upstream fed directly without TLS (AUTH PLAIN in the
// clear, which the upstream allows for it alone: the relays always start
// TLS): the ceiling without the cost of TLS.
type plain struct{ e *env }

func (p plain) Target() Target { return Target{Addr: p.e.up.Addr(), User: p.e.user, Pass: p.e.pass} }
func (p plain) PIDs() []int    { return nil }
func (p plain) Stop() error    { return nil }
func (p plain) Describe() string {
	return "the upstream itself, AUTH PLAIN without TLS from the load generator"
}

// postfixContender is Postfix tuned as a smarthost client
// (postfixtest.Config.Tuned): relayhost = the upstream, SASL with a static
// password map, TLS required, TLS connections reused through tlsproxy,
// 20 connections to the relay.
type postfixContender struct{ p *postfixtest.Instance }

func startPostfix(e *env) (*postfixContender, error) {
	p, err := postfixtest.Start(postfixtest.Config{
		Hostname:      "postfix.bench.test",
		Relayhost:     e.up.Addr(),
		RelayCAPEM:    e.up.CAPEM(),
		RelayUser:     e.user,
		RelayPassword: e.pass,
		Tuned:         true,
		BaseDir:       e.baseDir,
		Keep:          e.keep,
		Logger:        e.log,
	})
	if err != nil {
		return nil, err
	}
	return &postfixContender{p}, nil
}

func (c *postfixContender) Target() Target { return Target{Addr: c.p.Addr()} }
func (c *postfixContender) PIDs() []int    { return c.p.PIDs() }
func (c *postfixContender) Stop() error    { return c.p.Stop() }
func (c *postfixContender) Describe() string {
	return "Postfix " + postfixVersion() + ", config in " + c.p.ConfigDir() + ", log " + c.p.LogFile()
}

// benchSessionLimits lift the listener's session limits (100 in all, 20
// per client address by default) above what the workloads and the idle
// sessions measurement open, all from 127.0.0.1.
const benchSessionLimits = "max_sessions = 5000\nmax_sessions_per_client = 5000\n"

// sealrelayContender is the built binary with the credential sealed with
// age, relaying to the upstream over STARTTLS with AUTH required and 20
// connections.
type sealrelayContender struct {
	dir string
	p   *rig.Process
	e   *env
}

func startSealrelay(e *env) (*sealrelayContender, error) {
	dir, err := os.MkdirTemp(e.baseDir, "sealrelay-bench-")
	if err != nil {
		return nil, err
	}
	setup, err := rig.WriteSetup(dir, rig.Options{
		Relay:          e.up.Addr(),
		User:           e.user,
		Password:       e.pass,
		CAPEM:          e.up.CAPEM(),
		MaxConnections: 20,
		ListenExtra:    benchSessionLimits,
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p, err := rig.StartProcess(e.bin, setup.Config, e.logw)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &sealrelayContender{dir: dir, p: p, e: e}, nil
}

func (c *sealrelayContender) Target() Target { return Target{Addr: c.p.Addr()} }
func (c *sealrelayContender) PIDs() []int    { return []int{c.p.PID()} }
func (c *sealrelayContender) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Second)
	defer cancel()
	err := c.p.Stop(ctx)
	if !c.e.keep {
		os.RemoveAll(c.dir)
	}
	return err
}
func (c *sealrelayContender) Describe() string {
	return "sealrelay " + c.e.bin + ", config " + filepath.Join(c.dir, "sealrelay.toml")
}

// postfixVersion is mail_version from `postconf -d`, or "?".
func postfixVersion() string {
	out, err := runOutput("/usr/sbin/postconf", "-d", "-h", "mail_version")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(out)
}
