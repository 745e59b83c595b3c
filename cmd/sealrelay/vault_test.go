package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// rigVault turns the rig's config into one that reads the credential
// "upstream" from a real Vault at vs, path vaultPath, with the root token in
// a 0600 token file.
func rigVault(t testing.TB, cfgFile string, vs *vaulttest.Server, vaultPath string, sealed bool) {
	t.Helper()
	dir := filepath.Dir(cfgFile)
	if err := os.WriteFile(filepath.Join(dir, "vault-token"), []byte(vaulttest.RootToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := readTestFile(t, cfgFile)
	data = strings.Replace(data, "[credentials]\n", fmt.Sprintf(`[credentials]
source = "vault"
recipients = "recipients.txt"
[credentials.vault]
address = %q
path = %q
auth = "token"
token_file = "vault-token"
poll_interval = "1s"
sealed = %v
[credentials.age]
`, vs.Addr, vaultPath, sealed), 1)
	// The age keys stay under [credentials]; move them above the subtables.
	data = strings.Replace(data, "[credentials.age]\nidentity = \"identity.txt\"\nfile = \"credentials.age\"\n", "", 1)
	data = strings.Replace(data, "[credentials]\n", "[credentials]\nidentity = \"identity.txt\"\n", 1)
	writeTestFile(t, cfgFile, data)
}

// TestVaultCredsCLI: `creds set --vault` writes a sealed entry the agent
// then uses, and `creds list --vault` shows names, usernames and versions,
// never the password.
func TestVaultCredsCLI(t *testing.T) {
	vs := vaulttest.Start(t)
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	rigVault(t, cfg, vs, "sealrelay-cli", true)

	for i, pass := range []string{"first-" + rigPass, rigPass} {
		e := &env{ctx: t.Context(), stdin: strings.NewReader(pass + "\n"), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
		if code := run(e, []string{"creds", "set", "upstream", "--vault", "-c", cfg, "--username", rigUser, "--password-stdin"}); code != 0 {
			t.Fatalf("creds set --vault: exit %d: %s", code, e.stderr)
		}
		want := fmt.Sprintf("as version %d, sealed to 1 recipient (rig server)", i+1)
		if !strings.Contains(e.stderr.(*syncBuffer).String(), want) {
			t.Errorf("creds set --vault said %q, want %q", e.stderr, want)
		}
	}
	// What Vault holds is ciphertext: a Vault reader learns nothing.
	sec, err := vs.Client.KVv2("secret").Get(t.Context(), "sealrelay-cli/upstream")
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := sec.Data["password"].(string)
	if !strings.HasPrefix(stored, "-----BEGIN AGE ENCRYPTED FILE-----") || strings.Contains(stored, rigPass) {
		t.Errorf("the password in Vault is not sealed: %.40q", stored)
	}

	code, out, errs := runCLI(t, "creds", "list", "--vault", "-c", cfg)
	if code != 0 {
		t.Fatalf("creds list --vault: exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "upstream") || !strings.Contains(out, rigUser) || !strings.Contains(out, "2") || !strings.Contains(out, "yes") {
		t.Errorf("creds list --vault:\n%s", out)
	}
	if strings.Contains(out+errs, rigPass) || strings.Contains(out+errs, "AGE ENCRYPTED") {
		t.Error("creds list --vault printed the password or its ciphertext")
	}

	a := startAgent(t, cfg)
	if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<vaultcli@rig>"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if m := up.Messages()[0]; m.Username != rigUser {
		t.Errorf("delivered as %q", m.Username)
	}

	// Usage errors.
	for _, args := range [][]string{
		{"creds", "list", "--vault"},
		{"creds", "list", "--vault", "-c", cfg, "-f", "x.age"},
	} {
		if code, _, _ := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// rotation keeps sending through the agent while the relay password is
// rotated twice: first at the relay and then in the store in the same
// second, then the other way round. It returns the figures and fails the
// test on any loss or bounce.
func rotation(t *testing.T, a *runningAgent, up *upstream.Server, setStored func(pass string)) {
	t.Helper()
	l := startLoad(a.Addr().String(), "rot")
	time.Sleep(time.Second)
	// A relay revokes the sessions of an account whose password changes:
	// every later message needs a fresh AUTH.
	up.SetPassword(rigUser, "rotated-1-"+rigPass) // the relay first,
	up.DropSessions()
	setStored("rotated-1-" + rigPass) // then the store, in the same second
	time.Sleep(3 * time.Second)
	setStored("rotated-2-" + rigPass) // the store first,
	up.SetPassword(rigUser, "rotated-2-"+rigPass)
	up.DropSessions()
	time.Sleep(3 * time.Second)
	accepted, refused := l.stop()

	waitRelayed(t, up, accepted)
	o := tally(t, a, up, accepted, refused)
	t.Logf("ROTATION %s auth-retries=%d", o, a.Deliverer().Stats().AuthRetries)
	authed := 0
	for _, s := range up.Sessions() {
		if s.UnauthenticatedMail() {
			t.Errorf("session %d sent MAIL without AUTH during rotation", s.ID)
		}
		if s.Authenticated() && s.MailIssued() {
			authed++
		}
	}
	// One session before the rotations and at least one after each: the
	// new passwords were really used.
	if authed < 3 {
		t.Errorf("%d authenticated sessions carried mail, want at least 3", authed)
	}
}

// TestRotationUnderLoadAgeFile rotates through `sealrelay creds set`; the
// agent sees the new file by watching it.
func TestRotationUnderLoadAgeFile(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{DiscardBodies: true})
	a := startAgent(t, rigConfig(t, dir, up.Addr(), relayOpts{}, ""))
	rotation(t, a, up, func(pass string) { writeCred(t, dir, rigUser, pass) })
	if a.Store().Stats().Changes < 2 {
		t.Errorf("the store saw %d credential changes, want 2", a.Store().Stats().Changes)
	}
}

// TestRotationUnderLoadVault rotates with a KV put, as `vault kv put`
// does; the agent sees the new version by polling the entry's metadata.
func TestRotationUnderLoadVault(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.PutCredential(t, "sealrelay-rot/upstream", rigUser, rigPass)
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{DiscardBodies: true})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	rigVault(t, cfg, vs, "sealrelay-rot", false)
	a := startAgent(t, cfg)
	rotation(t, a, up, func(pass string) { vs.PutCredential(t, "sealrelay-rot/upstream", rigUser, pass) })
	if a.Store().Stats().Changes < 2 {
		t.Errorf("the store saw %d credential changes, want 2", a.Store().Stats().Changes)
	}
}

// TestVaultDownAndBack: with Vault down at start, the agent accepts and
// spools mail, defers it (never bounces), says why once, and `check`
// reports the reason; when Vault comes back, deliveries resume by
// themselves. Then Vault stops mid-run while the relay password changes:
// nothing is lost or bounced, and deliveries resume once Vault is back
// with the new password.
func TestVaultDownAndBack(t *testing.T) {
	vs := vaulttest.Start(t)
	var mu sync.Mutex
	pass := rigPass
	vs.Seed(t, func(t testing.TB, s *vaulttest.Server) {
		mu.Lock()
		defer mu.Unlock()
		s.PutCredential(t, "sealrelay-down/upstream", rigUser, pass)
	})
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	rigVault(t, cfg, vs, "sealrelay-down", false)

	vs.Stop()
	a := startAgent(t, cfg)
	for i := range 5 {
		if err := send(a.Addr().String(), "app@client.test", "user@example.net", fmt.Sprintf("<down.%d@rig>", i)); err != nil {
			t.Fatalf("with Vault down, message %d was refused: %v", i, err)
		}
	}
	waitFor(t, 15*time.Second, "deferred attempts", func() bool {
		items := a.Queue().List()
		if len(items) != 5 {
			return false
		}
		for _, it := range items {
			if it.Attempts < 2 {
				return false
			}
		}
		return true
	})
	for _, it := range a.Queue().List() {
		if !strings.Contains(it.LastError, "unavailable") || !strings.Contains(it.LastError, "connection refused") {
			t.Errorf("last error %q does not say the credential is unavailable and why", it.LastError)
		}
	}
	if n := strings.Count(a.logs.String(), "credentials unavailable"); n != 1 {
		t.Errorf("the unavailable state was logged %d times, want once", n)
	}
	code, out, errs := runCLI(t, "check", "-c", cfg)
	if code != 1 || !strings.Contains(out+errs, "connection refused") {
		t.Errorf("check with Vault down: exit %d, output:\n%s%s", code, out, errs)
	}

	vs.Restart(t)
	if err := up.WaitMessages(5, 30*time.Second); err != nil {
		t.Fatalf("deliveries did not resume after Vault came back: %v", err)
	}
	if !strings.Contains(a.logs.String(), "credentials readable again") {
		t.Error("recovery not logged")
	}

	// Mid-run: Vault stops, and meanwhile the relay restarts with a new
	// password (so every connection must authenticate again).
	vs.Stop()
	mu.Lock()
	pass = "after-outage-" + rigPass
	mu.Unlock()
	addr, ca := up.Addr(), up.CA()
	up.Close()
	up = startUpstream(t, dir, upstream.Config{Addr: addr, CA: ca, Accounts: map[string]string{rigUser: pass}})
	deferredBefore := a.Queue().Stats().Deferred
	for i := 5; i < 10; i++ {
		if err := send(a.Addr().String(), "app@client.test", "user@example.net", fmt.Sprintf("<down.%d@rig>", i)); err != nil {
			t.Fatalf("message %d refused while Vault was down: %v", i, err)
		}
	}
	waitFor(t, 15*time.Second, "deferrals while Vault is down", func() bool {
		return a.Queue().Stats().Deferred >= deferredBefore+5 && len(a.Queue().List()) == 5
	})
	if up.Count() != 0 {
		t.Fatalf("the relay got %d messages with the old password", up.Count())
	}
	vs.Restart(t) // seeds the new password
	if err := up.WaitMessages(5, 30*time.Second); err != nil {
		t.Fatalf("deliveries did not resume: %v", err)
	}
	got := map[string]bool{}
	for _, m := range up.Messages() {
		got[m.MessageID] = true
	}
	for i := 5; i < 10; i++ {
		if id := fmt.Sprintf("<down.%d@rig>", i); !got[id] {
			t.Errorf("lost: %s", id)
		}
	}
	if b := a.Queue().Stats().Bounced; b != 0 {
		t.Errorf("%d DSNs generated", b)
	}
}
