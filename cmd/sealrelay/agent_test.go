package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestUntrustedCertificate: an upstream whose certificate ca_file does not
// vouch for gets nothing, and the error names certificate verification.
func TestUntrustedCertificate(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{UntrustedCert: true})
	a := startAgent(t, rigConfig(t, dir, up.Addr(), relayOpts{}, ""))
	if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<untrusted@rig>"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "a failed attempt", func() bool {
		items := a.Queue().List()
		return len(items) == 1 && items[0].LastError != ""
	})
	it := onlyItem(t, a.Queue())
	if !strings.Contains(it.LastError, "certificate") || !strings.Contains(it.LastError, "verif") {
		t.Errorf("last error %q does not name certificate verification", it.LastError)
	}
	for _, s := range up.Sessions() {
		if len(s.Auths) > 0 || s.MailIssued() {
			t.Errorf("session %d: AUTH or MAIL sent to an unverified upstream", s.ID)
		}
	}
	if up.Count() != 0 {
		t.Errorf("upstream received %d messages", up.Count())
	}
}

// TestRestartDeliversQueued: with the upstream down, messages are accepted;
// the agent stops; the upstream starts; the agent restarts and delivers
// every one.
func TestRestartDeliversQueued(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	first := startUpstream(t, dir, upstream.Config{})
	upAddr, ca := first.Addr(), first.CA()
	first.Close() // the relay is down from the start

	cfg := rigConfig(t, dir, upAddr, relayOpts{}, "")
	a := startAgent(t, cfg)
	const n = 20
	for i := range n {
		if err := send(a.Addr().String(), "app@client.test", "user@example.net", fmt.Sprintf("<restart.%d@rig>", i)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	up := startUpstream(t, dir, upstream.Config{Addr: upAddr, CA: ca})
	b := startAgent(t, cfg)
	if err := up.WaitMessages(n, 30*time.Second); err != nil {
		t.Fatalf("after restart: %v (got %d of %d)", err, up.Count(), n)
	}
	assertEachOnce(t, up, "restart", n)
	waitFor(t, 10*time.Second, "the spool to empty", func() bool { return len(b.Queue().List()) == 0 })
}

// assertEachOnce checks the upstream got <prefix.i@rig> for every i < n.
func assertEachOnce(t *testing.T, up *upstream.Server, prefix string, n int) {
	t.Helper()
	got := map[string]int{}
	for _, m := range up.Messages() {
		got[m.MessageID]++
		if m.Username != rigUser || !m.TLS {
			t.Errorf("message %s delivered as %q, TLS %v", m.MessageID, m.Username, m.TLS)
		}
	}
	for i := range n {
		if id := fmt.Sprintf("<%s.%d@rig>", prefix, i); got[id] == 0 {
			t.Errorf("lost: %s", id)
		}
	}
}

// TestKill9AfterAck runs the built binary, kills it with SIGKILL right after
// the last 250, and checks that a restarted agent delivers every message.
func TestKill9AfterAck(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	first := startUpstream(t, dir, upstream.Config{})
	upAddr, ca := first.Addr(), first.CA()
	first.Close()
	cfg := rigConfig(t, dir, upAddr, relayOpts{}, "")

	p := startProcess(t, cfg)
	const n = 10
	for i := range n {
		if err := send(p.addr, "app@client.test", "user@example.net", fmt.Sprintf("<kill.%d@rig>", i)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(t, 10*time.Second)

	up := startUpstream(t, dir, upstream.Config{Addr: upAddr, CA: ca})
	startProcess(t, cfg)
	if err := up.WaitMessages(n, 30*time.Second); err != nil {
		t.Fatalf("after kill -9 and restart: %v (got %d of %d)", err, up.Count(), n)
	}
	assertEachOnce(t, up, "kill", n)
}

// TestSIGTERMDrainsAndSIGHUPReloads: SIGHUP re-reads the credential file
// (a rotated password is used without a restart), and SIGTERM stops the
// process with status 0.
func TestSIGTERMDrainsAndSIGHUPReloads(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	p := startProcess(t, cfg)

	if err := send(p.addr, "app@client.test", "user@example.net", "<hup.0@rig>"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(1, 15*time.Second); err != nil {
		t.Fatal(err)
	}

	// A damaged credential file: SIGHUP keeps the old credentials and logs why.
	credFile := filepath.Join(dir, "credentials.age")
	good, err := os.ReadFile(credFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(credFile, good[:len(good)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the failed reload to be logged", func() bool {
		return strings.Contains(p.stderr.String(), "keeping the credentials")
	})
	if err := send(p.addr, "app@client.test", "user@example.net", "<hup.1@rig>"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(2, 15*time.Second); err != nil {
		t.Fatalf("delivery with the old credentials after a failed reload: %v", err)
	}

	// The operator rotates: new password at the relay and in the file.
	if err := os.WriteFile(credFile, good, 0o600); err != nil {
		t.Fatal(err)
	}
	up.SetPassword(rigUser, "rotated-"+rigPass)
	writeCred(t, dir, rigUser, "rotated-"+rigPass)
	p.cmd.Process.Signal(syscall.SIGHUP)
	if err := send(p.addr, "app@client.test", "user@example.net", "<hup.2@rig>"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(3, 20*time.Second); err != nil {
		t.Fatalf("delivery after rotation: %v", err)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Errorf("exit status after SIGTERM %d, want 0", code)
	}
	if !strings.Contains(p.stderr.String(), "msg=stopped") {
		t.Errorf("no clean stop in the log")
	}
	for _, s := range []string{rigPass, "rotated-" + rigPass} {
		if strings.Contains(p.stderr.String(), s) {
			t.Errorf("the log contains a password")
		}
	}
}

// writeCred reseals dir/credentials.age with a new password for "upstream",
// as `sealrelay creds set` would.
func writeCred(t *testing.T, dir, user, pass string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{ctx: t.Context(), stdin: strings.NewReader(pass + "\n"), stdout: &out, stderr: &errb}
	code := run(e, []string{"creds", "set", "upstream", "-f", filepath.Join(dir, "credentials.age"),
		"-R", filepath.Join(dir, "recipients.txt"), "-i", filepath.Join(dir, "identity.txt"),
		"--username", user, "--password-stdin"})
	if code != 0 {
		t.Fatalf("creds set: exit %d: %s", code, errb.String())
	}
}

// TestPermanentFailureDSN: a 5xx for a recipient sends a DSN back to the
// sender (through the relay); a null-sender message gets none, and is held.
func TestPermanentFailureDSN(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{{
		Command: "RCPT", Contains: "nosuchuser",
		Reply: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"},
	}}}})
	a := startAgent(t, rigConfig(t, dir, up.Addr(), relayOpts{}, ""))

	if err := send(a.Addr().String(), "sender@client.test", "nosuchuser@example.net", "<dsn.1@rig>"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(1, 15*time.Second); err != nil {
		t.Fatalf("no DSN reached the relay: %v", err)
	}
	dsn := up.Messages()[0]
	if dsn.From != "" || len(dsn.To) != 1 || dsn.To[0] != "sender@client.test" {
		t.Fatalf("DSN envelope from %q to %v, want <> to sender@client.test", dsn.From, dsn.To)
	}
	for _, want := range []string{"multipart/report", "report-type=delivery-status", "nosuchuser@example.net", "5.1.1", "no such user here", "<dsn.1@rig>"} {
		if !bytes.Contains(dsn.Data, []byte(want)) {
			t.Errorf("DSN lacks %q", want)
		}
	}
	waitFor(t, 10*time.Second, "the spool to empty", func() bool { return len(a.Queue().List()) == 0 })

	// The null sender: the failure is final, and no DSN is made; the
	// message is held in the queue until an operator deletes it.
	before := a.Queue().Stats().Bounced
	if err := sendFrom(a.Addr().String(), "", "nosuchuser@example.net", "<dsn.2@rig>"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the null-sender message to fail", func() bool {
		s := a.Queue().Stats()
		return s.Failed >= 2 && s.Held == 1 && s.Queued == 1
	})
	if got := a.Queue().Stats().Bounced; got != before {
		t.Errorf("a null-sender message produced a DSN")
	}
	if up.Count() != 1 {
		t.Errorf("upstream got %d messages, want only the first DSN", up.Count())
	}
}

// sendFrom is send with a sender that may be the null sender.
func sendFrom(addr, from, to, msgID string) error {
	return send(addr, from, to, msgID)
}

// TestDisallowedNetwork: with only 127.0.0.1/32 allowed, a client from
// 127.0.0.2 gets 550 5.7.1 and nothing is queued.
func TestDisallowedNetwork(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	data, _ := os.ReadFile(cfg)
	data = bytes.Replace(data, []byte("[listen]\n"), []byte("[listen]\nallowed_networks = [\"127.0.0.1/32\"]\n"), 1)
	os.WriteFile(cfg, data, 0o644)
	a := startAgent(t, cfg)

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	conn, err := d.Dial("tcp", a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("outsider.test"); err != nil {
		t.Fatal(err)
	}
	err = c.Mail("outsider@example.org", nil)
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("MAIL from a disallowed network: %v, want 550 5.7.1", err)
	}
	if n := len(a.Queue().List()); n != 0 {
		t.Errorf("%d items queued", n)
	}
	// The allowed address still works.
	if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<allowed@rig>"); err != nil {
		t.Fatal(err)
	}
}

// TestSwaks: a client nobody here wrote, swaks from Debian, submits over
// STARTTLS to the agent, and the upstream receives the message.
func TestSwaks(t *testing.T) {
	swaks, err := exec.LookPath("swaks")
	if err != nil {
		t.Fatal("swaks is not installed: `make test` installs it (tools/deps.sh)")
	}
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	// The agent's own listener certificate, from a CA of the test's.
	ca, err := upstream.NewCA("agent listener CA")
	if err != nil {
		t.Fatal(err)
	}
	writeKeyPair(t, ca, filepath.Join(dir, "listen-cert.pem"), filepath.Join(dir, "listen-key.pem"))
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	data, _ := os.ReadFile(cfg)
	data = bytes.Replace(data, []byte("[listen]\n"), []byte("[listen]\ntls_cert = \"listen-cert.pem\"\ntls_key = \"listen-key.pem\"\n"), 1)
	os.WriteFile(cfg, data, 0o644)
	a := startAgent(t, cfg)

	host, port, _ := net.SplitHostPort(a.Addr().String())
	out, err := exec.Command(swaks, "--server", host, "--port", port, "--tls",
		"--from", "swaks@client.test", "--to", "user@example.net",
		"--header", "Message-Id: <swaks@rig>", "--body", "sent by swaks",
		"--timeout", "20").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("STARTTLS")) || !bytes.Contains(out, []byte("250 ")) {
		t.Errorf("swaks transcript shows no STARTTLS or no 250:\n%s", out)
	}
	if err := up.WaitMessages(1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	m := up.Messages()[0]
	if m.MessageID != "<swaks@rig>" || !bytes.Contains(m.Data, []byte("sent by swaks")) {
		t.Errorf("upstream got Message-ID %q, body %q", m.MessageID, m.Data)
	}
	if !bytes.Contains(m.Data, []byte("with ESMTPS")) {
		t.Errorf("the Received header does not record the TLS session:\n%s", m.Data)
	}
}

// TestDemo runs `sealrelay demo` as a user would.
func TestDemo(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(&env{ctx: t.Context(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb}, []string{"demo"})
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"[1/8]", "demands STARTTLS and AUTH", "authenticated as", "[8/8]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "AGE-SECRET-KEY") {
		t.Error("demo printed a secret key")
	}
}

// writeKeyPair issues a certificate for 127.0.0.1/localhost from ca and
// writes it and its key as PEM files.
func writeKeyPair(t *testing.T, ca *upstream.CA, certFile, keyFile string) {
	t.Helper()
	cert, err := ca.Issue()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
