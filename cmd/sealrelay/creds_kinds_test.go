package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/testpki"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/secrets"
)

func TestScriptCredsKinds(t *testing.T) { runScripts(t, "creds_kinds") }

// listed reports whether creds list output has a row for entry name with
// that username.
func listed(out, name, username string) bool {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` +\S+ +` + regexp.QuoteMeta(username) + ` `).MatchString(out)
}

// generations returns the GENERATION column of creds list output, by name.
func generations(t *testing.T, out string) map[string]string {
	t.Helper()
	gens := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^(\S+) +\S+ +\S+ +(\S+)`).FindAllStringSubmatch(out, -1) {
		if m[1] != "NAME" {
			gens[m[1]] = m[2]
		}
	}
	return gens
}

// kindSecrets are the secrets of the kinds test, each unique.
type kindSecrets struct {
	clientSecret, refreshToken, sesSecret, sesPassword, rotated string
	keyPEM, certPEM                                             string
}

// forms returns every form of the secrets that could leak: as is, hex,
// base64 (the forms SASL and HTTP basic use), and each line of the
// private key's PEM body.
func (k kindSecrets) forms() map[string]string {
	forms := map[string]string{}
	for name, s := range map[string]string{
		"client secret": k.clientSecret, "refresh token": k.refreshToken, "secret access key": k.sesSecret,
		"SES SMTP password": k.sesPassword, "rotated client secret": k.rotated,
	} {
		forms[name] = s
		forms[name+" hex"] = hex.EncodeToString([]byte(s))
		forms[name+" base64"] = base64.StdEncoding.EncodeToString([]byte(s))
		forms[name+" base64url"] = base64.RawURLEncoding.EncodeToString([]byte(s))
	}
	lines := strings.Split(strings.TrimSpace(k.keyPEM), "\n")
	for i, l := range lines[1 : len(lines)-1] {
		forms["private key line "+string(rune('1'+i))] = l
	}
	return forms
}

// TestCredsKindsLeaveNoSecret runs creds set, list, reencrypt and rm with
// every kind in-process, with known client secrets, a refresh token, a
// private key and an SES secret access key, then looks for them in every
// form in everything printed and in every file left in the work dir but
// the sealed file and the operator's own secret files; and checks the
// generations: new on every set, kept by reencrypt and rm, unrelated to
// the secret.
func TestCredsKindsLeaveNoSecret(t *testing.T) {
	ca := testpki.CA(t, "sealrelay test CA")
	leaf := testpki.Leaf(t, ca, testpki.Options{CommonName: "relay1.example.com"})
	ks := kindSecrets{
		clientSecret: "Kinds-Client-Secret-3e1f", refreshToken: "Kinds-Refresh-Token-77ab",
		sesSecret: "Kinds/SES+Secret+Key+c0de", rotated: "Kinds-Rotated-Secret-5150",
		keyPEM: leaf.KeyPEM(t), certPEM: leaf.CertPEM(ca),
	}
	derived, err := secrets.ParseEntry("x", map[string]any{"kind": "ses", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "region": "eu-west-1", "secret_access_key": ks.sesSecret})
	if err != nil {
		t.Fatal(err)
	}
	ks.sesPassword = derived.Password()

	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	// The operator's own files: the key and the secrets to seal (0600).
	writeTestFile(t, p("chain.pem"), ks.certPEM)
	for name, data := range map[string]string{"key.pem": ks.keyPEM, "refresh.txt": ks.refreshToken + "\n", "ses.txt": ks.sesSecret + "\n"} {
		if err := os.WriteFile(p(name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var printed bytes.Buffer
	sealrelay := recordingCLI(t, &printed)
	pub1 := sealrelay("", 0, "keygen", "-o", p("relay1.key"))
	pub2 := sealrelay("", 0, "keygen", "-o", p("relay2.key"))
	writeTestFile(t, p("recipients.txt"), "# relay1.example.com\n"+pub1+"# relay2.example.com\n"+pub2)
	writeTestFile(t, p("relay1-only.txt"), "# relay1.example.com\n"+pub1)

	creds := p("credentials.age")
	set := func(stdin string, want int, args ...string) {
		t.Helper()
		sealrelay(stdin, want, append([]string{"creds", "set", args[0], "-f", creds, "-R", p("recipients.txt"), "-i", p("relay1.key")}, args[1:]...)...)
	}
	sealrelay(ks.clientSecret+"\n", 0, "creds", "set", "m365", "-f", creds, "-R", p("recipients.txt"), "--oauth2",
		"--provider", "microsoft365", "--tenant", "contoso.example", "--client-id", "cid", "--username", "relay@contoso.example", "--secret-stdin")
	set(ks.clientSecret, 0, "gmail", "--oauth2", "--provider", "google", "--client-id", "cid", "--username", "relay@example.com",
		"--refresh-token-file", p("refresh.txt"), "--secret-stdin")
	set("", 0, "entra", "--oauth2", "--provider", "microsoft365", "--tenant", "contoso.example", "--client-id", "cid",
		"--username", "relay@contoso.example", "--private-key-file", p("key.pem"), "--certificate", p("chain.pem"))
	set(ks.keyPEM, 0, "corp-cert", "--kind", "certificate", "--certificate", p("chain.pem"), "--secret-stdin")
	set("", 0, "ses", "--kind", "ses", "--access-key-id", "AKIAIOSFODNN7EXAMPLE", "--region", "eu-west-1", "--secret-file", p("ses.txt"))
	// Failures that had the secrets in hand.
	set(ks.sesSecret, 1, "bad", "--kind", "ses", "--access-key-id", "AKIAIOSFODNN7EXAMPLE", "--region", "mars", "--secret-stdin")
	set(ks.clientSecret, 1, "bad", "--oauth2", "--token-url", "http://idp.example/t", "--client-id", "c", "--username", "u", "--secret-stdin")
	set(ks.clientSecret, 2, "bad", "--oauth2", "--provider", "google", "--client-id", "c", "--username", "u", "--secret-stdin", "--refresh-token-stdin")

	list := sealrelay("", 0, "creds", "list", "-f", creds, "-i", p("relay2.key"))
	gens := generations(t, list)
	if len(gens) != 5 {
		t.Fatalf("list shows %d entries, want 5:\n%s", len(gens), list)
	}
	for name, g := range gens {
		if !secrets.ValidGeneration(g) || len(g) != 26 {
			t.Errorf("%s: generation %q", name, g)
		}
	}
	// reencrypt and rm keep every generation; a new set of the same
	// secret makes a new one, so it is not derived from the secret.
	sealrelay("", 0, "creds", "reencrypt", "-f", creds, "-R", p("relay1-only.txt"), "-i", p("relay1.key"))
	set(ks.clientSecret+"\n", 0, "m365", "--oauth2", "--provider", "microsoft365", "--tenant", "contoso.example", "--client-id", "cid",
		"--username", "relay@contoso.example", "--secret-stdin", "-R", p("relay1-only.txt"))
	set(ks.rotated+"\n", 0, "gmail", "--oauth2", "--provider", "google", "--client-id", "cid", "--username", "relay@example.com",
		"--refresh-token-file", p("refresh.txt"), "--secret-stdin", "-R", p("relay1-only.txt"))
	sealrelay("", 0, "creds", "rm", "ses", "-f", creds, "-R", p("relay1-only.txt"), "-i", p("relay1.key"))
	after := generations(t, sealrelay("", 0, "creds", "list", "-f", creds, "-i", p("relay1.key")))
	for name, g := range after {
		changed := name == "m365" || name == "gmail"
		if (g != gens[name]) != changed {
			t.Errorf("%s: generation %s, then %s; want it changed only by a new set", name, gens[name], g)
		}
	}
	if _, ok := after["ses"]; ok || len(after) != 4 {
		t.Errorf("after rm: %v", after)
	}

	out := printed.String()
	if !strings.Contains(out, `added entry "corp-cert"`) || !strings.Contains(out, `region is not an AWS region name`) || !strings.Contains(out, "secrets=client_secret,refresh_token") {
		t.Fatalf("the flow did not print what it should; the test is not looking at the output:\n%s", out)
	}
	forms := ks.forms()
	for name, form := range forms {
		if strings.Contains(out, form) {
			t.Errorf("printed output holds the %s", name)
		}
	}
	// The operator's own secret files hold their secrets; nothing else
	// does, the sealed file included.
	checkWorkDir(t, dir, []string{"chain.pem", "credentials.age", "key.pem", "recipients.txt", "refresh.txt", "relay1-only.txt", "relay1.key", "relay2.key", "ses.txt"},
		forms, "key.pem", "refresh.txt", "ses.txt")
}

// TestCredsSetArgvAndTemp runs the built binary's creds set for the kinds
// whose secrets come on standard input, and while it waits for them reads
// its command line and environment: neither holds a secret (there is no
// flag for one). Its temp dir stays empty.
func TestCredsSetArgvAndTemp(t *testing.T) {
	ca := testpki.CA(t, "sealrelay test CA")
	leaf := testpki.Leaf(t, ca, testpki.Options{CommonName: "relay1.example.com"})
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	tmp := p("tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, p("chain.pem"), leaf.CertPEM(ca))
	code, pub, errs := runCLI(t, "keygen", "-o", p("relay.key"))
	if code != 0 {
		t.Fatal(errs)
	}
	writeTestFile(t, p("recipients.txt"), "# relay\n"+pub)
	keyLines := strings.Split(leaf.KeyPEM(t), "\n")
	for _, tc := range []struct {
		secret, probe string
		args          []string
	}{
		{"Argv-Client-Secret-1b2c", "Argv-Client-Secret-1b2c", []string{"m365", "--oauth2", "--provider", "microsoft365", "--tenant", "t1", "--client-id", "c", "--username", "u@example.com", "--secret-stdin"}},
		{"Argv-Refresh-Token-3d4e", "Argv-Refresh-Token-3d4e", []string{"pub", "--oauth2", "--provider", "microsoft365", "--tenant", "t1", "--client-id", "c", "--username", "u@example.com", "--refresh-token-stdin"}},
		{"Argv/SES+Secret+5f6a", "Argv/SES+Secret+5f6a", []string{"ses", "--kind", "ses", "--access-key-id", "AKIAIOSFODNN7EXAMPLE", "--region", "eu-west-1", "--secret-stdin"}},
		{leaf.KeyPEM(t), keyLines[1], []string{"cert", "--kind", "certificate", "--certificate", p("chain.pem"), "--secret-stdin"}},
	} {
		args := append([]string{"creds", "set"}, tc.args...)
		args = append(args, "-f", p("credentials.age"), "-R", p("recipients.txt"))
		if _, err := os.Stat(p("credentials.age")); err == nil {
			args = append(args, "-i", p("relay.key"))
		}
		cmd := exec.Command(builtBinary(t), args...)
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		// The process waits for its standard input: what it was given
		// so far is all there is. Its command line shows in /proc once
		// the kernel has set up the new program, a moment after Start
		// returns.
		proc := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid))
		var cmdline []byte
		waitFor(t, 10*time.Second, "the command line in "+proc, func() bool {
			cmdline, _ = os.ReadFile(filepath.Join(proc, "cmdline"))
			return bytes.Contains(cmdline, []byte("creds"))
		})
		environ, err := os.ReadFile(filepath.Join(proc, "environ"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(environ, []byte("TMPDIR="+tmp)) {
			t.Fatalf("%s/environ is not the command's", proc)
		}
		for f, data := range map[string][]byte{"cmdline": cmdline, "environ": environ} {
			if bytes.Contains(data, []byte(tc.probe)) {
				t.Errorf("%s: /proc/PID/%s holds the secret", tc.args[0], f)
			}
		}
		stdin.Write([]byte(tc.secret))
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: %v\n%s", tc.args[0], err, &stderr)
		}
		if !strings.Contains(stderr.String(), `added entry "`+tc.args[0]+`"`) || strings.Contains(stderr.String(), tc.probe) {
			t.Errorf("%s: stderr %q", tc.args[0], &stderr)
		}
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("the temp dir holds %d files", len(ents))
	}
}

// TestVaultCredsKindsCLI: creds set --vault writes entries of each kind,
// every secret sealed when the config says so; creds list --vault shows
// kinds, generations and settings, never a secret.
func TestVaultCredsKindsCLI(t *testing.T) {
	vs := vaulttest.Start(t)
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	rigVault(t, cfg, vs, "sealrelay-kinds", true)
	ca := testpki.CA(t, "sealrelay test CA")
	leaf := testpki.Leaf(t, ca, testpki.Options{CommonName: "relay1.example.com"})
	writeTestFile(t, filepath.Join(dir, "chain.pem"), leaf.CertPEM(ca))
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), []byte(leaf.KeyPEM(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	const clientSecret, sesSecret = "Vault-Kinds-Client-Secret-8d8d", "Vault/Kinds+SES+9e9e"
	keyLine := strings.Split(leaf.KeyPEM(t), "\n")[1]
	for _, tc := range []struct {
		stdin string
		args  []string
	}{
		{clientSecret + "\n", []string{"m365", "--oauth2", "--provider", "microsoft365", "--tenant", "contoso.example", "--client-id", "cid", "--username", "relay@contoso.example", "--secret-stdin"}},
		{"", []string{"corp-cert", "--kind", "certificate", "--certificate", filepath.Join(dir, "chain.pem"), "--private-key-file", filepath.Join(dir, "key.pem")}},
		{sesSecret, []string{"ses", "--kind", "ses", "--access-key-id", "AKIAIOSFODNN7EXAMPLE", "--region", "eu-west-1", "--secret-stdin"}},
	} {
		var stdout, stderr bytes.Buffer
		args := append(append([]string{"creds", "set"}, tc.args...), "--vault", "-c", cfg)
		if code := run(&env{ctx: t.Context(), stdin: strings.NewReader(tc.stdin), stdout: &stdout, stderr: &stderr}, args); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, &stderr)
		}
		if want := "as version 1, sealed to 1 recipient (rig server)"; !strings.Contains(stderr.String(), want) ||
			!regexp.MustCompile(`generation [A-Z2-7]{26}\)`).MatchString(stderr.String()) {
			t.Errorf("%s: said %q, want %q and the generation", tc.args[0], &stderr, want)
		}
	}
	for name, key := range map[string]string{"m365": "client_secret", "corp-cert": "private_key", "ses": "secret_access_key"} {
		sec, err := vs.Client.KVv2("secret").Get(t.Context(), "sealrelay-kinds/"+name)
		if err != nil {
			t.Fatal(err)
		}
		stored, _ := sec.Data[key].(string)
		if !strings.HasPrefix(stored, "-----BEGIN AGE ENCRYPTED FILE-----") || strings.Contains(stored, clientSecret) || strings.Contains(stored, keyLine) {
			t.Errorf("%s: %s in Vault is not sealed: %.40q", name, key, stored)
		}
		if g, _ := sec.Data["generation"].(string); !secrets.ValidGeneration(g) {
			t.Errorf("%s: generation in Vault is %q", name, g)
		}
	}
	code, out, errs := runCLI(t, "creds", "list", "--vault", "-c", cfg)
	if code != 0 {
		t.Fatalf("creds list --vault: exit %d: %s", code, errs)
	}
	for _, want := range []string{
		`(?m)^NAME +KIND +USERNAME +GENERATION +VERSION +SEALED +DETAILS$`,
		`(?m)^corp-cert +certificate +- +[A-Z2-7]{26} +1 +yes +certificate="CN=relay1.example.com,O=sealrelay test only \(expires \d{4}-\d\d-\d\d\)" secrets=private_key$`,
		`(?m)^m365 +oauth2 +relay@contoso.example +[A-Z2-7]{26} +1 +yes +provider=microsoft365 tenant=contoso.example token_url=https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token client_id=cid secrets=client_secret$`,
		`(?m)^ses +ses +AKIAIOSFODNN7EXAMPLE +[A-Z2-7]{26} +1 +yes +region=eu-west-1 secrets=secret_access_key$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("creds list --vault lacks %s:\n%s", want, out)
		}
	}
	for _, s := range []string{clientSecret, sesSecret, keyLine, "AGE ENCRYPTED"} {
		if strings.Contains(out+errs, s) {
			t.Errorf("creds list --vault prints %.20q", s)
		}
	}
}
