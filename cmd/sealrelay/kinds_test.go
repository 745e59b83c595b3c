package main

// Each kind of credential end to end, sealed with `creds set` into the age
// file or (sealed) into Vault, used by the agent against a real peer:
// CRAM-MD5 and SCRAM-SHA-256 against Postfix with Dovecot's SASL, a TLS
// client certificate against Postfix checking client certificates, and
// Amazon SES keys against an upstream that checks the SES-derived
// password. Each also meets its wrong secret: deferred, never bounced, and
// `check` exits 1 naming what failed.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/internal/testing/peers/dovecot"
	"github.com/sealrelay/sealrelay/internal/testing/peers/postfixtest"
	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/testpki"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// kindRig is sealrelay set up for one kind of credential: a server key,
// the entries written with `creds set` into the age file or, sealed, into
// Vault, and a config with one relay.
type kindRig struct {
	dir, cfg string
	vault    bool
}

// newKindRig writes in a new directory a server key, an empty credential
// file, the relay's CA and a config relaying to r (its ca_file and
// timeouts filled in) with the entries in source: "age", or "vault" on vs
// at a path of the test's own.
func newKindRig(t *testing.T, source string, vs *vaulttest.Server, caPEM []byte, r rig.Relay) *kindRig {
	t.Helper()
	dir := t.TempDir()
	if _, err := rig.Seal(dir, "rig server"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "relay-ca.pem"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	r.Name, r.CAFile = "up", "relay-ca.pem"
	r.Extra += "idle_timeout = \"30s\"\nconnect_timeout = \"5s\"\ncommand_timeout = \"20s\"\n"
	cfg, err := rig.WriteConfig(dir, rig.Config{Hostname: "agent.test", Relay: r, Queue: rig.QuickQueue})
	if err != nil {
		t.Fatal(err)
	}
	k := &kindRig{dir: dir, cfg: cfg, vault: source == "vault"}
	if k.vault {
		rigVault(t, cfg, vs, "kinds-"+regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"), true)
	}
	return k
}

// set runs `creds set NAME ARGS...` with stdin against the rig's source,
// keeping what it printed in printed (if not nil).
func (k *kindRig) set(t *testing.T, printed *bytes.Buffer, name, stdin string, args ...string) {
	t.Helper()
	cmd := []string{"creds", "set", name}
	if k.vault {
		cmd = append(cmd, "--vault", "-c", k.cfg)
	} else {
		cmd = append(cmd, "-f", filepath.Join(k.dir, rig.CredentialsFile), "-R", filepath.Join(k.dir, rig.RecipientsFile),
			"-i", filepath.Join(k.dir, rig.IdentityFile))
	}
	if printed == nil {
		printed = &bytes.Buffer{}
	}
	recordingCLI(t, printed)(stdin, 0, append(cmd, args...)...)
}

// setAndWait is set, then waits until the running agent's store has seen
// one more change.
func (k *kindRig) setAndWait(t *testing.T, a *runningAgent, name, stdin string, args ...string) {
	t.Helper()
	before := a.Store().Stats().Changes
	k.set(t, nil, name, stdin, args...)
	waitFor(t, 20*time.Second, "the agent to load the new "+name, func() bool { return a.Store().Stats().Changes > before })
}

// deferredWith waits until the queue holds one item, tried at least
// twice, whose last error holds each of want; it fails the test if a DSN
// was made.
func deferredWith(t *testing.T, a *runningAgent, want ...string) string {
	t.Helper()
	var last string
	waitFor(t, 30*time.Second, "a deferral saying "+strings.Join(want, " ... "), func() bool {
		items := a.Queue().List()
		if len(items) != 1 || items[0].Attempts < 2 {
			return false
		}
		last = items[0].LastError
		for _, w := range want {
			if !strings.Contains(last, w) {
				return false
			}
		}
		return true
	})
	if b := a.Queue().Stats().Bounced; b != 0 {
		t.Errorf("%d DSNs made, want none", b)
	}
	return last
}

// checkFails runs `check` and wants exit 1 with each of want in its
// output.
func checkFails(t *testing.T, cfg string, want ...string) {
	t.Helper()
	code, out, errs := runCLI(t, "check", "-c", cfg)
	if code != 1 {
		t.Errorf("check: exit %d, want 1\n%s%s", code, out, errs)
	}
	for _, w := range want {
		if !strings.Contains(out+errs, w) {
			t.Errorf("check does not say %q:\n%s%s", w, out, errs)
		}
	}
}

// forSources runs f as a subtest for each credential source, with a Vault
// shared by the subtests.
func forSources(t *testing.T, f func(t *testing.T, source string, vs *vaulttest.Server)) {
	vs := vaulttest.Start(t)
	for _, source := range []string{"age", "vault"} {
		t.Run(source, func(t *testing.T) { f(t, source, vs) })
	}
}

const (
	kindUser   = "relay@example.test"
	kindPass   = "Kind-Pa55word-not-in-logs"
	kindWrong  = "Wrong-Pa55word-not-in-logs"
	allPassing = `mechanisms = ["SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"]` + "\n"
)

// TestPasswordMechanismsEndToEnd: a relay that offers only CRAM-MD5, and
// one that offers only SCRAM-SHA-256, accept the sealed password (Postfix
// logs the session's sasl_method); a wrong password is deferred, never
// bounced, and check names the mechanism and the relay's 535; the right
// one sealed again delivers what waited.
func TestPasswordMechanismsEndToEnd(t *testing.T) {
	forSources(t, func(t *testing.T, source string, vs *vaulttest.Server) {
		for _, mech := range []string{"CRAM-MD5", "SCRAM-SHA-256"} {
			t.Run(mech, func(t *testing.T) {
				dr := dovecot.StartRelay(t, dovecot.Config{Mechanisms: []string{mech}, Users: map[string]string{kindUser: kindPass}}, postfixtest.Config{})
				k := newKindRig(t, source, vs, dr.CA.PEM(), rig.Relay{Address: dr.Addr(), Auth: "required", Credential: "upstream", Extra: allPassing})
				k.set(t, nil, "upstream", kindPass+"\n", "--username", kindUser, "--password-stdin")
				a := startAgent(t, k.cfg)

				if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<mech.1@rig>"); err != nil {
					t.Fatal(err)
				}
				if err := dr.Upstream.WaitMessages(1, 30*time.Second); err != nil {
					t.Fatal(err)
				}
				logins := dr.Postfix.WaitSASLLogins(1, 10*time.Second)
				if len(logins) != 1 || logins[0].Method != mech || logins[0].Username != kindUser {
					t.Fatalf("Postfix logged %+v, want one %s login as %s", logins, mech, kindUser)
				}
				t.Logf("%s %s: Postfix logged sasl_method=%s sasl_username=%s", source, mech, logins[0].Method, logins[0].Username)

				k.setAndWait(t, a, "upstream", kindWrong+"\n", "--username", kindUser, "--password-stdin")
				if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<mech.2@rig>"); err != nil {
					t.Fatal(err)
				}
				refusal := mech + " as " + kindUser + " rejected: 535 5.7.8 authentication credentials invalid"
				deferredWith(t, a, refusal)
				checkFails(t, k.cfg, "FAILED: AUTH: "+refusal)

				k.setAndWait(t, a, "upstream", kindPass+"\n", "--username", kindUser, "--password-stdin")
				if err := dr.Upstream.WaitMessages(2, 30*time.Second); err != nil {
					t.Fatal(err)
				}
				if n, b := dr.Upstream.Count(), a.Queue().Stats().Bounced; n != 2 || b != 0 {
					t.Errorf("upstream got %d messages, %d DSNs made; want 2 and 0", n, b)
				}
				if strings.Contains(dr.Postfix.Log()+dr.Dovecot.Log()+a.logs.String(), "Pa55word") {
					t.Error("a password is in a log")
				}
			})
		}
	})
}

// certPostfix starts Postfix asking clients for a certificate and relaying
// for those whose certificate one of clientCAs signed
// (permit_tls_all_clientcerts), into an upstream; its Received headers
// name the client certificate. params are more main.cf settings.
func certPostfix(t *testing.T, params map[string]string, clientCAs ...testpki.Cert) (*postfixtest.Instance, *upstream.Server, *upstream.CA) {
	t.Helper()
	serverCA, err := upstream.NewCA("postfix server CA")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := serverCA.Issue()
	if err != nil {
		t.Fatal(err)
	}
	var caPEM string
	for _, ca := range clientCAs {
		caPEM += ca.CertPEM()
	}
	up := startUpstream(t, t.TempDir(), upstream.Config{TLS: upstream.NoTLS})
	all := map[string]string{"smtpd_tls_received_header": "yes"}
	for k, v := range params {
		all[k] = v
	}
	p := postfixtest.StartT(t, postfixtest.Config{Relayhost: up.Addr(), TLSCert: &serverCert, ClientCAPEM: []byte(caPEM), Params: all})
	return p, up, serverCA
}

var clientCN = regexp.MustCompile(`\(Client CN "([^"]+)", Issuer "[^"]*" \(verified OK\)\)`)

// receivedCN returns the client certificate's name in the Received header
// Postfix wrote on m, "" if none.
func receivedCN(m upstream.Message) string {
	if s := clientCN.FindSubmatch(m.Data); s != nil {
		return string(s[1])
	}
	return ""
}

// setCert seals leaf (signed by ca) and its key as the certificate entry
// name: the chain from a file (it is not secret), the key on stdin.
func (k *kindRig) setCert(t *testing.T, a *runningAgent, printed *bytes.Buffer, name string, leaf, ca testpki.Cert) {
	t.Helper()
	chain := filepath.Join(t.TempDir(), "chain.pem")
	writeTestFile(t, chain, leaf.CertPEM(ca))
	args := []string{"--kind", "certificate", "--certificate", chain, "--secret-stdin"}
	if a == nil {
		k.set(t, printed, name, leaf.KeyPEM(t), args...)
		return
	}
	k.setAndWait(t, a, name, leaf.KeyPEM(t), args...)
}

// TestClientCertificateEndToEnd: Postfix trusts the sealed client
// certificate and relays without AUTH; check says which certificate it
// showed. A certificate from another CA gets Postfix's 554 5.7.1 at RCPT:
// deferred, never bounced, and check fails naming the certificate; the
// right one sealed again delivers what waited.
func TestClientCertificateEndToEnd(t *testing.T) {
	forSources(t, func(t *testing.T, source string, vs *vaulttest.Server) {
		clientCA, otherCA := testpki.CA(t, "client CA"), testpki.CA(t, "another CA")
		good := testpki.Leaf(t, clientCA, testpki.Options{CommonName: "relay1.sealrelay.test"})
		p, up, serverCA := certPostfix(t, nil, clientCA)
		k := newKindRig(t, source, vs, serverCA.PEM(), rig.Relay{Address: p.Addr(), Auth: "disabled", Extra: "client_certificate = \"corp-cert\"\n"})
		k.setCert(t, nil, nil, "corp-cert", good, clientCA)
		a := startAgent(t, k.cfg)

		if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<cert.1@rig>"); err != nil {
			t.Fatal(err)
		}
		if err := up.WaitMessages(1, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if cn := receivedCN(up.Messages()[0]); cn != "relay1.sealrelay.test" {
			t.Fatalf("Postfix's Received header names client certificate %q, want relay1.sealrelay.test:\n%s", cn, up.Messages()[0].Data)
		}
		if _, err := p.WaitLog("Trusted TLS connection established", 10*time.Second); err != nil {
			t.Error(err)
		}
		code, out, errs := runCLI(t, "check", "-c", k.cfg)
		if code != 0 || !strings.Contains(out, "relay up ("+p.Addr()+"): ok, TLS 1.3, client certificate CN=relay1.sealrelay.test,O=sealrelay test only, no AUTH") {
			t.Errorf("check: exit %d\n%s%s", code, out, errs)
		}

		k.setCert(t, a, nil, "corp-cert", testpki.Leaf(t, otherCA, testpki.Options{CommonName: "relay1.sealrelay.test"}), otherCA)
		if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<cert.2@rig>"); err != nil {
			t.Fatal(err)
		}
		last := deferredWith(t, a, "554 5.7.1", "Access denied", `does it trust the client certificate "corp-cert"?`)
		t.Logf("%s: deferred with: %s", source, last)
		checkFails(t, k.cfg, "FAILED: relaying: RCPT TO:<postmaster@agent.test>: 554 5.7.1", `client certificate "corp-cert"`,
			`check failed: 1 relay(s) with auth = "required" or a client certificate cannot be used`)

		k.setCert(t, a, nil, "corp-cert", good, clientCA)
		if err := up.WaitMessages(2, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if n, b := up.Count(), a.Queue().Stats().Bounced; n != 2 || b != 0 {
			t.Errorf("upstream got %d messages, %d DSNs made; want 2 and 0", n, b)
		}
	})
}

// TestClientCertificateRequired: Postfix with smtpd_tls_req_ccert refuses
// a certificate it does not trust in the TLS handshake itself: deferred,
// never bounced, and check names the certificate.
func TestClientCertificateRequired(t *testing.T) {
	clientCA, otherCA := testpki.CA(t, "client CA"), testpki.CA(t, "another CA")
	p, up, serverCA := certPostfix(t, map[string]string{"smtpd_tls_req_ccert": "yes", "smtpd_tls_security_level": "encrypt"}, clientCA)
	k := newKindRig(t, "age", nil, serverCA.PEM(), rig.Relay{Address: p.Addr(), Auth: "disabled", Extra: "client_certificate = \"corp-cert\"\n"})
	k.setCert(t, nil, nil, "corp-cert", testpki.Leaf(t, otherCA, testpki.Options{CommonName: "relay1.sealrelay.test"}), otherCA)
	a := startAgent(t, k.cfg)
	if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<req.1@rig>"); err != nil {
		t.Fatal(err)
	}
	last := deferredWith(t, a, `client certificate "corp-cert"`)
	t.Logf("deferred with: %s", last)
	checkFails(t, k.cfg, `client certificate "corp-cert"`)
	k.setCert(t, a, nil, "corp-cert", testpki.Leaf(t, clientCA, testpki.Options{CommonName: "relay1.sealrelay.test"}), clientCA)
	if err := up.WaitMessages(1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if b := a.Queue().Stats().Bounced; b != 0 {
		t.Errorf("%d DSNs made", b)
	}
}

// sesPassword derives the SES SMTP password (version 4) here, apart from
// secrets/ses, from the algorithm AWS publishes: HMAC-SHA256 keyed with
// "AWS4"+secret over "11111111", then the region, "ses", "aws4_request"
// and "SendRawEmail" in turn, the byte 4 before it, base64.
func sesPassword(secret, region string) string {
	key := []byte("AWS4" + secret)
	for _, msg := range []string{"11111111", region, "ses", "aws4_request", "SendRawEmail"} {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		key = m.Sum(nil)
	}
	return base64.StdEncoding.EncodeToString(append([]byte{4}, key...))
}

// TestSESEndToEnd: an upstream whose account is the access key id with
// the SES-derived password (derived here, checked against the published
// vectors) takes mail from the sealed ses entry; a wrong secret key is
// deferred, never bounced, and check names the key id and the 535; the
// second access key of an IAM user, sealed while the relay accepts both,
// takes over.
func TestSESEndToEnd(t *testing.T) {
	for _, v := range []struct{ secret, region, want string }{
		{"some+secret+key", "eu-central-1", "BMXhUYlu5Z3gSXVQORxlVa7XPaz91aGWdfHxvkOZdWZ2"},
		{"another+secret+key", "us-west-1", "BKVmjjMDFk/qqw8EROW99bjCS65PF8WKvK5bSr4Y6EqF"},
	} {
		if got := sesPassword(v.secret, v.region); got != v.want {
			t.Fatalf("the test's derivation gives %s for %s, want %s", got, v.region, v.want)
		}
	}
	const (
		keyID1, keyID2 = "AKIAIOSFODNN7EXAMPLE", "AKIAI44QH8DHBEXAMPLE"
		secret1        = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
		secret2        = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"
		region         = "eu-central-1"
	)
	forSources(t, func(t *testing.T, source string, vs *vaulttest.Server) {
		up := startUpstream(t, t.TempDir(), upstream.Config{Accounts: map[string]string{keyID1: sesPassword(secret1, region)}})
		k := newKindRig(t, source, vs, up.CAPEM(), rig.Relay{Address: up.Addr(), Auth: "required", Credential: "ses"})
		ses := func(id string) []string {
			return []string{"--kind", "ses", "--access-key-id", id, "--region", region, "--secret-stdin"}
		}
		k.set(t, nil, "ses", secret1+"\n", ses(keyID1)...)
		a := startAgent(t, k.cfg)
		if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<ses.1@rig>"); err != nil {
			t.Fatal(err)
		}
		if err := up.WaitMessages(1, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if m := up.Messages()[0]; m.Username != keyID1 {
			t.Fatalf("delivered as %q, want the access key id", m.Username)
		}

		k.setAndWait(t, a, "ses", "wrong/secret/key/"+secret1[17:]+"\n", ses(keyID1)...)
		if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<ses.2@rig>"); err != nil {
			t.Fatal(err)
		}
		refusal := "PLAIN as " + keyID1 + " rejected: 535 5.7.8 authentication credentials invalid"
		deferredWith(t, a, refusal)
		checkFails(t, k.cfg, "FAILED: AUTH: "+refusal)

		// The IAM user's second key: the relay accepts both while the
		// agents move to the new one.
		up.SetPassword(keyID2, sesPassword(secret2, region))
		k.setAndWait(t, a, "ses", secret2+"\n", ses(keyID2)...)
		if err := up.WaitMessages(2, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if m := up.Messages()[1]; m.Username != keyID2 {
			t.Errorf("after the rotation, delivered as %q, want %s", m.Username, keyID2)
		}
		if b := a.Queue().Stats().Bounced; b != 0 {
			t.Errorf("%d DSNs made", b)
		}
		for _, s := range []string{secret1, secret2, sesPassword(secret1, region), sesPassword(secret2, region)} {
			if strings.Contains(a.logs.String(), s) {
				t.Errorf("the agent's log holds a secret (%.6s...)", s)
			}
		}
	})
}

// certRotation keeps sending through the agent to a Postfix that trusts
// two client CAs while the client certificate is rotated twice, sealed
// as `creds set` seals it: to one from the other CA, then to a new one
// from the first CA. Nothing may be lost or bounced, and every message
// the agent took after it loaded a certificate went on a connection that
// showed that certificate (Postfix's Received header names it): pooled
// connections made with the old one were replaced, not reused. "Took
// after" counts from when the client began the submission: the agent
// starts delivering as soon as the message is on disk, before the client
// has read the 250 and said QUIT, so a message whose session ended just
// after the load may have gone out just before it.
func certRotation(t *testing.T, source string, vs *vaulttest.Server) {
	caA, caB := testpki.CA(t, "client CA A"), testpki.CA(t, "client CA B")
	p, up, serverCA := certPostfix(t, nil, caA, caB)
	k := newKindRig(t, source, vs, serverCA.PEM(), rig.Relay{Address: p.Addr(), Auth: "disabled", Extra: "client_certificate = \"corp-cert\"\n"})
	k.setCert(t, nil, nil, "corp-cert", testpki.Leaf(t, caA, testpki.Options{CommonName: "rot-1"}), caA)
	a := startAgent(t, k.cfg)

	l := startLoad(a.Addr().String(), "certrot")
	time.Sleep(1500 * time.Millisecond)
	k.setCert(t, a, nil, "corp-cert", testpki.Leaf(t, caB, testpki.Options{CommonName: "rot-2"}), caB)
	loaded2 := time.Now()
	time.Sleep(2500 * time.Millisecond)
	k.setCert(t, a, nil, "corp-cert", testpki.Leaf(t, caA, testpki.Options{CommonName: "rot-3"}), caA)
	loaded3 := time.Now()
	time.Sleep(2500 * time.Millisecond)
	accepted, refused := l.stop()
	started := l.startedAt()

	waitRelayed(t, up, accepted)
	o := tally(t, a, up, accepted, refused)
	perCN := map[string]int{}
	wrong := 0
	for id := range accepted {
		at := started[id]
		cn := receivedCN(o.delivered[id])
		perCN[cn]++
		want := map[string]bool{"rot-1": at.Before(loaded2), "rot-2": at.Before(loaded3), "rot-3": true}
		if at.After(loaded3) {
			want["rot-2"] = false
		}
		if at.After(loaded2) {
			want["rot-1"] = false
		}
		if !want[cn] {
			wrong++
			if wrong <= 5 {
				t.Errorf("%s, submitted from %s after the first rotation (the second at %s), went with certificate %q", id, at.Sub(loaded2).Round(time.Millisecond), loaded3.Sub(loaded2).Round(time.Millisecond), cn)
			}
		}
	}
	st := a.Deliverer().Stats()
	t.Logf("CERT ROTATION %s: %s per certificate=%v connections opened=%d reused=%d closed as stale=%d",
		source, o, perCN, st.ConnectionsOpened, st.ConnectionsReused, st.StaleClosed)
	for _, cn := range []string{"rot-1", "rot-2", "rot-3"} {
		if perCN[cn] == 0 {
			t.Errorf("no message went with certificate %s: %v", cn, perCN)
		}
	}
	if wrong > 0 || perCN[""] > 0 {
		t.Errorf("%d messages went with an old certificate, %d with none", wrong, perCN[""])
	}
	if st.StaleClosed == 0 || st.ConnectionsReused == 0 {
		t.Errorf("no pooled connection was reused (%d) or closed for its old certificate (%d)", st.ConnectionsReused, st.StaleClosed)
	}
}

// TestCertRotationUnderLoad rotates the client certificate under load,
// sealed into the age file (seen by the file watch) and into Vault (seen
// by the version poll).
func TestCertRotationUnderLoad(t *testing.T) { forSources(t, certRotation) }
