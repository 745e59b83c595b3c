package main

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/testpki"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestSecretHygieneKinds runs the built binary through a life with a
// client certificate (AUTH EXTERNAL) and Amazon SES keys, from each
// source: deliveries, a 535 from a relay that quotes the SES login (the
// derived password in base64) and one refusing the certificate, `check`
// and `queue list`, a failed reload, both rotated. Then it looks for the
// private keys (every line of their PEM, the raw key in hex and base64),
// the secret access keys and the derived SMTP passwords (as is, hex,
// base64, and in their PLAIN and LOGIN forms) in the logs, every error and
// command output, the spool, the temp dirs, and the process's cmdline and
// environ.
func TestSecretHygieneKinds(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.Policy(t, "hygiene-kinds", vaulttest.ReadPolicy("secret", hygieneKindsPath)+vaulttest.WritePolicy("secret", hygieneKindsPath))
	vs.CreateToken(t, vaulttest.Token{ID: hygieneKindsToken, Policies: []string{"hygiene-kinds"}})
	for _, tc := range []struct{ source, format string }{{"age", "text"}, {"vault", "json"}} {
		t.Run(tc.source+"/"+tc.format, func(t *testing.T) { kindsHygiene(t, tc.source, tc.format, vs) })
	}
}

const (
	hygieneKindsPath  = "sealrelay-hygiene-kinds"
	hygieneKindsToken = "HygieneKindsToken-must-never-leak-9b2e"
)

// keyForms are the forms of a certificate's private key that could leak:
// each line of its PEM body, and the raw key in hex and base64.
func keyForms(t *testing.T, name string, c testpki.Cert) map[string]string {
	forms := map[string]string{}
	lines := strings.Split(strings.TrimSpace(c.KeyPEM(t)), "\n")
	for i, l := range lines[1 : len(lines)-1] {
		forms[fmt.Sprintf("%s PEM line %d", name, i+1)] = l
	}
	raw, err := c.Key.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	forms[name+" raw hex"] = hex.EncodeToString(raw)
	forms[name+" raw base64"] = base64.RawStdEncoding.EncodeToString(raw)
	return forms
}

func kindsHygiene(t *testing.T, source, format string, vs *vaulttest.Server) {
	const keyID, region = "AKIAIOSFODNN7EXAMPLE", "eu-west-1"
	secret1 := fmt.Sprintf("Hygiene/%s/SES+Secret+Key+0001", source)
	secret2 := fmt.Sprintf("Hygiene/%s/SES+Secret+Key+0002", source)
	clientCA := testpki.CA(t, "hygiene client CA")
	cert1 := testpki.Leaf(t, clientCA, testpki.Options{CommonName: "hygiene-1"})
	cert2 := testpki.Leaf(t, clientCA, testpki.Options{CommonName: "hygiene-2"})

	dir := t.TempDir()
	f, err := rig.Seal(dir, "rig server")
	if err != nil {
		t.Fatal(err)
	}
	sesUp := startUpstream(t, dir, upstream.Config{Accounts: map[string]string{keyID: sesPassword(secret1, region)}})
	sesUp.WriteCA(filepath.Join(dir, "ses-ca.pem"))
	certUp := startUpstream(t, dir, upstream.Config{ClientCAs: clientCA.Pool(), Behavior: upstream.Behavior{RequireAuth: true}})
	certUp.WriteCA(filepath.Join(dir, "cert-ca.pem"))
	timeouts := "server_name = \"localhost\"\nidle_timeout = \"2s\"\nconnect_timeout = \"5s\"\ncommand_timeout = \"10s\"\n"
	cfg := filepath.Join(dir, "sealrelay.toml")
	writeTestFile(t, cfg, fmt.Sprintf(`hostname = "agent.test"
data_dir = "data"
log_format = %q

[listen]
address = "127.0.0.1:0"

[[relay]]
name = "ses"
address = %q
credential = "ses"
ca_file = "ses-ca.pem"
%s
[[relay]]
name = "cert"
address = %q
client_certificate = "corp-cert"
mechanisms = ["EXTERNAL"]
ca_file = "cert-ca.pem"
%s
[[route]]
name = "ses"
senders = ["*@ses.test"]
relays = ["ses"]

[[route]]
name = "default"
relays = ["cert"]

[credentials]
identity = "identity.txt"
file = "credentials.age"

[queue]
%s`, format, sesUp.Addr(), timeouts, certUp.Addr(), timeouts, rig.QuickQueue))
	k := &kindRig{dir: dir, cfg: cfg, vault: source == "vault"}
	if k.vault {
		rigVault(t, cfg, vs, hygieneKindsPath, true)
		if err := os.WriteFile(filepath.Join(dir, "vault-token"), []byte(hygieneKindsToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var printed bytes.Buffer
	chain := filepath.Join(t.TempDir(), "chain.pem")
	setCert := func(c testpki.Cert) {
		writeTestFile(t, chain, c.CertPEM(clientCA))
		k.set(t, &printed, "corp-cert", c.KeyPEM(t), "--kind", "certificate", "--certificate", chain, "--secret-stdin")
	}
	setSES := func(secret string) {
		k.set(t, &printed, "ses", secret+"\n", "--kind", "ses", "--access-key-id", keyID, "--region", region, "--secret-stdin")
	}
	setSES(secret1)
	setCert(cert1)

	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o700)
	cli := func(args ...string) {
		var out, errb bytes.Buffer
		run(&env{ctx: t.Context(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb}, args)
		printed.Write(out.Bytes())
		printed.Write(errb.Bytes())
	}
	p := startProcess(t, cfg, "TMPDIR="+tmp)
	procFiles := procSnapshot(t, p)

	sendBoth := func(n int) {
		t.Helper()
		if err := send(p.addr, "app@ses.test", "user@example.net", fmt.Sprintf("<hk.ses.%d@rig>", n)); err != nil {
			t.Fatal(err)
		}
		if err := send(p.addr, "app@client.test", "user@example.net", fmt.Sprintf("<hk.cert.%d@rig>", n)); err != nil {
			t.Fatal(err)
		}
	}
	sendBoth(1)
	if err := sesUp.WaitMessages(1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := certUp.WaitMessages(1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if sesUp.Messages()[0].Username != keyID || certUp.Messages()[0].Username != "hygiene-1" {
		t.Fatalf("delivered as %q and %q", sesUp.Messages()[0].Username, certUp.Messages()[0].Username)
	}

	// The SES relay moves to the second key's password and quotes what the
	// client sent in its 535; the other refuses the certificate.
	sesUp.SetPassword(keyID, sesPassword(secret2, region))
	sesUp.UpdateBehavior(func(b *upstream.Behavior) { b.EchoAuth = true })
	sesUp.DropSessions()
	certUp.UpdateBehavior(func(b *upstream.Behavior) { b.AuthReply = &smtpAuthInvalid })
	certUp.DropSessions()
	sendBoth(2)
	waitFor(t, 15*time.Second, "535s in the log", func() bool { return strings.Count(p.stderr.String(), "535") >= 2 })
	cli("check", "-c", cfg)
	cli("queue", "list", "-c", cfg)
	if source == "age" {
		good := readTestFile(t, f.Credentials)
		writeTestFile(t, f.Credentials, good[:len(good)-40])
		p.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, 10*time.Second, "the failed reload", func() bool { return strings.Contains(p.stderr.String(), "keeping the credentials") })
		writeTestFile(t, f.Credentials, good)
	}
	certUp.UpdateBehavior(func(b *upstream.Behavior) { b.AuthReply = nil })
	setSES(secret2)
	setCert(cert2)
	if err := sesUp.WaitMessages(2, 30*time.Second); err != nil {
		t.Fatalf("no SES delivery after the rotation: %v", err)
	}
	if err := certUp.WaitMessages(2, 30*time.Second); err != nil {
		t.Fatalf("no delivery with the new certificate: %v", err)
	}
	cli("check", "-c", cfg)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	printed.WriteString(p.stderr.String())
	for _, want := range []string{"PLAIN as " + keyID + " rejected: 535", "EXTERNAL with certificate CN=hygiene-1,O=sealrelay test only rejected: 535"} {
		if !strings.Contains(printed.String(), want) {
			t.Errorf("the run never said %q: the test did not exercise that error path", want)
		}
	}

	forbidden := map[string]string{
		"identity secret key": regexp.MustCompile(`AGE-SECRET-KEY-1[0-9A-Z]+`).FindString(readTestFile(t, f.Identity)),
		"any age secret key":  "AGE-SECRET-KEY-",
		"any PEM private key": "PRIVATE KEY-----",
		"vault token":         hygieneKindsToken,
	}
	for name, c := range map[string]testpki.Cert{"first private key": cert1, "second private key": cert2} {
		for k, v := range keyForms(t, name, c) {
			forbidden[k] = v
		}
	}
	for i, secret := range []string{secret1, secret2} {
		for k, v := range secretForms(keyID, secret) {
			forbidden[fmt.Sprintf("secret access key %d %s", i+1, k)] = v
		}
		for k, v := range secretForms(keyID, sesPassword(secret, region)) {
			forbidden[fmt.Sprintf("SES SMTP password %d %s", i+1, k)] = v
		}
	}
	hygieneScan(t, dir, printed.Bytes(), keyID, procFiles, forbidden)
}

// smtpAuthInvalid is a relay's 535 to any AUTH.
var smtpAuthInvalid = smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
