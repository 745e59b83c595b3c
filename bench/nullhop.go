package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/sys/unix"
)

// The null hop answers the question the no-hop ceiling raises: how close
// to the load generator feeding the upstream can a relay hop get on this
// machine? It is the cheapest hop this harness can build: a go-smtp
// listener that reads each message into memory, answers 250, and has one
// of 20 forwarders send it over a connection that stays open to the
// upstream, in plaintext (AUTH PLAIN in the clear, as the plain contender
// sends). It has no spool, no fsync, no TLS and no logging, and writes
// each body in one piece (the harness's messages need no dot-stuffing).
// It is not a relay anyone should run: it is the floor under every relay.
//
// The durable hop is the null hop doing, besides, what the benchmark asks
// of every relay (README, "Performance"): it starts TLS to the upstream, and
// appends each message to a file and fdatasyncs it before its 250
// (concurrent fdatasyncs of one file share the file system's journal
// commit). It still keeps no records of its own, no envelope and no
// delivery state, and logs nothing: the floor under every relay that
// keeps those promises.
//
// It runs as a child process (this program, with nullhopEnv set), so
// that its CPU time and memory are measured apart from the harness's, as
// sealrelay's are.

// nullhopEnv, set in a child's environment, makes this program the null
// hop instead of the benchmark.
const nullhopEnv = "SEALRELAY_BENCH_NULLHOP"

// nullhopConns is how many connections the null hop keeps to the
// upstream, as sealrelay and Postfix are given 20.
const nullhopConns = 20

type nullhopContender struct {
	cmd     *exec.Cmd
	addr    string
	done    chan error
	dir     string // the durable hop's CA and synced file
	durable bool
}

// startNullhop starts the null hop, or with durable the durable hop, as a
// child process. The upstream account's password goes to it on stdin,
// never in its arguments.
func startNullhop(e *env, durable bool) (c *nullhopContender, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("null hop: %w", err)
	}
	args := []string{"-upstream", e.up.Addr(), "-user", e.user}
	c = &nullhopContender{done: make(chan error, 1), durable: durable}
	if durable {
		if c.dir, err = os.MkdirTemp(e.baseDir, "durablehop-"); err != nil {
			return nil, fmt.Errorf("durable hop: %w", err)
		}
		defer func() {
			if err != nil {
				os.RemoveAll(c.dir)
			}
		}()
		ca := filepath.Join(c.dir, "ca.pem")
		if err := e.up.WriteCA(ca); err != nil {
			return nil, fmt.Errorf("durable hop: %w", err)
		}
		args = append(args, "-ca", ca, "-sync", filepath.Join(c.dir, "messages"))
	}
	cmd := exec.Command(exe, args...)
	c.cmd = cmd
	cmd.Env = append(os.Environ(), nullhopEnv+"=1")
	// Ended with the benchmark, even one that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdin = strings.NewReader(e.pass + "\n")
	cmd.Stderr = e.logw
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("null hop: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("null hop: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("null hop did not say where it listens: %w", err)
	}
	c.addr = strings.TrimSpace(line)
	go func() { c.done <- cmd.Wait() }()
	return c, nil
}

func (c *nullhopContender) Target() Target { return Target{Addr: c.addr} }
func (c *nullhopContender) PIDs() []int    { return []int{c.cmd.Process.Pid} }
func (c *nullhopContender) Describe() string {
	if c.durable {
		return "the durable hop: the null hop with STARTTLS to the upstream and an fdatasync of each message before its 250, in " + c.dir
	}
	return "the null hop: a go-smtp listener forwarding from memory over 20 plaintext connections, no spool"
}

// Stop ends the null hop. It is killed: it holds nothing that a kill
// loses, since every message it took is at the upstream already.
func (c *nullhopContender) Stop() error {
	c.cmd.Process.Kill()
	if c.dir != "" {
		defer os.RemoveAll(c.dir)
	}
	select {
	case <-c.done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("null hop did not exit 10 s after SIGKILL")
	}
}

// runNullhop is the child: it reads the password from stdin, listens on
// 127.0.0.1 at a port of its choosing, prints the address on stdout, and
// serves until it is killed.
func runNullhop(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nullhop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	upstream := fs.String("upstream", "", "upstream address")
	user := fs.String("user", "", "upstream account")
	caFile := fs.String("ca", "", "start TLS to the upstream, trusting this CA (PEM)")
	syncFile := fs.String("sync", "", "append each message to this file and fdatasync it before forwarding")
	if err := fs.Parse(args); err != nil || *upstream == "" || *user == "" {
		fmt.Fprintln(stderr, "nullhop: -upstream and -user are required, the password comes on stdin")
		return 2
	}
	pass, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil {
		fmt.Fprintln(stderr, "nullhop: reading the password from stdin:", err)
		return 2
	}
	up := Target{Addr: *upstream, User: *user, Pass: strings.TrimSuffix(pass, "\n")}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(stderr, "nullhop: -ca:", err)
			return 2
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			fmt.Fprintf(stderr, "nullhop: -ca: no certificate in %s\n", *caFile)
			return 2
		}
		up.TLS = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	}
	var synced *os.File
	if *syncFile != "" {
		if synced, err = os.OpenFile(*syncFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			fmt.Fprintln(stderr, "nullhop: -sync:", err)
			return 2
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(stderr, "nullhop:", err)
		return 1
	}
	h := startHop(up, stderr)
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &hopSession{hop: h, synced: synced}, nil
	}))
	s.Domain = "nullhop.bench.test"
	s.ReadTimeout, s.WriteTimeout = time.Minute, time.Minute
	fmt.Fprintln(stdout, l.Addr().String())
	if err := s.Serve(l); err != nil {
		fmt.Fprintln(stderr, "nullhop:", err)
		return 1
	}
	return 0
}

// hop is the null hop's outbound side: nullhopConns forwarders, each
// with its own connection to the upstream, taking messages from one
// queue. Like sealrelay, the hop answers 250 once a message is queued
// (and, in the durable hop, synced) and forwards it afterwards.
type hop struct {
	up     Target
	queue  chan hopMessage
	stderr io.Writer
}

type hopMessage struct {
	from string
	to   []string
	body []byte
}

func startHop(up Target, stderr io.Writer) *hop {
	h := &hop{up: up, queue: make(chan hopMessage, 1<<16), stderr: stderr}
	for range nullhopConns {
		go h.forwarder()
	}
	return h
}

// forwarder sends queued messages over one connection, opened when the
// first comes and again after a failure. A message that fails is tried
// again on a new connection, 3 times in all; then it is reported on
// stderr and dropped (the benchmark run then fails: it waits for every
// message at the upstream).
func (h *hop) forwarder() {
	var uc *upstreamConn
	for m := range h.queue {
		var err error
		for range 3 {
			if uc == nil {
				var c *smtp.Client
				var wire net.Conn
				var closeC func()
				if c, wire, closeC, err = dialTarget(context.Background(), h.up, "nullhop.bench.test"); err != nil {
					continue
				}
				uc = &upstreamConn{c: c, wire: wire, close: closeC}
			}
			if err = forward(uc, m.from, m.to, m.body); err == nil {
				break
			}
			uc.close()
			uc = nil
		}
		if err != nil {
			fmt.Fprintln(h.stderr, "nullhop: forwarding failed 3 times, message dropped:", err)
		}
	}
}

type upstreamConn struct {
	c     *smtp.Client
	wire  net.Conn
	close func()
}

// hopSession is one inbound session: the envelope, then the body read
// into memory, synced in the durable hop, and queued before the reply to
// DATA.
type hopSession struct {
	hop    *hop
	synced *os.File // with -sync
	from   string
	to     []string
}

func (s *hopSession) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *hopSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *hopSession) Reset()        { s.from, s.to = "", nil }
func (s *hopSession) Logout() error { return nil }

func (s *hopSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.synced != nil {
		if _, err := s.synced.Write(b); err != nil {
			return &smtp.SMTPError{Code: 451, Message: "write: " + err.Error()}
		}
		if err := unix.Fdatasync(int(s.synced.Fd())); err != nil {
			return &smtp.SMTPError{Code: 451, Message: "fdatasync: " + err.Error()}
		}
	}
	s.hop.queue <- hopMessage{from: s.from, to: s.to, body: b}
	s.to = nil
	return nil
}

// forward sends one message on uc, as the load generator does.
func forward(uc *upstreamConn, from string, to []string, body []byte) error {
	if !bytes.HasSuffix(body, []byte("\r\n")) {
		body = append(body, '\r', '\n')
	}
	_, err := sendMessage(uc.c, uc.wire, from, to, body)
	return err
}
