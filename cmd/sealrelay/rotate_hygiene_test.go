package main

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base32"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

// TestSecretHygieneRotation runs a whole rotation with each source: the
// built agents and `creds rotate` from the built binary, the hooks
// wrapped by a script that records, when each hook runs, its own
// cmdline and environ, those of its parent (the rotate command), and the
// rotation's state file. Then neither the old nor the new password (as
// is, hex, and in their PLAIN and LOGIN base64 forms) may be in the
// command's output, the agents' logs, the recorded argv and environments,
// the state file (mode 0600), the rotate command's TMPDIR, the spools, any
// other file of the run, the relay's passwd-files, /generations or
// /metrics. And the generations say nothing about the secret: random,
// not a digest of it, and different for two sets of the same secret.
func TestSecretHygieneRotation(t *testing.T) {
	for _, source := range []string{"age", "vault"} {
		t.Run(source, func(t *testing.T) { rotationHygiene(t, source) })
	}
}

// recorder is the hook wrapper: it records what it can see of itself and
// of its parent, never its standard input, then runs the real hook.
const recorder = `#!/usr/bin/python3
import json, os, shutil, subprocess, sys
evidence, state, real = sys.argv[1], sys.argv[2], sys.argv[3:]
data = sys.stdin.read()
action = json.loads(data)["action"]
for who, pid in (("hook", "self"), ("rotate", str(os.getppid()))):
    for f in ("cmdline", "environ"):
        shutil.copyfile("/proc/%s/%s" % (pid, f), os.path.join(evidence, "%s.%s.%s" % (action, who, f)))
if os.path.exists(state):
    shutil.copyfile(state, os.path.join(evidence, action + ".state.json"))
    with open(os.path.join(evidence, action + ".state.mode"), "w") as m:
        m.write("%o" % (os.stat(state).st_mode & 0o777))
sys.exit(subprocess.run(real, input=data, text=True).returncode)
`

func rotationHygiene(t *testing.T, source string) {
	// The rig needs the state file's path for the recorder before it
	// exists: build the fleet, then point the hooks at the recorder.
	f := newFleet(t, source, fleetOpts{agents: 2})
	evidence := filepath.Join(f.dir, "evidence")
	os.Mkdir(evidence, 0o700)
	wrapper := filepath.Join(f.dir, "recorder")
	if err := os.WriteFile(wrapper, []byte(recorder), 0o755); err != nil {
		t.Fatal(err)
	}
	hook := append([]string{wrapper, evidence, f.stateFile(), hookPath(t)}, f.relay.Dovecot.PasswdFiles()...)
	cfg := readTestFile(t, f.opCfg)
	cfg = regexp.MustCompile(`(?m)^(set_hook|retire_hook) = .*$`).ReplaceAllString(cfg, "$1 = "+strings.ReplaceAll(tomlList(hook), "$", "$$"))
	writeTestFile(t, f.opCfg, cfg)
	tmp := filepath.Join(f.dir, "tmp")
	os.Mkdir(tmp, 0o700)
	f.rotateEnv = []string{"TMPDIR=" + tmp, "HYGIENE_MARKER=environ-was-read"}

	old := f.current()
	l := f.startLoad()
	res := f.rotate()
	accepted, lost, bounced := l.finish(t, f)
	if res.code != 0 {
		t.Fatalf("creds rotate: exit %d", res.code)
	}
	if lost != 0 || bounced != 0 || accepted == 0 {
		t.Errorf("accepted %d, lost %d, bounced %d", accepted, lost, bounced)
	}
	cur := f.current()
	newPass := cur.Password()
	if newPass == "" || newPass == fleetPass {
		t.Fatal("no new password")
	}

	var printed bytes.Buffer
	printed.WriteString(res.stderr)
	for _, a := range f.agents {
		printed.WriteString(a.p.stderr.String())
		for _, path := range []string{"/generations", "/metrics"} {
			resp, err := http.Get("http://" + a.metrics + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			printed.Write(b)
		}
	}
	forbidden := map[string]string{"any age secret key": "AGE-SECRET-KEY-"}
	for k, v := range secretForms(fleetUser, fleetPass) {
		forbidden["old "+k] = v
	}
	for k, v := range secretForms(fleetUser, newPass) {
		forbidden["new "+k] = v
	}
	sealed := map[string]bool{"identity.txt": true, "credentials.age": true, "vault-token": true, "operator-token": true}
	if source == "vault" {
		for _, a := range f.agents {
			forbidden["vault token of "+a.name] = strings.TrimSpace(readTestFile(t, filepath.Join(filepath.Dir(a.cfg), "vault-token")))
		}
		forbidden["the operator's vault token"] = strings.TrimSpace(readTestFile(t, filepath.Join(f.dir, "operator-token")))
	}
	look := func(where string, data []byte) {
		for what, s := range forbidden {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s contains the %s", where, what)
			}
		}
	}
	look("the rotate command's output, the agents' logs, /generations and /metrics", printed.Bytes())

	// Positive controls: the recorder saw both hooks run, with their
	// parent the rotate command, and what it read is what they had.
	for _, action := range []string{"set-new", "retire-old"} {
		self := readTestFile(t, filepath.Join(evidence, action+".hook.environ"))
		parentArgs := readTestFile(t, filepath.Join(evidence, action+".rotate.cmdline"))
		parentEnv := readTestFile(t, filepath.Join(evidence, action+".rotate.environ"))
		if !strings.Contains(self, "SEALRELAY_HOOK_ACTION="+action) || !strings.Contains(parentArgs, "rotate") ||
			!strings.Contains(parentEnv, "HYGIENE_MARKER=environ-was-read") {
			t.Errorf("%s: the recorder did not see the hook and the rotate command: the search would be blind", action)
		}
		if mode := readTestFile(t, filepath.Join(evidence, action+".state.mode")); mode != "600" {
			t.Errorf("the state file had mode %s during %s, want 600", mode, action)
		}
		state := readTestFile(t, filepath.Join(evidence, action+".state.json"))
		if source == "age" && strings.Count(state, "-----BEGIN AGE ENCRYPTED FILE-----") != 2 {
			t.Errorf("the state file during %s does not hold the two entries sealed", action)
		}
	}
	files := testlib.ReadTree(t, f.dir, func(path string) bool { return sealed[filepath.Base(path)] }, look)
	if files < 10 {
		t.Errorf("only %d files looked at: the walk is broken", files)
	}
	tmpFiles, _ := os.ReadDir(tmp)
	for _, e := range tmpFiles {
		t.Errorf("the rotate command left %s in its TMPDIR", e.Name())
	}
	for _, p := range f.relay.Dovecot.PasswdFiles() {
		b, _ := os.ReadFile(p)
		look("the relay's passwd-file "+p, b)
		if !bytes.Contains(b, []byte("{SHA512-CRYPT}$6$")) && bytes.Contains(b, []byte(fleetUser)) {
			t.Errorf("%s holds the password in another form than SHA512-CRYPT", p)
		}
	}

	// The generations reveal nothing.
	for _, c := range []struct{ gen, pass string }{{old.Generation, fleetPass}, {cur.Generation, newPass}} {
		if !regexp.MustCompile(`^[A-Z2-7]{26}$`).MatchString(c.gen) {
			t.Errorf("generation %q is not 26 characters of base32", c.gen)
		}
		for name, digest := range digests(c.pass) {
			if strings.Contains(digest, c.gen) || strings.Contains(c.gen, digest[:8]) {
				t.Errorf("generation %s is derived from the %s of the password", c.gen, name)
			}
		}
	}
	// Two sets of the same secret: two generations.
	scratch := filepath.Join(f.dir, "scratch.age")
	var gens []string
	for range 2 {
		if code, _, errs := runCLIStdin(t, newPass+"\n", "creds", "set", "primary", "-f", scratch, "-R", f.recipients,
			"-i", f.agents[0].identity, "--username", fleetUser, "--password-stdin"); code != 0 {
			t.Fatal(errs)
		}
		id, err := keys.Load(f.agents[0].identity)
		if err != nil {
			t.Fatal(err)
		}
		got, err := agefile.Read(scratch, id)
		if err != nil {
			t.Fatal(err)
		}
		gens = append(gens, got[0].Generation)
		if !got[0].SameSecret(cur) {
			t.Fatal("the scratch entry does not hold the same secret")
		}
	}
	if gens[0] == gens[1] || gens[0] == cur.Generation {
		t.Errorf("the same secret set twice got generations %v (and the rotation %s): a generation must not depend on the secret", gens, cur.Generation)
	}
	seen := map[string]bool{}
	for range 1000 {
		g := secrets.NewGeneration()
		if seen[g] {
			t.Fatalf("generation %s made twice in 1000", g)
		}
		seen[g] = true
	}
}

// digests are the usual digests of s, in the encodings a generation
// could be made of.
func digests(s string) map[string]string {
	out := map[string]string{}
	b32 := base32.StdEncoding.WithPadding(base32.NoPadding)
	for name, sum := range map[string][]byte{
		"md5":    func() []byte { h := md5.Sum([]byte(s)); return h[:] }(),
		"sha1":   func() []byte { h := sha1.Sum([]byte(s)); return h[:] }(),
		"sha256": func() []byte { h := sha256.Sum256([]byte(s)); return h[:] }(),
		"sha512": func() []byte { h := sha512.Sum512([]byte(s)); return h[:] }(),
	} {
		out[name+" (base32)"] = b32.EncodeToString(sum)
		out[name+" (hex)"] = strings.ToUpper(hex.EncodeToString(sum))
	}
	return out
}
