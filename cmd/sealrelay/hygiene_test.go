package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestSecretHygiene runs the built binary through a full life with each
// credential source and each log format: deliveries, a 535 from the relay,
// a rotation, a failed reload, `check` and `queue list`. Then it looks for
// the password (as is, and in its PLAIN and LOGIN base64 forms), the
// identity's secret key and the Vault token in the logs, every error and
// command output, the spool, the temp dirs, and the process's cmdline and
// environ; and checks that the process cannot dump core.
func TestSecretHygiene(t *testing.T) {
	vs := vaulttest.Start(t)
	// Vault refuses custom token IDs with its own "hvs." prefix.
	const vaultToken = "HygieneToken-must-never-leak-7f3a"
	vs.Policy(t, "hygiene", vaulttest.ReadPolicy("secret", "sealrelay-hygiene")+vaulttest.WritePolicy("secret", "sealrelay-hygiene"))
	vs.CreateToken(t, vaulttest.Token{ID: vaultToken, Policies: []string{"hygiene"}})

	for _, source := range []string{"age", "vault"} {
		for _, format := range []string{"text", "json"} {
			t.Run(source+"/"+format, func(t *testing.T) {
				secretHygiene(t, source, format, vs, vaultToken)
			})
		}
	}
}

func secretHygiene(t *testing.T, source, format string, vs *vaulttest.Server, vaultToken string) {
	pass := fmt.Sprintf("Hygiene-%s-%s-Pa55word-c0ffee", source, format)
	rotated := "Rotated-" + pass
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, pass)
	idData := readTestFile(t, filepath.Join(dir, "identity.txt"))
	secretKey := regexp.MustCompile(`AGE-SECRET-KEY-1[0-9A-Z]+`).FindString(idData)
	if secretKey == "" {
		t.Fatal("no secret key in the identity file")
	}

	up := startUpstream(t, dir, upstream.Config{})
	up.SetPassword(rigUser, pass)
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	writeTestFile(t, cfg, "log_format = \""+format+"\"\n"+readTestFile(t, cfg))
	vaultPath := "sealrelay-hygiene"
	if source == "vault" {
		rigVault(t, cfg, vs, vaultPath, true)
		writeTestFile(t, filepath.Join(dir, "vault-token"), vaultToken+"\n")
		os.Chmod(filepath.Join(dir, "vault-token"), 0o600)
		setVault(t, cfg, pass)
	}

	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o700)
	var printed bytes.Buffer
	cli := func(stdin string, args ...string) {
		var out, errb bytes.Buffer
		run(&env{ctx: t.Context(), stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb}, args)
		printed.Write(out.Bytes())
		printed.Write(errb.Bytes())
	}

	p := startProcess(t, cfg, "TMPDIR="+tmp)
	procFiles := procSnapshot(t, p)

	// Normal delivery, then a 535 (the relay's password changes first),
	// then the store catches up.
	if err := send(p.addr, "app@client.test", "user@example.net", "<hy.1@rig>"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	up.SetPassword(rigUser, rotated)
	up.DropSessions()
	if err := send(p.addr, "app@client.test", "user@example.net", "<hy.2@rig>"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "a 535 in the log", func() bool { return strings.Contains(p.stderr.String(), "535") })
	cli("", "check", "-c", cfg) // reports the 535
	cli("", "queue", "list", "-c", cfg)
	if source == "age" {
		// A damaged file: the reload fails and says why.
		good := readTestFile(t, filepath.Join(dir, "credentials.age"))
		writeTestFile(t, filepath.Join(dir, "credentials.age"), good[:len(good)-40])
		p.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, 10*time.Second, "the failed reload", func() bool { return strings.Contains(p.stderr.String(), "keeping the credentials") })
		writeTestFile(t, filepath.Join(dir, "credentials.age"), good)
		writeCredPrinted(t, dir, &printed, rotated)
	} else {
		setVault(t, cfg, rotated)
	}
	if err := up.WaitMessages(2, 30*time.Second); err != nil {
		t.Fatalf("no delivery after the rotation: %v", err)
	}
	cli("", "check", "-c", cfg)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	printed.WriteString(p.stderr.String())
	if !strings.Contains(p.stderr.String(), "535") {
		t.Error("the run never met a 535: the test did not exercise the error path")
	}

	forbidden := secretForms(rigUser, pass)
	for k, v := range secretForms(rigUser, rotated) {
		forbidden["rotated "+k] = v
	}
	forbidden["identity secret key"] = secretKey
	forbidden["any age secret key"] = "AGE-SECRET-KEY-"
	forbidden["vault token"] = vaultToken

	hygieneScan(t, dir, printed.Bytes(), rigUser, procFiles, forbidden)
}

// procSnapshot checks that the agent process p cannot dump core, and
// returns its cmdline and environ.
func procSnapshot(t *testing.T, p *agentProcess) map[string][]byte {
	t.Helper()
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`Max core file size\s+0\s+0`).Match(limits) {
		t.Errorf("the agent can dump core:\n%s", limits)
	}
	procFiles := map[string][]byte{}
	for _, f := range []string{"cmdline", "environ"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", p.cmd.Process.Pid, f))
		if err != nil {
			t.Fatal(err)
		}
		procFiles["/proc/PID/"+f] = b
	}
	return procFiles
}

// hygieneScan looks for each of forbidden in printed (the agent's log and
// the commands' output, which must mention shown), in the process's
// procFiles, and in every file left under dir but those that hold a
// secret by design: the identity, the Vault token file and the sealed
// credential file.
func hygieneScan(t *testing.T, dir string, printed []byte, shown string, procFiles map[string][]byte, forbidden map[string]string) {
	t.Helper()
	look := func(where string, data []byte) {
		for what, s := range forbidden {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s contains the %s", where, what)
			}
		}
	}
	// Positive controls: what is looked at does hold what it should.
	if !bytes.Contains(printed, []byte(shown)) || !bytes.Contains(procFiles["/proc/PID/cmdline"], []byte("serve")) ||
		!bytes.Contains(procFiles["/proc/PID/environ"], []byte("TMPDIR=")) {
		t.Error("the log, cmdline or environ read is not what the agent had: the search would be blind")
	}
	look("the agent's log and the commands' output", printed)
	for where, b := range procFiles {
		look(where, b)
	}
	sealed := map[string]bool{"identity.txt": true, "vault-token": true, "credentials.age": true}
	files := testlib.ReadTree(t, dir, func(path string) bool { return sealed[filepath.Base(path)] }, look)
	if files < 3 {
		t.Errorf("only %d files looked at: the walk is broken", files)
	}
}

// setVault writes the sealed credential to Vault with `creds set --vault`.
func setVault(t *testing.T, cfg, pass string) {
	t.Helper()
	var errb bytes.Buffer
	e := &env{ctx: t.Context(), stdin: strings.NewReader(pass + "\n"), stdout: &bytes.Buffer{}, stderr: &errb}
	if code := run(e, []string{"creds", "set", "upstream", "--vault", "-c", cfg, "--username", rigUser, "--password-stdin"}); code != 0 {
		t.Fatalf("creds set --vault: exit %d: %s", code, errb.String())
	}
}

// writeCredPrinted is writeCred, keeping what it printed.
func writeCredPrinted(t *testing.T, dir string, printed *bytes.Buffer, pass string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{ctx: t.Context(), stdin: strings.NewReader(pass + "\n"), stdout: &out, stderr: &errb}
	code := run(e, []string{"creds", "set", "upstream", "-f", filepath.Join(dir, "credentials.age"),
		"-R", filepath.Join(dir, "recipients.txt"), "-i", filepath.Join(dir, "identity.txt"),
		"--username", rigUser, "--password-stdin"})
	printed.Write(out.Bytes())
	printed.Write(errb.Bytes())
	if code != 0 {
		t.Fatalf("creds set: exit %d: %s", code, errb.String())
	}
}
