package rotate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

const (
	testUser = "relay@rotate.test"
	testPass = "Rotate-unit-0ld-pa55"
)

// testRig is a sealed file holding "primary", an agent that reads it (a
// /generations endpoint over the real file, the one scripted part), and
// hooks that record what they get.
type testRig struct {
	dir, file string
	id        *keys.Identity
	rl        *keys.RecipientList
	out       bytes.Buffer
	r         *Rotation
	agentDown atomic.Bool
}

func newTestRig(t *testing.T) *testRig {
	t.Helper()
	g := &testRig{dir: t.TempDir()}
	idFile := filepath.Join(g.dir, "identity.txt")
	pub, err := keys.WriteNew(idFile, false)
	if err != nil {
		t.Fatal(err)
	}
	if g.id, err = keys.Load(idFile); err != nil {
		t.Fatal(err)
	}
	rlFile := filepath.Join(g.dir, "recipients.txt")
	os.WriteFile(rlFile, []byte("# unit\n"+pub+"\n"), 0o644)
	if g.rl, err = keys.LoadRecipients(rlFile); err != nil {
		t.Fatal(err)
	}
	g.file = filepath.Join(g.dir, "credentials.age")
	c := secrets.NewCredential("primary", testUser, testPass, "")
	c.Generation = secrets.NewGeneration()
	if err := agefile.Write(g.file, []secrets.Credential{c}, g.rl); err != nil {
		t.Fatal(err)
	}
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if g.agentDown.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		cur, err := (&AgeFile{Path: g.file, Identity: g.id}).Current(context.Background(), "primary")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		json.NewEncoder(w).Encode(map[string]secrets.Holding{"primary": {Generation: cur.Generation, Loaded: true}})
	}))
	t.Cleanup(agent.Close)
	g.r = &Rotation{
		Name:      "primary",
		Backend:   &AgeFile{Path: g.file, Recipients: g.rl, Identity: g.id},
		Fleet:     &HTTPFleet{Addrs: []string{agent.URL}},
		Hooks:     Hooks{Set: g.hook(t, "set", "exit 0"), Retire: g.hook(t, "retire", "exit 0"), Timeout: 10 * time.Second},
		Password:  Password{Length: 32, Alphabet: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"},
		Wait:      2 * time.Second,
		Poll:      50 * time.Millisecond,
		StatePath: g.file + ".rotate-primary.json",
		Out:       &g.out,
	}
	return g
}

// hook writes a shell hook that records its stdin, argv and environment
// in dir/NAME.{stdin,argv,env} (test files: the stdin one holds the
// secret, which is what is checked), then runs body.
func (g *testRig) hook(t *testing.T, name, body string) []string {
	t.Helper()
	p := filepath.Join(g.dir, name+".sh")
	rec := filepath.Join(g.dir, name)
	script := fmt.Sprintf("#!/bin/sh\ncat > %[1]s.stdin\necho \"$@\" > %[1]s.argv\nenv > %[1]s.env\n%[2]s\n", rec, body)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{p, "--relay", "relay.example"}
}

func (g *testRig) current(t *testing.T) secrets.Credential {
	t.Helper()
	c, err := g.r.Backend.Current(context.Background(), "primary")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (g *testRig) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(g.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", parts)
	}
	text := err.Error()
	if h, ok := err.(interface{ Hint() string }); ok {
		text += " hint: " + h.Hint()
	}
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Errorf("error %q does not say %q", text, p)
		}
	}
}

// TestHooksGetTheSecretOnStdinOnly: the set and retire hooks get their
// configured arguments and nothing more, the action and name in the
// environment but neither secret nor VAULT_TOKEN, and the new secret,
// with the names and generations, as JSON on standard input.
func TestHooksGetTheSecretOnStdinOnly(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "hvs.unit-token-for-the-agent-only")
	g := newTestRig(t)
	old := g.current(t)
	if err := g.r.Start(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, g.out.String())
	}
	cur := g.current(t)
	if cur.Generation == old.Generation || cur.Password() == testPass || len(cur.Password()) != 32 {
		t.Fatalf("not rotated: %v", cur)
	}
	for _, h := range []struct{ name, action string }{{"set", ActionSetNew}, {"retire", ActionRetireOld}} {
		var in HookInput
		if err := json.Unmarshal([]byte(g.read(t, h.name+".stdin")), &in); err != nil {
			t.Fatal(err)
		}
		want := HookInput{Action: h.action, Name: "primary", Kind: "password", Username: testUser, Secret: cur.Password(),
			Generation: cur.Generation, OldUsername: testUser, OldGeneration: old.Generation}
		if in != want {
			t.Errorf("%s hook read %+v, want %+v", h.name, in, want)
		}
		if argv := g.read(t, h.name+".argv"); argv != "--relay relay.example\n" {
			t.Errorf("%s hook argv %q", h.name, argv)
		}
		env := g.read(t, h.name+".env")
		if !strings.Contains(env, "SEALRELAY_HOOK_ACTION="+h.action+"\n") || !strings.Contains(env, "SEALRELAY_CREDENTIAL=primary\n") {
			t.Errorf("%s hook environment lacks the action and name", h.name)
		}
		if strings.Contains(env, "VAULT_TOKEN") || strings.Contains(env, cur.Password()) || strings.Contains(env, testPass) {
			t.Errorf("%s hook environment holds a secret", h.name)
		}
	}
	if _, err := os.Stat(g.r.StatePath); !os.IsNotExist(err) {
		t.Errorf("state file left after a complete rotation: %v", err)
	}
}

// TestHookFailures: what a failing hook's error says, and that a hook's
// output never shows a secret.
func TestHookFailures(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		timeout    time.Duration
		want       []string
	}{
		{"exit status", `echo "first line" >&2; echo "relay says no" >&2; exit 4`, 0,
			[]string{"step 2/5: the set-new hook", "exited with status 4: relay says no", "nothing was resealed"}},
		{"silent", "exit 1", 0, []string{"exited with status 1 and printed nothing on standard error"}},
		{"killed", "kill -KILL $$", 0, []string{"exited with signal killed"}},
		{"timeout", "sleep 30", 300 * time.Millisecond,
			[]string{"did not finish within 300ms (rotation.hook_timeout) and was killed"}},
		{"echoes the secret", `secret=$(sed 's/.*"secret":"\([^"]*\)".*/\1/' ` + "`dirname $0`" + `/set.stdin); echo "bad password $secret" >&2; exit 2`, 0,
			[]string{"exited with status 2: bad password [redacted]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestRig(t)
			g.r.Hooks.Set = g.hook(t, "set", tc.body)
			if tc.timeout > 0 {
				g.r.Hooks.Timeout = tc.timeout
			}
			start := time.Now()
			err := g.r.Start(context.Background())
			wantErr(t, err, tc.want...)
			if time.Since(start) > 8*time.Second {
				t.Errorf("the hook ran %s", time.Since(start))
			}
			pending, kerr := g.r.Backend.Kept(context.Background(), RolePending, "primary", mustLoad(t, g.r.StatePath).Pending)
			if kerr != nil {
				t.Fatal(kerr)
			}
			if strings.Contains(err.Error()+g.out.String(), pending.Password()) {
				t.Error("a hook's output showed the new secret")
			}
			if g.current(t).Password() != testPass {
				t.Error("resealed after a failed set hook")
			}
		})
	}
}

func mustLoad(t *testing.T, path string) *State {
	t.Helper()
	st, err := loadState(path)
	if err != nil || st == nil {
		t.Fatalf("state %s: %v", path, err)
	}
	return st
}

// TestHookChecks: what is missing or cannot run is found before anything
// changes.
func TestHookChecks(t *testing.T) {
	g := newTestRig(t)
	g.r.Hooks.Retire = nil
	wantErr(t, g.r.Start(context.Background()), "rotation.retire_hook is not set")
	g.r.Hooks.Retire = []string{filepath.Join(g.dir, "no-such-hook")}
	wantErr(t, g.r.Start(context.Background()), "rotation.retire_hook", "no such file", "hint: it must name an executable file")
	noexec := filepath.Join(g.dir, "noexec")
	os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644)
	g.r.Hooks.Retire = []string{noexec}
	wantErr(t, g.r.Start(context.Background()), "rotation.retire_hook", "permission denied")
	g.r.Hooks.Retire, g.r.Hooks.Set = g.r.Hooks.Set, nil
	wantErr(t, g.r.Start(context.Background()), "rotation.set_hook is not set")
	if _, err := os.Stat(g.r.StatePath); !os.IsNotExist(err) {
		t.Error("a refused rotation left a state file")
	}
}

// TestKindsThatCannotRotate: certificates, and oauth2 entries without a
// client secret, are refused with what to do instead.
func TestKindsThatCannotRotate(t *testing.T) {
	g := newTestRig(t)
	refresh, err := secrets.ParseEntry("primary", map[string]any{"kind": "oauth2", "username": "u@example.com",
		"token_url": "https://login.example.com/token", "client_id": "id", "refresh_token": "rt-unit-secret"})
	if err != nil {
		t.Fatal(err)
	}
	if err := agefile.Write(g.file, []secrets.Credential{refresh}, g.rl); err != nil {
		t.Fatal(err)
	}
	wantErr(t, g.r.Start(context.Background()), `entry "primary" is an oauth2 entry without a client secret`, "creds set primary --oauth2")
	secretForm, _ := secrets.ParseEntry("primary", map[string]any{"kind": "oauth2", "username": "u@example.com",
		"token_url": "https://login.example.com/token", "client_id": "id", "client_secret": "cs-unit-secret"})
	agefile.Write(g.file, []secrets.Credential{secretForm}, g.rl)
	wantErr(t, g.r.Start(context.Background()), "cannot make a new client secret for a oauth2 entry itself", "rotation.make_hook")
	g.r.Hooks.Make = g.hook(t, "make", `echo '{"secret": "cs-unit-secret"}'`)
	wantErr(t, g.r.Start(context.Background()), "step 1/5: the new client secret is the old one; nothing was changed")
	g.r.Hooks.Make = g.hook(t, "make", `echo '{"secret": "cs-unit-new", "colour": "blue"}'`)
	wantErr(t, g.r.Start(context.Background()), "did not print one JSON object")
	g.r.Hooks.Make = g.hook(t, "make", `head -c 70000 /dev/zero | tr '\0' 'x'`)
	wantErr(t, g.r.Start(context.Background()), "printed more than 65536 bytes")
}

// TestStateFile: one rotation at a time, a state file no one else may
// read, and the errors about a state that is not right.
func TestStateFile(t *testing.T) {
	g := newTestRig(t)
	g.r.Hooks.Set = g.hook(t, "set", "exit 1")
	wantErr(t, g.r.Start(context.Background()), "exited with status 1")
	fi, err := os.Stat(g.r.StatePath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi.Mode(), err)
	}
	b, _ := os.ReadFile(g.r.StatePath)
	pending, _ := g.r.Backend.Kept(context.Background(), RolePending, "primary", mustLoad(t, g.r.StatePath).Pending)
	if bytes.Contains(b, []byte(testPass)) || bytes.Contains(b, []byte(pending.Password())) {
		t.Error("the state file holds a secret in clear")
	}
	wantErr(t, g.r.Start(context.Background()), `a rotation of "primary" is unfinished: step 1 of 5 done (made)`, "--resume", "--abort")

	unlock, err := lock(g.r.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, g.r.Resume(context.Background()), "another creds rotate of this entry is running")
	unlock()

	os.Chmod(g.r.StatePath, 0o644)
	wantErr(t, g.r.Resume(context.Background()), "has mode 0644: others may read or change it", "chmod 600 "+g.r.StatePath)
	os.Chmod(g.r.StatePath, 0o600)

	other := *g.r
	other.Name = "secondary"
	wantErr(t, other.Resume(context.Background()), `is the state of a rotation of "primary", not "secondary"`)

	os.WriteFile(g.r.StatePath, []byte("{not json"), 0o600)
	wantErr(t, g.r.Abort(context.Background()), "is damaged or of another version", "it holds no secret in clear")
	os.Remove(g.r.StatePath)
	wantErr(t, g.r.Resume(context.Background()), `no rotation of "primary" is unfinished`, "start one with")
	wantErr(t, g.r.Abort(context.Background()), `no rotation of "primary" is unfinished`)
}

// TestResumeAfterTheEntryChanged: an entry changed by someone else while
// the rotation waited is not overwritten.
func TestResumeAfterTheEntryChanged(t *testing.T) {
	g := newTestRig(t)
	set := g.r.Hooks.Set
	g.r.Hooks.Set = g.hook(t, "set-failing", "exit 1")
	wantErr(t, g.r.Start(context.Background()), "exited with status 1")
	c := secrets.NewCredential("primary", testUser, "someone-else-set-this", "")
	c.Generation = secrets.NewGeneration()
	agefile.Write(g.file, []secrets.Credential{c}, g.rl)
	g.r.Hooks.Set = set
	wantErr(t, g.r.Resume(context.Background()), "step 3/5: primary changed in age file", "holds generation "+c.Generation,
		"nothing was resealed", "--abort")
	if g.current(t).Password() != "someone-else-set-this" {
		t.Error("the other change was overwritten")
	}
}

// TestResumeAfterACrashAfterTheReseal: a run that resealed but stopped
// before it recorded so is resumed without sealing again.
func TestResumeAfterACrashAfterTheReseal(t *testing.T) {
	g := newTestRig(t)
	g.agentDown.Store(true)
	wantErr(t, g.r.Start(context.Background()), "step 4/5: not every agent", "answered 503 Service Unavailable", "nothing was retired")
	st := mustLoad(t, g.r.StatePath)
	st.Step = StepSet // as if the run died between the reseal and saving the state
	st.save(g.r.StatePath, time.Now())
	version := g.current(t).Version
	g.agentDown.Store(false)
	g.out.Reset()
	if err := g.r.Resume(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, g.out.String())
	}
	if !strings.Contains(g.out.String(), "step 3/5: age file "+g.file+" already holds generation "+st.NewGeneration) {
		t.Errorf("resume did not notice the reseal:\n%s", g.out.String())
	}
	if g.current(t).Version != version {
		t.Error("sealed a second time")
	}
}

// TestFleetAnswers: what the wait says of agents that cannot answer.
func TestFleetAnswers(t *testing.T) {
	notAgent := httptest.NewServer(http.NotFoundHandler())
	defer notAgent.Close()
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("<html>")) }))
	defer garbage.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"secondary": {"generation": "X", "loaded": true, "pooled_old": 0}}`))
	}))
	defer other.Close()
	refused := httptest.NewServer(http.NotFoundHandler())
	refused.Close()
	states, _ := (&HTTPFleet{Addrs: []string{notAgent.URL, garbage.URL, other.URL, strings.TrimPrefix(refused.URL, "http://")}}).Poll(context.Background(), "primary")
	v := view(states, "G")
	got := v.summary("G")
	for _, want := range []string{"0 of 4 agents hold generation G", notAgent.URL + " (answered 404 Not Found",
		garbage.URL + " (answered something that is not a generations report)", "(unreachable: ", "connection refused"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary %q does not say %q", got, want)
		}
	}
	if strings.Contains(got, other.URL) || v.done() {
		t.Errorf("an agent not configured for the entry was waited for, or the wait was done: %q", got)
	}
	onlyOther, _ := (&HTTPFleet{Addrs: []string{other.URL}}).Poll(context.Background(), "primary")
	if v := view(onlyOther, "G"); v.done() || v.summary("G") != "none of 1 agents uses the entry" {
		t.Errorf("a fleet where no agent uses the entry: %q done %v", v.summary("G"), v.done())
	}
}

// TestPassword: the length asked for, only the alphabet, every character
// of it used.
func TestPassword(t *testing.T) {
	p := Password{Length: 40, Alphabet: "abcdef"}
	seen := map[rune]bool{}
	for range 50 {
		s, err := p.New()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != 40 || strings.Trim(s, "abcdef") != "" {
			t.Fatalf("password %q", s)
		}
		for _, r := range s {
			seen[r] = true
		}
	}
	if len(seen) != 6 {
		t.Errorf("only %d of 6 characters drawn in 2000", len(seen))
	}
	if _, err := (Password{Length: 10, Alphabet: "a"}).New(); err == nil {
		t.Error("a one-character alphabet was accepted")
	}
}
