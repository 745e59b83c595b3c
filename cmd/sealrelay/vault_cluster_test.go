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

// rigVaultCluster turns the rig's config into one that reads the
// credential "upstream" from every node of a Vault cluster (addresses =
// [...]), logging in with AppRole.
func rigVaultCluster(t testing.TB, cfgFile string, addrs []string, vaultPath, roleID, secretID string) {
	t.Helper()
	dir := filepath.Dir(cfgFile)
	for name, v := range map[string]string{"role-id": roleID, "secret-id": secretID} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	quoted := make([]string, len(addrs))
	for i, a := range addrs {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	data := readTestFile(t, cfgFile)
	data = strings.Replace(data, "[credentials]\nidentity = \"identity.txt\"\nfile = \"credentials.age\"\n",
		fmt.Sprintf(`[credentials]
identity = "identity.txt"
source = "vault"
[credentials.vault]
addresses = [%s]
path = %q
auth = "approle"
role_id_file = "role-id"
secret_id_file = "secret-id"
poll_interval = "1s"
timeout = "3s"
`, strings.Join(quoted, ", "), vaultPath), 1)
	if !strings.Contains(data, "addresses = [") {
		t.Fatal("rigVaultCluster: the rig's [credentials] table has changed")
	}
	writeTestFile(t, cfgFile, data)
}

// TestVaultClusterFailover: three agents, each configured with all three
// nodes of a Vault cluster, relay a steady stream of mail while the Vault
// leader is killed; once another node leads, the relay password is
// rotated in Vault and at the relay, which drops every session, so each
// agent must fetch the new password (from a surviving node) and
// authenticate again. Nothing may be lost or bounced, no submission
// refused, and every agent must deliver after the rotation.
func TestVaultClusterFailover(t *testing.T) {
	vc := vaulttest.StartCluster(t)
	admin := vc.Admin(t)
	const kvPath = "sealrelay-cluster"
	admin.Policy(t, "agents", vaulttest.ReadPolicy(vaulttest.KVMount, kvPath))
	roleID := admin.CreateAppRole(t, vaulttest.AppRole{Name: "agents", Policies: []string{"agents"}})
	admin.PutCredential(t, kvPath+"/upstream", rigUser, rigPass)

	// Every agent lists the leader first, so that killing it makes each
	// one fail over to another node.
	first := vc.Leader(t, 10*time.Second)
	addrs := []string{first.Addr}
	for _, a := range vc.Addrs() {
		if a != first.Addr {
			addrs = append(addrs, a)
		}
	}

	upDir := t.TempDir()
	up := startUpstream(t, upDir, upstream.Config{DiscardBodies: true})
	const nAgents = 3
	agents := make([]*runningAgent, nAgents)
	for i := range agents {
		dir := t.TempDir()
		rigFiles(t, dir, rigUser, rigPass)
		if err := up.WriteCA(filepath.Join(dir, "upstream-ca.pem")); err != nil {
			t.Fatal(err)
		}
		cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
		rigVaultCluster(t, cfg, addrs, kvPath, roleID, admin.SecretID(t, "", "agents", ""))
		agents[i] = startAgent(t, cfg)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vault cluster logs:\n%s", vc.Logs())
		}
	})

	var (
		mu       sync.Mutex
		accepted = map[string]time.Time{}
		refused  []string
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for i, a := range agents {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("<vc.%d.%d@rig>", i, n)
				err := send(a.Addr().String(), "app@client.test", "user@example.net", id)
				mu.Lock()
				if err == nil {
					accepted[id] = time.Now()
				} else {
					refused = append(refused, err.Error())
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// Every agent delivers before the failover.
	waitFor(t, 30*time.Second, "a delivery from every agent", func() bool {
		n, _ := perAgent(up, time.Time{})
		return len(n) == nAgents
	})

	leader := vc.Leader(t, 10*time.Second)
	if leader != first {
		t.Fatalf("%s leads, not %s as at the start", leader.ID, first.ID)
	}
	killed := time.Now()
	vc.Kill(leader)
	next := vc.Leader(t, 60*time.Second)
	failover := time.Since(killed)

	// The relay rotates first and drops every session; then the new
	// password goes into Vault through the new leader.
	newPass := "cluster-rotated-" + rigPass
	rotated := time.Now()
	up.SetPassword(rigUser, newPass)
	up.DropSessions()
	vc.Admin(t).PutCredential(t, kvPath+"/upstream", rigUser, newPass)
	waitFor(t, 60*time.Second, "a delivery from every agent after the rotation", func() bool {
		n, _ := perAgent(up, rotated)
		return len(n) == nAgents
	})
	time.Sleep(2 * time.Second) // keep sending a little with the new password
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	waitRelayed(t, up, accepted)
	msgs := up.Messages()
	delivered := map[string]bool{}
	bounced := 0
	for _, m := range msgs {
		delivered[m.MessageID] = true
		if m.From == "" {
			bounced++
		}
	}
	lost := 0
	for id := range accepted {
		if !delivered[id] {
			lost++
		}
	}
	var deferred, authRetries uint64
	for _, a := range agents {
		bounced += int(a.Queue().Stats().Bounced)
		deferred += a.Queue().Stats().Deferred
		authRetries += a.Deliverer().Stats().AuthRetries
	}
	after, firstAfter := perAgent(up, rotated)
	t.Logf("VAULT CLUSTER leader %s killed, %s leads after %v; sent=%d delivered=%d lost=%d bounced=%d refused=%d deferred=%d auth-retries=%d",
		leader.ID, next.ID, failover.Round(100*time.Millisecond), len(accepted), len(delivered), lost, bounced, len(refused), deferred, authRetries)
	for i, a := range agents {
		at, ok := switchedAt(a.logs.String())
		if !ok {
			t.Errorf("agent %d never switched to another Vault node", i)
		}
		t.Logf("VAULT CLUSTER agent %d: switched Vault node %v after the kill; %d delivered on new sessions after the rotation, the first %v after it",
			i, at.Sub(killed).Round(10*time.Millisecond), after[i], firstAfter[i].Round(10*time.Millisecond))
	}
	if lost != 0 || bounced != 0 {
		t.Errorf("lost %d, bounced %d; both must be 0", lost, bounced)
	}
	if len(refused) != 0 {
		t.Errorf("%d submissions refused, the first: %s", len(refused), refused[0])
	}
	for _, s := range up.Sessions() {
		if s.UnauthenticatedMail() {
			t.Errorf("session %d sent MAIL without AUTH", s.ID)
		}
	}
}

// switchedAt returns when the agent's log first says its Vault source
// switched to another node.
func switchedAt(logs string) (time.Time, bool) {
	for _, l := range strings.Split(logs, "\n") {
		if !strings.Contains(l, "vault node unusable; switched to another") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(l, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		return at, err == nil
	}
	return time.Time{}, false
}

// agentOf reads the agent's number from a message ID "<vc.A.N@rig>".
func agentOf(msgID string) int {
	var a, n int
	if _, err := fmt.Sscanf(msgID, "<vc.%d.%d@rig>", &a, &n); err != nil {
		return -1
	}
	return a
}

// perAgent counts the messages from each agent the relay accepted on an
// authenticated session opened after since (after a rotation at since:
// sessions that logged in with the new password), and how long after
// since the first of them came.
func perAgent(up *upstream.Server, since time.Time) (map[int]int, map[int]time.Duration) {
	opened := map[int]time.Time{}
	for _, s := range up.Sessions() {
		opened[s.ID] = s.Start
	}
	count, first := map[int]int{}, map[int]time.Duration{}
	for _, m := range up.Messages() {
		a := agentOf(m.MessageID)
		if a < 0 || !opened[m.Session].After(since) || m.Username == "" {
			continue
		}
		count[a]++
		if d, ok := first[a]; !ok || m.Time.Sub(since) < d {
			first[a] = m.Time.Sub(since)
		}
	}
	return count, first
}
