package vaulttest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// A three-node Vault cluster with integrated Raft storage on loopback, for
// the tests of an agent that must survive the loss of a Vault node. It is
// started as an operator would: `vault server -config` per node (each
// node's retry_join names node 1), `vault operator init` with one key
// share on node 1, `vault operator unseal` on each node in turn, then
// waiting until `vault operator raft list-peers` shows one leader and two
// voters, and `vault secrets enable -path=secret kv-v2`.

// Node is one server of a Cluster.
type Node struct {
	ID   string // "n1", "n2", "n3"
	Addr string // "http://127.0.0.1:PORT"

	cfg    string
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

// Cluster is three running Vault nodes.
type Cluster struct {
	Nodes []*Node
	// RootToken is the initial root token.
	RootToken string

	bin  string
	dir  string
	home string
	mu   sync.Mutex
}

// StartCluster starts, initializes and unseals a three-node cluster, waits
// until all three are Raft voters, mounts KV v2 at secret/, and stops it
// when the test ends. It takes about 20 seconds.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bin := Binary(t)
	c := &Cluster{bin: bin, dir: t.TempDir()}
	c.home = filepath.Join(c.dir, "home")
	if err := os.MkdirAll(c.home, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)

	ports := make([]int, 6)
	for i := range ports {
		p, err := testlib.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	leaderAPI := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	for i := range 3 {
		n := &Node{ID: fmt.Sprintf("n%d", i+1), Addr: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i])}
		data := filepath.Join(c.dir, n.ID)
		if err := os.MkdirAll(data, 0o700); err != nil {
			t.Fatal(err)
		}
		hcl := fmt.Sprintf(`storage "raft" {
  path    = %q
  node_id = %q
  retry_join { leader_api_addr = %q }
}
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
api_addr      = %q
cluster_addr  = "http://127.0.0.1:%d"
disable_mlock = true
`, data, n.ID, leaderAPI, ports[2*i], ports[2*i+1], n.Addr, ports[2*i+1])
		n.cfg = filepath.Join(c.dir, n.ID+".hcl")
		n.log = filepath.Join(c.dir, n.ID+".log")
		if err := os.WriteFile(n.cfg, []byte(hcl), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := c.run(n); err != nil {
			t.Fatalf("vaulttest: cluster: %v", err)
		}
		c.Nodes = append(c.Nodes, n)
	}

	var initOut struct {
		Keys      []string `json:"unseal_keys_b64"`
		RootToken string   `json:"root_token"`
	}
	out := c.cli(t, c.Nodes[0], "", "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
	if err := json.Unmarshal(out, &initOut); err != nil || len(initOut.Keys) != 1 || initOut.RootToken == "" {
		t.Fatalf("vaulttest: cluster: vault operator init said %q: %v", out, err)
	}
	c.RootToken = initOut.RootToken
	for i, n := range c.Nodes {
		if i > 0 {
			time.Sleep(2 * time.Second)
		}
		c.cli(t, n, "", "operator", "unseal", initOut.Keys[0])
	}
	c.waitVoters(t, 60*time.Second)
	c.cli(t, c.Leader(t, 30*time.Second), c.RootToken, "secrets", "enable", "-path="+KVMount, "kv-v2")
	return c
}

// Addrs returns the nodes' addresses, node 1 first.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// run starts the node's process and waits until its listener answers.
func (c *Cluster) run(n *Node) error {
	logf, err := os.Create(n.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(c.bin, "server", "-config", n.cfg)
	cmd.Env = cleanEnv(c.home)
	cmd.SysProcAttr = procAttr()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", c.bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // killed at the end
	c.mu.Lock()
	n.cmd, n.exited = cmd, exited
	c.mu.Unlock()
	// Any answer will do: the node is neither initialized nor unsealed yet.
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("node %s exited at start:\n%s", n.ID, tail(n.log))
		default:
		}
		resp, err := hc.Get(n.Addr + "/v1/sys/health?uninitcode=200&sealedcode=200&standbycode=200")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s does not answer at %s:\n%s", n.ID, n.Addr, tail(n.log))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cli runs the vault command against node n, with token if not "", and
// returns its standard output. It fails the test on an error.
func (c *Cluster) cli(t testing.TB, n *Node, token string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(cleanEnv(c.home), "VAULT_ADDR="+n.Addr)
	if token != "" {
		cmd.Env = append(cmd.Env, "VAULT_TOKEN="+token)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("vaulttest: cluster: vault %s on %s: %v\n%s", args[0]+" "+args[1], n.ID, err, stderr.String())
	}
	return out
}

// Peer is one entry of `vault operator raft list-peers`.
type Peer struct {
	NodeID string `json:"node_id"`
	Leader bool   `json:"leader"`
	Voter  bool   `json:"voter"`
}

// Peers runs `vault operator raft list-peers` on node n.
func (c *Cluster) Peers(t testing.TB, n *Node) []Peer {
	t.Helper()
	var out struct {
		Data struct {
			Config struct {
				Servers []Peer `json:"servers"`
			} `json:"config"`
		} `json:"data"`
	}
	b := c.cli(t, n, c.RootToken, "operator", "raft", "list-peers", "-format=json")
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("vaulttest: cluster: list-peers said %q: %v", b, err)
	}
	return out.Data.Config.Servers
}

// waitVoters waits until list-peers shows three voters, one the leader.
func (c *Cluster) waitVoters(t testing.TB, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var peers []Peer
	for time.Now().Before(deadline) {
		leaders, voters := 0, 0
		peers = c.Peers(t, c.Nodes[0])
		for _, p := range peers {
			if p.Leader {
				leaders++
			}
			if p.Voter {
				voters++
			}
		}
		if leaders == 1 && voters == 3 && len(peers) == 3 {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("vaulttest: cluster: after %v the peers are %+v, want one leader and three voters", d, peers)
}

// Leader waits up to d for a live node to name the active node, and
// returns it.
func (c *Cluster) Leader(t testing.TB, d time.Duration) *Node {
	t.Helper()
	deadline := time.Now().Add(d)
	var lastErr error
	for time.Now().Before(deadline) {
		for _, n := range c.Live() {
			addr, err := leaderOf(n.Addr)
			if err != nil {
				lastErr = err
				continue
			}
			for _, m := range c.Live() {
				if m.Addr == addr {
					return m
				}
			}
			lastErr = fmt.Errorf("%s names %q as the leader", n.ID, addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("vaulttest: cluster: no live leader within %v: %v", d, lastErr)
	return nil
}

// leaderOf asks the node at addr for the active node's address
// (GET /v1/sys/leader needs no token).
func leaderOf(addr string) (string, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(addr + "/v1/sys/leader")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		HAEnabled     bool   `json:"ha_enabled"`
		IsSelf        bool   `json:"is_self"`
		LeaderAddress string `json:"leader_address"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", fmt.Errorf("sys/leader on %s: %w", addr, err)
	}
	if out.LeaderAddress == "" {
		return "", errors.New("sys/leader on " + addr + ": no leader")
	}
	return out.LeaderAddress, nil
}

// Live returns the nodes whose process runs.
func (c *Cluster) Live() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		select {
		case <-n.exited:
		default:
			out = append(out, n)
		}
	}
	return out
}

// Kill kills node n's process (SIGKILL: no step-down) and waits for it.
func (c *Cluster) Kill(n *Node) {
	c.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.cmd = nil
	c.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill() //nolint:errcheck // it may have exited
		<-exited
	}
}

func (c *Cluster) stop() {
	for _, n := range c.Nodes {
		c.Kill(n)
	}
}

// Admin returns a Server for the setup helpers (Put, Policy,
// CreateAppRole, SecretID...) that talks to the current leader with the
// root token. It has no process of its own: do not Stop or Restart it.
func (c *Cluster) Admin(t testing.TB) *Server {
	t.Helper()
	n := c.Leader(t, 30*time.Second)
	cl, err := NewClient(n.Addr, c.RootToken)
	if err != nil {
		t.Fatal(err)
	}
	return &Server{Addr: n.Addr, Client: cl}
}

// Logs returns the tail of each node's log, for a failing test.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "--- vault %s (%s)\n%s\n", n.ID, n.Addr, tail(n.log))
	}
	return b.String()
}
