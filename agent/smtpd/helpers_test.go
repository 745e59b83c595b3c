package smtpd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// queued is one message a recQueue stored.
type queued struct {
	from string
	to   []string
	body string
}

// recQueue is the in-test Queue: it reads the whole body and records it,
// or returns fail (after reading, as a spool that failed to fsync would).
type recQueue struct {
	mu      sync.Mutex
	msgs    []queued
	fail    error
	started chan struct{} // if set, Put signals it before reading
}

func (q *recQueue) Put(ctx context.Context, from string, to []string, body io.Reader) (string, error) {
	if q.started != nil {
		q.started <- struct{}{}
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return "", fmt.Errorf("read message: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		return "", q.fail
	}
	q.msgs = append(q.msgs, queued{from: from, to: to, body: string(b)})
	return fmt.Sprintf("id%d", len(q.msgs)), nil
}

func (q *recQueue) setFail(err error) {
	q.mu.Lock()
	q.fail = err
	q.mu.Unlock()
}

func (q *recQueue) all() []queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queued(nil), q.msgs...)
}

// logBuffer collects log output safely across goroutines.
type logBuffer = testlib.LogBuf

const testHost = "mx.test"

// startServer runs a Server on 127.0.0.1:0 and shuts it down at the end
// of the test. It returns the server, its address and its log.
func startServer(t testing.TB, opt Options, q Queue) (*Server, string, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if opt.Hostname == "" {
		opt.Hostname = testHost
	}
	s, err := New(opt, q)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil && err != ErrServerClosed {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, l.Addr().String(), logs
}

// client speaks SMTP line by line.
type client struct {
	t    testing.TB
	conn net.Conn
	tp   *textproto.Conn
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	return dialFrom(t, addr, "")
}

// dialFrom connects from the local address local ("" for any) and reads
// the greeting.
func dialFrom(t testing.TB, addr, local string) *client {
	t.Helper()
	c := connect(t, addr, local)
	c.expect(220, "")
	return c
}

// connect connects from the local address local ("" for any) and reads
// nothing.
func connect(t testing.TB, addr, local string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// A bound on a broken test, not an assertion.
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &client{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	return c
}

// waitUntil polls cond until it holds; it fails the test after a generous
// bound (a bound on a hang, not a timing assertion).
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testlib.WaitFor(t, 20*time.Second, what, cond)
}

// reply reads one (possibly multi-line) reply.
func (c *client) reply() (int, string) {
	c.t.Helper()
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		if _, ok := err.(*textproto.Error); !ok {
			c.t.Fatalf("reading reply: %v", err)
		}
	}
	return code, msg
}

// expect reads a reply and checks its code and that its text starts with
// prefix (the enhanced code, typically).
func (c *client) expect(code int, prefix string) string {
	c.t.Helper()
	got, msg := c.reply()
	if got != code || !strings.HasPrefix(msg, prefix) {
		c.t.Fatalf("got reply %d %q, want %d %q...", got, msg, code, prefix)
	}
	return msg
}

// cmd sends one line and checks the reply.
func (c *client) cmd(line string, code int, prefix string) string {
	c.t.Helper()
	if err := c.tp.PrintfLine("%s", line); err != nil {
		c.t.Fatalf("sending %q: %v", line, err)
	}
	return c.expect(code, prefix)
}

// write sends raw bytes.
func (c *client) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// expectClosed checks that the server closed the connection with nothing
// more to say.
func (c *client) expectClosed() {
	c.t.Helper()
	line, err := c.tp.ReadLine()
	if err == nil {
		c.t.Fatalf("got %q, want the connection closed", line)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatalf("connection still open: %v", err)
	}
}

// send runs one whole transaction with body (CRLF lines, not
// dot-stuffed: the caller does that) and returns the DATA reply.
func (c *client) send(from, to, body string) (int, string) {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+">", 250, "")
	c.cmd("RCPT TO:<"+to+">", 250, "")
	c.cmd("DATA", 354, "")
	c.write(body + ".\r\n")
	return c.reply()
}

// canBind127002 reports whether this system can use 127.0.0.2 as a
// source address (Linux routes all of 127/8 to loopback).
func canBind127002(t testing.TB) bool {
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// testCert writes a self-signed certificate for 127.0.0.1 and its key to
// dir and returns their paths and a pool that trusts the certificate.
// Test only.
// testTLS is the listener's TLS config for a fresh test certificate, and
// the pool a client trusts it with.
func testTLS(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	certFile, keyFile, pool := testCert(t, t.TempDir())
	cfg, err := LoadTLS(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, pool
}

func testCert(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sealrelay smtpd test only"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{testHost},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// startTLS upgrades c after a 220 reply to STARTTLS.
func (c *client) startTLS(pool *x509.CertPool) {
	c.t.Helper()
	tc := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: testHost})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.tp = textproto.NewConn(tc)
}

// loopback is the list that allows only 127.0.0.1.
var only127001 = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
