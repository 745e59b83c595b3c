package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	gosasl "github.com/emersion/go-sasl"

	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/internal/testing/peers/dovecot"
	"github.com/sealrelay/sealrelay/internal/testing/peers/postfixtest"
	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

// The rotation's rig: the relay is the real Postfix with Dovecot's SASL
// behind it (internal/testing/peers/dovecot), whose passwd-files the
// shipped hook dist/examples/rotate/dovecot-passwd-file edits; the fleet
// is agents run from the built binary, each with its own key, spool and
// metrics listener, all reading one sealed file (or one Vault entry,
// sealed to all of them); `creds rotate` runs as the built binary too.

const (
	fleetUser = "relay@fleet.test"
	fleetPass = "Fleet-0ld-pa55word-never-in-logs"
	// fleetVaultPath is where the entry lives in Vault.
	fleetVaultPath = "sealrelay-fleet"
)

// fleet is a relay, n agents and the operator's config.
type fleet struct {
	t      *testing.T
	dir    string
	source string // age or vault
	relay  *dovecot.Relay
	vs     *vaulttest.Server
	agents []*fleetAgent
	// opCfg is the operator's config: agent 1's, with [rotation].
	opCfg, credFile, recipients string
	// rotateEnv is added to the rotate command's environment.
	rotateEnv []string
}

// fleetAgent is one agent of the fleet.
type fleetAgent struct {
	name, cfg, metrics, identity string
	p                            *agentProcess
}

// fleetOpts change the rig.
type fleetOpts struct {
	agents int
	// set and retire replace the shipped hook's argv.
	set, retire []string
	// make is rotation.make_hook.
	make []string
	// wait is rotation.wait_timeout (default 60s).
	wait string
	// vaultPolicy: the agents and the operator log in with tokens of the
	// documented policies, not the root token.
}

// hookPath is the shipped Dovecot passwd-file hook.
func hookPath(t testing.TB) string {
	p, err := filepath.Abs(filepath.Join(repoRoot, "dist/examples/rotate/dovecot-passwd-file"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newFleet starts the relay (with fleetUser's password fleetPass), seals
// the entry "primary" to n agents' keys, writes the configs, and starts
// the agents.
func newFleet(t *testing.T, source string, o fleetOpts) *fleet {
	t.Helper()
	if o.agents == 0 {
		o.agents = 3
	}
	if o.wait == "" {
		o.wait = "60s"
	}
	f := &fleet{t: t, dir: t.TempDir(), source: source}
	f.relay = dovecot.StartRelay(t, dovecot.Config{Users: map[string]string{fleetUser: fleetPass}}, postfixtest.Config{})
	caFile := filepath.Join(f.dir, "relay-ca.pem")
	if err := f.relay.CA.WriteFile(caFile); err != nil {
		t.Fatal(err)
	}
	credDir := filepath.Join(f.dir, "creds")
	os.Mkdir(credDir, 0o700)
	f.credFile = filepath.Join(credDir, "credentials.age")
	f.recipients = filepath.Join(credDir, "recipients.txt")
	var list strings.Builder
	for i := range o.agents {
		a := &fleetAgent{name: fmt.Sprintf("agent%d.test", i+1)}
		adir := filepath.Join(f.dir, fmt.Sprintf("agent%d", i+1))
		os.Mkdir(adir, 0o700)
		a.identity = filepath.Join(adir, "identity.txt")
		pub, err := keys.WriteNew(a.identity, false)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&list, "# %s\n%s\n", a.name, pub)
		port, err := testlib.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		a.metrics = "127.0.0.1:" + strconv.Itoa(port)
		a.cfg = filepath.Join(adir, "sealrelay.toml")
		f.agents = append(f.agents, a)
	}
	writeTestFile(t, f.recipients, list.String())
	if source == "vault" {
		f.vs = vaulttest.Start(t)
		f.vs.Policy(t, "sealrelay-operator", operatorPolicy)
	}
	for i, a := range f.agents {
		creds := fmt.Sprintf("[credentials]\nsource = \"age\"\nidentity = %q\nfile = %q\n", a.identity, f.credFile)
		if source == "vault" {
			f.vs.Policy(t, "sealrelay-"+a.name, strings.ReplaceAll(agentPolicy, "AGENT", a.name))
			token := f.vs.CreateToken(t, vaulttest.Token{Policies: []string{"sealrelay-" + a.name}})
			tokenFile := filepath.Join(filepath.Dir(a.cfg), "vault-token")
			if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			creds = fmt.Sprintf("[credentials]\nsource = \"vault\"\nidentity = %q\nrecipients = %q\n"+
				"[credentials.vault]\naddress = %q\npath = %q\nauth = \"token\"\ntoken_file = %q\npoll_interval = \"1s\"\nsealed = true\n",
				a.identity, f.recipients, f.vs.Addr, fleetVaultPath, tokenFile)
		}
		text := fmt.Sprintf(`hostname = %q
data_dir = %q
metrics_address = %q

[listen]
address = "127.0.0.1:0"

[[relay]]
name = "dovecot-relay"
address = %q
credential = "primary"
ca_file = %q
server_name = "localhost"
connect_timeout = "5s"
command_timeout = "20s"

%s
[queue]
%s`, a.name, filepath.Join(filepath.Dir(a.cfg), "data"), a.metrics, f.relay.Addr(), caFile, creds, rig.QuickQueue)
		writeTestFile(t, a.cfg, text)
		if i == 0 {
			f.opCfg = filepath.Join(f.dir, "operator.toml")
			writeTestFile(t, f.opCfg, text+f.rotationTable(o))
		}
	}
	// The entry, as an operator writes it first.
	if source == "vault" {
		opToken := f.vs.CreateToken(t, vaulttest.Token{Policies: []string{"sealrelay-operator"}})
		opTokenFile := filepath.Join(f.dir, "operator-token")
		if err := os.WriteFile(opTokenFile, []byte(opToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, f.opCfg, strings.Replace(readTestFile(t, f.opCfg), filepath.Join(filepath.Dir(f.agents[0].cfg), "vault-token"), opTokenFile, 1))
		code, _, errs := runCLIStdin(t, fleetPass+"\n", "creds", "set", "primary", "--vault", "-c", f.opCfg, "--username", fleetUser, "--password-stdin")
		if code != 0 {
			t.Fatalf("creds set --vault: exit %d: %s", code, errs)
		}
	} else {
		code, _, errs := runCLIStdin(t, fleetPass+"\n", "creds", "set", "primary", "-f", f.credFile, "-R", f.recipients, "--username", fleetUser, "--password-stdin")
		if code != 0 {
			t.Fatalf("creds set: exit %d: %s", code, errs)
		}
	}
	for _, a := range f.agents {
		a.start(t)
	}
	f.waitGeneration(f.current().Generation, 30*time.Second)
	return f
}

// rotationTable is the operator's [rotation] table.
func (f *fleet) rotationTable(o fleetOpts) string {
	hook := append([]string{hookPath(f.t)}, f.relay.Dovecot.PasswdFiles()...)
	if o.set == nil {
		o.set = hook
	}
	if o.retire == nil {
		o.retire = hook
	}
	var b strings.Builder
	b.WriteString("\n[rotation]\n")
	if f.source == "age" {
		var addrs []string
		for _, a := range f.agents {
			addrs = append(addrs, a.metrics)
		}
		fmt.Fprintf(&b, "fleet = %s\n", tomlList(addrs))
	}
	if len(o.set) > 0 {
		fmt.Fprintf(&b, "set_hook = %s\n", tomlList(o.set))
	}
	fmt.Fprintf(&b, "retire_hook = %s\n", tomlList(o.retire))
	if len(o.make) > 0 {
		fmt.Fprintf(&b, "make_hook = %s\n", tomlList(o.make))
	}
	fmt.Fprintf(&b, "wait_timeout = %q\npoll_interval = \"250ms\"\nhook_timeout = \"30s\"\nstate_dir = %q\n", o.wait, filepath.Join(f.dir, "state"))
	os.Mkdir(filepath.Join(f.dir, "state"), 0o700)
	return b.String()
}

// The Vault policies the README documents, for an agent (AGENT is its
// hostname) and for the operator who rotates.
const (
	agentPolicy = `
path "secret/data/sealrelay-fleet/*" { capabilities = ["read"] }
path "secret/metadata/sealrelay-fleet/*" { capabilities = ["read"] }
path "secret/data/sealrelay-fleet-agents/AGENT" { capabilities = ["create", "update"] }
`
	operatorPolicy = `
path "secret/data/sealrelay-fleet/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/sealrelay-fleet/*" { capabilities = ["read", "list"] }
path "secret/metadata/sealrelay-fleet" { capabilities = ["list"] }
path "secret/data/sealrelay-fleet-rotation/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/sealrelay-fleet-rotation/*" { capabilities = ["delete"] }
path "secret/metadata/sealrelay-fleet-agents" { capabilities = ["list"] }
path "secret/metadata/sealrelay-fleet-agents/" { capabilities = ["list"] }
path "secret/data/sealrelay-fleet-agents/*" { capabilities = ["read"] }
`
)

func tomlList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// runCLIStdin runs one command line in-process with stdin.
func runCLIStdin(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(&env{ctx: t.Context(), stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb}, args)
	return code, out.String(), errb.String()
}

// start runs the agent from the built binary.
func (a *fleetAgent) start(t *testing.T) {
	t.Helper()
	a.p = startProcess(t, a.cfg)
}

// stop stops the agent with SIGTERM and waits for it.
func (a *fleetAgent) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.p.p.Stop(ctx); err != nil {
		t.Errorf("%s: %v", a.name, err)
	}
}

// generations reads the agent's /generations.
func (a *fleetAgent) generations() (map[string]secrets.Holding, error) {
	resp, err := http.Get("http://" + a.metrics + "/generations")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out map[string]secrets.Holding
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

// metric reads one unlabelled metric of the agent.
func (a *fleetAgent) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + a.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s: no metric %s", a.name, name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// current reads the entry as the agents do (with agent 1's key).
func (f *fleet) current() secrets.Credential {
	f.t.Helper()
	if f.source == "age" {
		id, err := keys.Load(f.agents[0].identity)
		if err != nil {
			f.t.Fatal(err)
		}
		creds, err := agefile.Read(f.credFile, id)
		if err != nil {
			f.t.Fatal(err)
		}
		for _, c := range creds {
			if c.Name == "primary" {
				return c
			}
		}
		f.t.Fatal("no entry primary")
	}
	cfg, err := config.Load(f.agents[0].cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	src, err := openVault(cfg, newLogger(cfg, io.Discard))
	if err != nil {
		f.t.Fatal(err)
	}
	got, err := src.Fetch(f.t.Context(), []string{"primary"})
	if err != nil {
		f.t.Fatal(err)
	}
	return got["primary"]
}

// waitGeneration waits until every running agent holds gen with no
// connection on an older secret.
func (f *fleet) waitGeneration(gen string, d time.Duration) {
	f.t.Helper()
	testlib.WaitFor(f.t, d, "every agent on generation "+gen, func() bool {
		for _, a := range f.agents {
			h, err := a.generations()
			if err != nil || h["primary"].Generation != gen || h["primary"].PooledOld != 0 {
				return false
			}
		}
		return true
	})
}

// rotateResult is one run of `creds rotate`.
type rotateResult struct {
	code   int
	stderr string
}

// rotateArgs are the command line of `creds rotate primary` for the
// fleet's source, with more flags.
func (f *fleet) rotateArgs(more ...string) []string {
	args := []string{"creds", "rotate", "primary", "-c", f.opCfg}
	if f.source == "vault" {
		args = append(args, "--vault")
	} else {
		args = append(args, "-f", f.credFile, "-R", f.recipients, "-i", f.agents[0].identity)
	}
	return append(args, more...)
}

// rotate runs `sealrelay creds rotate primary` from the built binary.
func (f *fleet) rotate(more ...string) rotateResult {
	f.t.Helper()
	cmd := exec.Command(builtBinary(f.t), f.rotateArgs(more...)...)
	cmd.Env = append(os.Environ(), f.rotateEnv...)
	var errb bytes.Buffer
	cmd.Stderr, cmd.Stdout = &errb, &errb
	code := exitCode(f.t, cmd.Run())
	f.t.Logf("creds rotate %s: exit %d\n%s", strings.Join(more, " "), code, errb.String())
	return rotateResult{code: code, stderr: errb.String()}
}

// authAt tries AUTH PLAIN at the relay directly, as a client would.
func (f *fleet) authAt(pass string) error {
	c, _ := f.relay.Dial(f.t)
	defer c.Close()
	return c.Auth(gosasl.NewPlainClient("", fleetUser, pass))
}

// stateFile is the rotation's state file.
func (f *fleet) stateFile() string {
	if f.source == "vault" {
		return filepath.Join(f.dir, "state", "vault-secret-"+fleetVaultPath+".rotate-primary.json")
	}
	return filepath.Join(f.dir, "state", "credentials.age.rotate-primary.json")
}

// startLoad sends mail through the agents, round robin, until stopped.
func (f *fleet) startLoad() *load {
	addrs := make([]string, len(f.agents))
	for i, a := range f.agents {
		addrs[i] = a.p.addr
	}
	return startLoadOver(addrs, "load", 15*time.Millisecond)
}

// finish stops the load, waits until the relay passed on every accepted
// message, and returns accepted, lost and bounced.
func (l *load) finish(t *testing.T, f *fleet) (accepted, lost, bounced int) {
	t.Helper()
	sent, refused := l.stop()
	up := f.relay.Upstream
	deadline := time.Now().Add(90 * time.Second)
	missing := func() int {
		got := map[string]bool{}
		for _, m := range up.Messages() {
			got[m.MessageID] = true
		}
		n := 0
		for id := range sent {
			if !got[id] {
				n++
			}
		}
		return n
	}
	for missing() > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	for _, m := range up.Messages() {
		if m.From == "" {
			bounced++
		}
	}
	for _, a := range f.agents {
		bounced += int(a.metric(t, "sealrelay_spool_bounced_total"))
	}
	if refused > 0 {
		t.Errorf("%d submissions refused by the agents", refused)
	}
	return len(sent), missing(), bounced
}

// exitCode is the exit status a command's Run returned, failing the test
// if it did not run at all.
func exitCode(t testing.TB, err error) int {
	t.Helper()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0
}
