package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/sealrelay/sealrelay/internal/testing/ageplugin"
	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// Server keys held by an age plugin. age-plugin-sealrelaytest (built by
// internal/testing/ageplugin) stands in for age-plugin-yubikey, -tpm and
// -se: its private keys live in a directory only the plugin knows, so the
// sealrelay process holds a handle and every decryption goes through the
// plugin, found on $PATH as age finds it.

// TestScriptCredsPlugin: creds set with a recipient list holding a plugin
// recipient and a classic key, creds list and the age CLI decrypting
// through the plugin, creds set and reencrypt with the plugin identity,
// and a key that asks for a PIN refused with the reason and a hint.
func TestScriptCredsPlugin(t *testing.T) {
	ageDir := buildAge(t)
	p := ageplugin.Build(t)
	testscript.Run(t, testscript.Params{
		Files: []string{filepath.Join("testdata", "script", "creds_plugin.txt")},
		Setup: func(e *testscript.Env) error {
			sep := string(os.PathListSeparator)
			e.Setenv("PATH", p.Dir+sep+ageDir+sep+e.Getenv("PATH"))
			return nil
		},
		Cmds:                scriptCmds,
		RequireExplicitExec: true,
	})
}

// runBinary runs the built sealrelay with env added to the test's
// environment and stdin, and returns its exit code and output.
func runBinary(t *testing.T, env []string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(builtBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	return runCmd(t, cmd)
}

// runCmd runs cmd and returns its exit code and output.
func runCmd(t *testing.T, cmd *exec.Cmd) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// pluginRig makes the rig of rig_test.go with a plugin-held server key in
// the given mode (hw.key) in place of identity.txt: the credential file is
// sealed, by `sealrelay creds set`, to the plugin recipient alone, so only
// the plugin can open it. It returns the config, the PATH entry that finds
// the plugin, and the plugin recipient. vault, if not nil, edits the config
// before the identity is set in it.
func pluginRig(t *testing.T, mode string, up *upstream.Server, dir string, vault func(cfg string)) (cfg, path, rcpt string) {
	t.Helper()
	p := ageplugin.Build(t)
	path = "PATH=" + p.Path()
	rcpt = p.Generate(t, mode, filepath.Join(dir, "hw.key"))
	writeTestFile(t, filepath.Join(dir, "recipients.txt"), "# hw.example.com\n"+rcpt+"\n")
	code, _, stderr := runBinary(t, []string{path}, rigPass+"\n", "creds", "set", "upstream",
		"-f", filepath.Join(dir, "credentials.age"), "-R", filepath.Join(dir, "recipients.txt"),
		"--username", rigUser, "--password-stdin")
	if code != 0 {
		t.Fatalf("creds set: exit %d\n%s", code, stderr)
	}
	cfg = rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	if vault != nil {
		vault(cfg)
	}
	writeTestFile(t, cfg, strings.Replace(readTestFile(t, cfg), `identity = "identity.txt"`, `identity = "hw.key"`, 1))
	return cfg, path, rcpt
}

// deliverOne sends a message with msgID through the agent process p and
// waits until the upstream holds it, authenticated as rigUser.
func deliverOne(t *testing.T, p *agentProcess, up *upstream.Server, msgID string) {
	t.Helper()
	if err := send(p.addr, "app@client.test", "user@example.net", msgID); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, p.stderr.String())
	}
	if m := up.Messages()[0]; m.Username != rigUser || m.MessageID != msgID {
		t.Errorf("delivered %s as %q, want %s as %q", m.MessageID, m.Username, msgID, rigUser)
	}
}

// identityLine matches the log line serve and check write about the
// server identity: where it came from, never key material.
func identityLine(source, publicKey string) *regexp.Regexp {
	return regexp.MustCompile(`level=INFO msg="server identity" source="` + regexp.QuoteMeta(source) +
		`" public_key=` + regexp.QuoteMeta(publicKey) + `\n`)
}

// TestPluginIdentityServe: `sealrelay serve`, as a process whose identity
// is a plugin key, opens the credential file through the plugin and
// delivers a message authenticated with the sealed credential; `check`
// does the same without sending. Both name the identity's source.
func TestPluginIdentityServe(t *testing.T) {
	dir := t.TempDir()
	up := startUpstream(t, dir, upstream.Config{})
	cfg, path, rcpt := pluginRig(t, "plain", up, dir, nil)
	wantLine := identityLine("file "+filepath.Join(dir, "hw.key")+", age plugin sealrelaytest", rcpt)

	code, stdout, stderr := runBinary(t, []string{path}, "", "check", "-c", cfg)
	if code != 0 {
		t.Fatalf("check: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !wantLine.MatchString(stderr) {
		t.Errorf("check does not name the identity's source:\n%s", stderr)
	}
	if !strings.Contains(stdout, "credentials age file "+filepath.Join(dir, "credentials.age")+": ok (upstream)") {
		t.Errorf("check did not read the credentials:\n%s", stdout)
	}

	p := startProcess(t, cfg, path)
	if !wantLine.MatchString(p.stderr.String()) {
		t.Errorf("serve does not name the identity's source:\n%s", p.stderr.String())
	}
	deliverOne(t, p, up, "<plugin@rig>")
	if strings.Contains(p.stderr.String(), "AGE-PLUGIN-") || strings.Contains(p.stderr.String(), rigPass) {
		t.Error("the agent's log holds the plugin identity or the password")
	}
}

// TestPluginAsksServe: a plugin key that asks for a PIN cannot serve an
// unattended agent. `check` exits 1 naming the plugin and what it asked,
// with a hint; `serve` starts, says why the credentials are unavailable,
// and defers mail (never bounces it).
func TestPluginAsksServe(t *testing.T) {
	dir := t.TempDir()
	up := startUpstream(t, dir, upstream.Config{})
	cfg, path, _ := pluginRig(t, "pin", up, dir, nil)
	const asked = `age plugin sealrelaytest asked for a PIN or passphrase`

	code, stdout, stderr := runBinary(t, []string{path}, "", "check", "-c", cfg)
	if code != 1 {
		t.Fatalf("check: exit %d, want 1\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "credentials age file "+filepath.Join(dir, "credentials.age")+": FAILED: opening "+filepath.Join(dir, "credentials.age")+": "+asked+` ("Enter the PIN of sealrelaytest key `) {
		t.Errorf("check's report does not say what the plugin asked:\n%s", stdout)
	}
	if !strings.Contains(stderr, "sealrelay: hint: make the key usable without anyone present: a PIN policy and a touch policy of never") {
		t.Errorf("check gives no hint:\n%s", stderr)
	}

	p := startProcess(t, cfg, path)
	waitFor(t, 20*time.Second, "the agent to say why the credentials are unavailable", func() bool {
		return strings.Contains(p.stderr.String(), "credentials unavailable") && strings.Contains(p.stderr.String(), asked)
	})
	if err := send(p.addr, "app@client.test", "user@example.net", "<pin@rig>"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the message to be deferred twice", func() bool {
		return strings.Count(p.stderr.String(), "status=deferred") >= 2
	})
	if s := p.stderr.String(); strings.Contains(s, "status=bounced") || strings.Contains(s, "AGE-PLUGIN-") {
		t.Errorf("the message bounced, or the log holds the plugin identity:\n%s", s)
	}
	if n := len(up.Messages()); n != 0 {
		t.Errorf("the upstream got %d messages (a bounce?), want 0", n)
	}
}

// TestPluginVaultSealed: with Vault values sealed (sealed = true), a
// plugin-held key opens them: creds set --vault seals to the plugin
// recipient, and the agent delivers with the value it unseals through the
// plugin.
func TestPluginVaultSealed(t *testing.T) {
	vs := vaulttest.Start(t)
	dir := t.TempDir()
	up := startUpstream(t, dir, upstream.Config{})
	cfg, path, rcpt := pluginRig(t, "plain", up, dir, func(cfg string) { rigVault(t, cfg, vs, "sealrelay-plugin", true) })

	code, _, stderr := runBinary(t, []string{path}, rigPass+"\n", "creds", "set", "upstream", "--vault", "-c", cfg,
		"--username", rigUser, "--password-stdin")
	if code != 0 || !strings.Contains(stderr, "sealed to 1 recipient (hw.example.com)") {
		t.Fatalf("creds set --vault: exit %d\n%s", code, stderr)
	}
	sec, err := vs.Client.KVv2("secret").Get(t.Context(), "sealrelay-plugin/upstream")
	if err != nil {
		t.Fatal(err)
	}
	if stored, _ := sec.Data["password"].(string); !strings.HasPrefix(stored, "-----BEGIN AGE ENCRYPTED FILE-----") {
		t.Fatalf("the password in Vault is not sealed: %.40q", stored)
	}

	p := startProcess(t, cfg, path)
	if !identityLine("file "+filepath.Join(dir, "hw.key")+", age plugin sealrelaytest", rcpt).MatchString(p.stderr.String()) {
		t.Errorf("serve does not name the identity's source:\n%s", p.stderr.String())
	}
	deliverOne(t, p, up, "<pluginvault@rig>")
}
