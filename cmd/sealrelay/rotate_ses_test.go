package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/secrets/ses"
)

const (
	sesOldID     = "AKIAOLDKEY0000000001"
	sesOldSecret = "Old/SES+secret+access+key+0001"
	sesNewID     = "AKIANEWKEY0000000002"
	sesNewSecret = "New/SES+secret+access+key+0002"
	sesRegion    = "eu-central-1"
)

// TestRotateSESWithMakeHook: sealrelay cannot make an IAM access key, so
// an ses entry is rotated with a make hook (here a fake IAM: a script
// that prints a new access key id and secret, which the relay knows at
// once, as SES knows a new IAM key); with no set hook, step 2 says the
// make hook made it valid; the retire hook gets the old access key id to
// delete. The agent then delivers as the new access key id. A make hook
// that prints something else than the JSON, and an ses rotation without
// a make hook, fail with messages that say so, and change nothing.
func TestRotateSESWithMakeHook(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	oldSMTP, _ := ses.SMTPPassword(sesOldSecret, sesRegion)
	newSMTP, _ := ses.SMTPPassword(sesNewSecret, sesRegion)
	up := startUpstream(t, dir, upstream.Config{Accounts: map[string]string{sesOldID: oldSMTP, sesNewID: newSMTP}})
	credFile, recipients, identity := filepath.Join(dir, "credentials.age"), filepath.Join(dir, "recipients.txt"), filepath.Join(dir, "identity.txt")
	if code, _, errs := runCLIStdin(t, sesOldSecret+"\n", "creds", "set", "upstream", "-f", credFile, "-R", recipients, "-i", identity,
		"--kind", "ses", "--access-key-id", sesOldID, "--region", sesRegion, "--secret-stdin"); code != 0 {
		t.Fatal(errs)
	}
	port, err := testlib.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := "127.0.0.1:" + strconv.Itoa(port)
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	iamLog := filepath.Join(dir, "iam.log")
	makeHook := filepath.Join(dir, "fake-iam-create-access-key")
	retireHook := filepath.Join(dir, "fake-iam-delete-access-key")
	writeScript(t, makeHook, `#!/usr/bin/python3
import json, sys
req = json.load(sys.stdin)
open(`+strconv.Quote(iamLog)+`, "a").write("create-access-key for %s (entry %s, kind %s)\n" % (req["old_username"], req["name"], req["kind"]))
print(json.dumps({"username": `+strconv.Quote(sesNewID)+`, "secret": `+strconv.Quote(sesNewSecret)+`}))
`)
	writeScript(t, retireHook, `#!/usr/bin/python3
import json, sys
req = json.load(sys.stdin)
open(`+strconv.Quote(iamLog)+`, "a").write("%s: delete-access-key %s, keep %s\n" % (req["action"], req["old_username"], req["username"]))
`)
	rotation := "\n[rotation]\nfleet = [" + strconv.Quote(metrics) + "]\nmake_hook = [" + strconv.Quote(makeHook) + "]\nretire_hook = [" +
		strconv.Quote(retireHook) + "]\nwait_timeout = \"20s\"\npoll_interval = \"200ms\"\n"
	writeTestFile(t, cfg, "metrics_address = "+strconv.Quote(metrics)+"\n"+readTestFile(t, cfg)+rotation)
	a := startAgent(t, cfg)
	if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<ses.before@rig>"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	rotateArgs := []string{"creds", "rotate", "upstream", "-c", cfg, "-f", credFile, "-R", recipients, "-i", identity}

	// Error paths first: each leaves the file as it was.
	before := readTestFile(t, credFile)
	withConfig := func(from, to string) {
		writeTestFile(t, cfg, strings.Replace(readTestFile(t, cfg), from, to, 1))
	}
	withConfig("make_hook = ", "# make_hook = ")
	code, _, errs := runCLI(t, rotateArgs...)
	if code != 1 || !strings.Contains(errs, "sealrelay cannot make a new secret access key for a ses entry itself: rotation.make_hook is not set") ||
		!strings.Contains(errs, "hint: set rotation.make_hook") {
		t.Errorf("without a make hook: exit %d: %s", code, errs)
	}
	withConfig("# make_hook = ", "make_hook = ")
	garbage := filepath.Join(dir, "garbage-hook")
	writeScript(t, garbage, "#!/bin/sh\ncat >/dev/null\necho 'AKIA... created, secret is in the console'\n")
	withConfig(strconv.Quote(makeHook), strconv.Quote(garbage))
	code, _, errs = runCLI(t, rotateArgs...)
	if code != 1 || !strings.Contains(errs, "step 1/5: the make hook "+garbage+" did not print one JSON object") || !strings.Contains(errs, "nothing was changed") {
		t.Errorf("with a make hook printing no JSON: exit %d: %s", code, errs)
	}
	withConfig(strconv.Quote(garbage), strconv.Quote(makeHook))
	if readTestFile(t, credFile) != before {
		t.Fatal("a failed rotation changed the credential file")
	}

	began := time.Now()
	code, _, errs = runCLI(t, rotateArgs...)
	t.Logf("creds rotate:\n%s", errs)
	if code != 0 {
		t.Fatalf("creds rotate of an ses entry: exit %d", code)
	}
	for _, want := range []string{"step 1/5: made a new secret access key for access key id " + sesNewID, "(the make hook made it)",
		"step 2/5: no set hook: the make hook made the new secret access key valid", "step 5/5: the retire hook retired the old secret access key of " + sesOldID} {
		if !strings.Contains(errs, want) {
			t.Errorf("the rotation does not say %q", want)
		}
	}
	iam := readTestFile(t, iamLog)
	if want := "create-access-key for " + sesOldID + " (entry upstream, kind ses)\nretire-old: delete-access-key " + sesOldID + ", keep " + sesNewID + "\n"; iam != want {
		t.Errorf("the fake IAM saw:\n%s\nwant:\n%s", iam, want)
	}
	if strings.Contains(errs, sesNewSecret) || strings.Contains(errs, newSMTP) || strings.Contains(iam, sesNewSecret) {
		t.Error("a secret was printed")
	}
	got := a.Generations()["upstream"]
	c, _ := a.Store().Get("upstream")
	if c.Username != sesNewID || got.Generation != c.Generation || got.PooledOld != 0 || !got.Loaded || got.Since.Before(began) {
		t.Errorf("the agent holds %s %+v, want the new generation since the rotation began (%s)", c.Username, got, began)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`sealrelay_credential_generation{generation="` + c.Generation + `",name="upstream"} 1`,
		`sealrelay_credential_pooled_old_connections{name="upstream"} 0`, `sealrelay_credential_generation_since_seconds{name="upstream"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(body), `generation="`+got.Generation+`"`) && got.Generation != c.Generation {
		t.Error("/metrics still shows the old generation")
	}
	if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<ses.after@rig>"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(2, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if m := up.Messages()[1]; m.Username != sesNewID {
		t.Errorf("delivered after the rotation as %q, want %s", m.Username, sesNewID)
	}
}

func writeScript(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestCredsRotateUsage: the mistakes in a rotate command line, each
// named, with exit status 2.
func TestCredsRotateUsage(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	writeTestFile(t, filepath.Join(dir, "upstream-ca.pem"), "") // config load only checks it is there
	cfg := rigConfig(t, dir, "127.0.0.1:1", relayOpts{}, "")
	age := []string{"-f", filepath.Join(dir, "credentials.age"), "-R", filepath.Join(dir, "recipients.txt"), "-i", filepath.Join(dir, "identity.txt")}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"creds", "rotate"}, "creds rotate needs exactly one entry NAME, got 0 arguments"},
		{[]string{"creds", "rotate", "upstream"}, "creds rotate needs -c CONFIG: its [rotation] table names the fleet and the hooks"},
		{[]string{"creds", "rotate", "upstream", "-c", cfg, "--resume", "--abort"}, "creds rotate takes --resume or --abort, not both"},
		{[]string{"creds", "rotate", "upstream", "-c", cfg}, "creds rotate needs -f FILE"},
		{append([]string{"creds", "rotate", "upstream", "-c", cfg}, age...), "rotation.fleet is empty: list the agents' metrics_address"},
		{[]string{"creds", "rotate", "upstream", "--vault", "-c", cfg, "-f", "x.age"}, "creds rotate --vault takes the Vault and identity from -c CONFIG, not -f or -i"},
		{[]string{"creds", "spin"}, `unknown creds subcommand "spin" (want set, list, rm, reencrypt or rotate)`},
	} {
		code, _, errs := runCLI(t, tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, want 2 and %q:\n%s", tc.args[1:], code, tc.want, errs)
		}
	}
}
