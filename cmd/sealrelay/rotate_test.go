package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestRotateFleetAgeFile: three agents, each with its own key and spool,
// read one sealed file while mail flows through all of them; one
// `creds rotate primary` with the shipped Dovecot passwd-file hook
// rotates the relay password. Nothing is lost or bounced, the relay then
// refuses the old password, and every agent holds the new generation with
// no connection left on the old secret and delivers after the
// retirement.
func TestRotateFleetAgeFile(t *testing.T) { rotateFleet(t, "age") }

// TestRotateFleetVault: the same with the entry in Vault (sealed to the
// three agents' keys), the agents logged in with the documented agent
// policy and reporting their generations to Vault, and the rotation
// waiting on those reports (no fleet list).
func TestRotateFleetVault(t *testing.T) { rotateFleet(t, "vault") }

func rotateFleet(t *testing.T, source string) {
	f := newFleet(t, source, fleetOpts{})
	old := f.current()
	if old.Password() != fleetPass || old.Generation == "" {
		t.Fatalf("the entry before the rotation: %v", old)
	}
	l := f.startLoad()
	time.Sleep(2 * time.Second) // mail flows, connections are pooled
	start := time.Now()
	res := f.rotate()
	took := time.Since(start)
	time.Sleep(time.Second) // and keeps flowing after
	accepted, lost, bounced := l.finish(t, f)
	if res.code != 0 {
		t.Fatalf("creds rotate: exit %d", res.code)
	}
	cur := f.current()
	newPass := cur.Password()
	t.Logf("ROTATE-FLEET source=%s agents=%d accepted=%d lost=%d bounced=%d rotation=%s generation %s -> %s",
		source, len(f.agents), accepted, lost, bounced, took.Round(time.Millisecond), old.Generation, cur.Generation)
	if lost != 0 || bounced != 0 {
		t.Errorf("lost %d, bounced %d: both must be 0", lost, bounced)
	}
	if accepted < 100 {
		t.Errorf("only %d messages accepted: the load did not run", accepted)
	}
	if cur.Generation == old.Generation || newPass == fleetPass || cur.Username != fleetUser {
		t.Fatalf("the entry was not rotated: generation %s, same password %v", cur.Generation, newPass == fleetPass)
	}
	for i, step := range []string{"step 1/5: made a new password", "step 2/5: the set hook says the relay accepts",
		"step 3/5: resealed primary", "step 4/5: 3 of 3 agents hold generation " + cur.Generation,
		"step 5/5: the retire hook retired the old password", "done: primary holds generation " + cur.Generation} {
		if !strings.Contains(res.stderr, step) {
			t.Errorf("log line %d (%q) missing", i+1, step)
		}
	}
	if _, err := os.Stat(f.stateFile()); !os.IsNotExist(err) {
		t.Errorf("the state file is still there after the rotation: %v", err)
	}

	// The relay refuses the old password and takes the new one.
	if err := f.authAt(fleetPass); err == nil || !strings.Contains(err.Error(), "535") {
		t.Errorf("AUTH with the old password after the rotation: %v, want a 535", err)
	}
	if err := f.authAt(newPass); err != nil {
		t.Errorf("AUTH with the new password: %v", err)
	}
	// Every agent holds the new generation, no connection on the old
	// secret, and delivers now that the old one is retired.
	logBefore := len(f.relay.Postfix.Log())
	upBefore := f.relay.Upstream.Count()
	for _, a := range f.agents {
		h, err := a.generations()
		if err != nil {
			t.Fatal(err)
		}
		if p := h["primary"]; p.Generation != cur.Generation || p.PooledOld != 0 || !p.Loaded {
			t.Errorf("%s holds %+v, want generation %s and no old connection", a.name, p, cur.Generation)
		}
		if err := send(a.p.addr, "app@client.test", "user@example.net", "<after."+a.name+"@fleet>"); err != nil {
			t.Fatalf("%s: %v", a.name, err)
		}
	}
	if err := f.relay.Upstream.WaitMessages(upBefore+len(f.agents), 30*time.Second); err != nil {
		t.Fatalf("the agents do not deliver after the retirement: %v", err)
	}
	// Postfix logs each message's client with its SASL login.
	if n := strings.Count(f.relay.Postfix.Log()[logBefore:], "sasl_username="+fleetUser); n < len(f.agents) {
		t.Errorf("Postfix logged %d authenticated messages after the retirement, want %d", n, len(f.agents))
	}
}

// TestRotateAgentDown: with one agent of three down, the rotation waits
// for it, names it, exits 1 and retires nothing: the relay still takes
// the old password. A second rotation refuses to start meanwhile. Once
// the agent is back and holds the new secret, --resume completes the
// rotation.
func TestRotateAgentDown(t *testing.T) {
	for _, source := range []string{"age", "vault"} {
		t.Run(source, func(t *testing.T) {
			f := newFleet(t, source, fleetOpts{wait: "6s"})
			down := f.agents[2]
			down.stop(t)
			res := f.rotate()
			who := down.metrics
			if source == "vault" {
				who = down.name
			}
			if res.code != 1 {
				t.Fatalf("with %s down: exit %d, want 1", down.name, res.code)
			}
			for _, want := range []string{"step 4/5: not every agent", "within 6s", "2 of 3 agents hold generation", "waiting for " + who,
				"nothing was retired: the old secret stays valid", "hint: once those agents hold the new generation"} {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("the failed rotation does not say %q", want)
				}
			}
			if strings.Contains(res.stderr, "step 5/5") || strings.Contains(res.stderr, "retire-old") {
				t.Error("the retire hook ran although an agent had not switched")
			}
			newPass := f.current().Password()
			if err := f.authAt(fleetPass); err != nil {
				t.Errorf("the old password no longer works at the relay: %v", err)
			}
			if err := f.authAt(newPass); err != nil {
				t.Errorf("the new password does not work at the relay: %v", err)
			}
			// No second rotation while this one is unfinished.
			again := f.rotate()
			if again.code != 1 || !strings.Contains(again.stderr, `a rotation of "primary" is unfinished: step 3 of 5 done (resealed)`) ||
				!strings.Contains(again.stderr, "--resume") {
				t.Errorf("a second rotation: exit %d", again.code)
			}
			down.start(t)
			resumed := f.rotate("--resume")
			if resumed.code != 0 {
				t.Fatalf("--resume: exit %d", resumed.code)
			}
			if !strings.Contains(resumed.stderr, "resuming the rotation") || !strings.Contains(resumed.stderr, "3 of 3 agents hold generation") ||
				!strings.Contains(resumed.stderr, "step 5/5: the retire hook retired the old password") {
				t.Error("--resume did not wait for all three agents and retire the old password")
			}
			if err := f.authAt(fleetPass); err == nil {
				t.Error("the old password still works after --resume")
			}
			if h, err := down.generations(); err != nil || h["primary"].Generation != f.current().Generation {
				t.Errorf("%s after --resume: %v %v", down.name, h, err)
			}
		})
	}
}

// failingHook writes a hook that fails for action (it prints why on
// standard error and exits 3) and hands every other action to the
// shipped hook.
func failingHook(t *testing.T, f *fleet, action, why string) []string {
	t.Helper()
	path := f.dir + "/failing-hook"
	real := append([]string{hookPath(t)}, f.relay.Dovecot.PasswdFiles()...)
	script := fmt.Sprintf(`#!/usr/bin/python3
import json, subprocess, sys
data = sys.stdin.read()
if json.loads(data)["action"] == %q:
    print(%q, file=sys.stderr)
    sys.exit(3)
sys.exit(subprocess.run(%s, input=data, text=True).returncode)
`, action, why, pyList(real))
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{path}
}

func pyList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// TestRotateSetHookFails: the set hook fails at step 2: nothing is
// resealed (the file's bytes, or the KV version, stay as they were), the
// command exits 1 naming the hook and its error, and so does --resume
// while the hook still fails; --abort then removes the state, calls the
// retire hook for the new secret, and leaves the old secret the only one.
func TestRotateSetHookFails(t *testing.T) {
	for _, source := range []string{"age", "vault"} {
		t.Run(source, func(t *testing.T) {
			f := newFleet(t, source, fleetOpts{agents: 1})
			hook := failingHook(t, f, "set-new", "relay API: 503 service unavailable, try later")
			writeTestFile(t, f.opCfg, strings.Replace(readTestFile(t, f.opCfg), "set_hook = ", "set_hook = "+tomlList(hook)+"\n# was: ", 1))
			before := f.current()
			fileBefore := ""
			if source == "age" {
				fileBefore = readTestFile(t, f.credFile)
			}
			for _, args := range [][]string{nil, {"--resume"}} {
				res := f.rotate(args...)
				if res.code != 1 {
					t.Fatalf("%v with a failing set hook: exit %d, want 1", args, res.code)
				}
				for _, want := range []string{"step 2/5: the set-new hook " + hook[0] + " exited with status 3: relay API: 503 service unavailable, try later",
					"nothing was resealed", "hint: fix the hook"} {
					if !strings.Contains(res.stderr, want) {
						t.Errorf("%v does not say %q", args, want)
					}
				}
				if strings.Contains(res.stderr, "step 3/5") {
					t.Errorf("%v went on to step 3", args)
				}
				if cur := f.current(); cur.Generation != before.Generation || cur.Version != before.Version || cur.Password() != fleetPass {
					t.Errorf("%v: the entry changed: generation %s version %s", args, cur.Generation, cur.Version)
				}
				if source == "age" && readTestFile(t, f.credFile) != fileBefore {
					t.Errorf("%v: the credential file was rewritten", args)
				}
			}
			if _, err := os.Stat(f.stateFile()); err != nil {
				t.Fatalf("no state file after the failure: %v", err)
			}
			if source == "vault" {
				// The new secret waits in Vault, sealed like the entry.
				sec, err := f.vs.Client.KVv2("secret").Get(t.Context(), fleetVaultPath+"-rotation/primary")
				if err != nil {
					t.Fatalf("the pending entry: %v", err)
				}
				if pw, _ := sec.Data["password"].(string); !strings.HasPrefix(pw, "-----BEGIN AGE ENCRYPTED FILE-----") {
					t.Errorf("the pending password in Vault is not sealed: %.30q", pw)
				}
			}
			res := f.rotate("--abort")
			if res.code != 0 {
				t.Fatalf("--abort: exit %d", res.code)
			}
			if !strings.Contains(res.stderr, "abort: the retire hook retired the new password") || !strings.Contains(res.stderr, "rolled back") ||
				strings.Contains(res.stderr, "put the previous entry") {
				t.Error("--abort did not retire the new secret, or restored an entry it never changed")
			}
			if _, err := os.Stat(f.stateFile()); !os.IsNotExist(err) {
				t.Errorf("the state file is still there after --abort: %v", err)
			}
			if cur := f.current(); cur.Generation != before.Generation || cur.Version != before.Version {
				t.Errorf("after --abort the entry is generation %s version %s, want %s %s", cur.Generation, cur.Version, before.Generation, before.Version)
			}
			if err := f.authAt(fleetPass); err != nil {
				t.Errorf("the old password does not work after --abort: %v", err)
			}
			if source == "vault" {
				if _, err := f.vs.Client.KVv2("secret").Get(t.Context(), fleetVaultPath+"-rotation/primary"); err == nil {
					t.Error("the pending entry is still in Vault after --abort")
				}
			}
			if again := f.rotate("--abort"); again.code != 1 || !strings.Contains(again.stderr, `no rotation of "primary" is unfinished`) {
				t.Errorf("a second --abort: exit %d", again.code)
			}
		})
	}
}

// TestRotateRetireHookFails: the retire hook fails at step 5: the old
// secret stays valid at the relay (as does the new), every agent holds
// the new generation, and the command exits 1 naming the hook's error;
// --abort puts the previous entry back, waits until the agents hold it
// again, and retires the new secret at the relay.
func TestRotateRetireHookFails(t *testing.T) {
	for _, source := range []string{"age", "vault"} {
		t.Run(source, func(t *testing.T) { rotateRetireHookFails(t, source) })
	}
}

func rotateRetireHookFails(t *testing.T, source string) {
	f := newFleet(t, source, fleetOpts{agents: 2})
	hook := failingHook(t, f, "retire-old", "relay API: 409 credential in use")
	writeTestFile(t, f.opCfg, strings.Replace(readTestFile(t, f.opCfg), "retire_hook = ", "retire_hook = "+tomlList(hook)+"\n# was: ", 1))
	before := f.current()
	res := f.rotate()
	if res.code != 1 {
		t.Fatalf("with a failing retire hook: exit %d, want 1", res.code)
	}
	for _, want := range []string{"step 4/5: 2 of 2 agents hold generation",
		"step 5/5: the retire-old hook " + hook[0] + " exited with status 3: relay API: 409 credential in use; the old secret stays valid at the relay"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("the rotation does not say %q", want)
		}
	}
	rotated := f.current()
	if rotated.Generation == before.Generation {
		t.Fatal("the entry was not resealed")
	}
	if err := f.authAt(fleetPass); err != nil {
		t.Errorf("the old password stopped working although the retire hook failed: %v", err)
	}
	if err := f.authAt(rotated.Password()); err != nil {
		t.Errorf("the new password does not work: %v", err)
	}
	res = f.rotate("--abort")
	if res.code != 0 {
		t.Fatalf("--abort: exit %d", res.code)
	}
	for _, want := range []string{"abort: put the previous entry primary back", "generation " + before.Generation,
		"2 of 2 agents hold generation " + before.Generation, "abort: the retire hook retired the new password", "rolled back"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("--abort does not say %q", want)
		}
	}
	restored := f.current()
	if restored.Generation != before.Generation || restored.Password() != fleetPass {
		t.Errorf("after --abort the entry is generation %s, want %s with the old password", restored.Generation, before.Generation)
	}
	if source == "vault" {
		// The roll back is a new KV version holding the old one's data.
		b, _ := strconv.Atoi(before.Version)
		r, _ := strconv.Atoi(rotated.Version)
		if now, _ := strconv.Atoi(restored.Version); r != b+1 || now != r+1 {
			t.Errorf("KV versions: before %d, rotated %d, restored %d; want each one more", b, r, now)
		}
	}
	for _, a := range f.agents {
		if h, err := a.generations(); err != nil || h["primary"].Generation != before.Generation || h["primary"].PooledOld != 0 {
			t.Errorf("%s after --abort: %+v %v", a.name, h["primary"], err)
		}
	}
	if err := f.authAt(rotated.Password()); err == nil || !strings.Contains(err.Error(), "535") {
		t.Errorf("the new password still works after --abort: %v", err)
	}
	if err := f.authAt(fleetPass); err != nil {
		t.Errorf("the old password does not work after --abort: %v", err)
	}
	if _, err := os.Stat(f.stateFile()); !os.IsNotExist(err) {
		t.Errorf("the state file is still there after --abort: %v", err)
	}
}

// TestAgentReportRefused: an agent whose Vault token may read the entries
// but not write its report still delivers, and says once why its report
// is missing and which policy fixes it.
func TestAgentReportRefused(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.PutCredential(t, "sealrelay-rep/upstream", rigUser, rigPass)
	vs.Policy(t, "read-only", vaulttest.ReadPolicy("secret", "sealrelay-rep"))
	token := vs.CreateToken(t, vaulttest.Token{Policies: []string{"read-only"}})
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	rigVault(t, cfg, vs, "sealrelay-rep", false)
	writeTestFile(t, filepath.Join(dir, "vault-token"), token+"\n")
	a := startAgent(t, cfg)
	if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<rep@rig>"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the refused report in the log", func() bool {
		return strings.Contains(a.logs.String(), "cannot write this agent's generation report")
	})
	time.Sleep(2 * time.Second) // more tries, logged no more
	logs := a.logs.String()
	for _, want := range []string{"path=secret/data/sealrelay-rep-agents/agent.test", "permission denied",
		"hint=\"give the agent's token a policy with create and update on secret/data/sealrelay-rep-agents/agent.test\""} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not say %q", want)
		}
	}
	if n := strings.Count(logs, "cannot write this agent's generation report"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
}
