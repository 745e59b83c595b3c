package vaulttest

import (
	"context"
	"testing"
	"time"
)

// TestCluster: three voters and one leader after start; KV v2 at secret/
// answers on every node; when the leader is killed another node leads and
// both survivors still serve reads and writes.
func TestCluster(t *testing.T) {
	c := StartCluster(t)
	voters := 0
	for _, p := range c.Peers(t, c.Nodes[1]) {
		if p.Voter {
			voters++
		}
	}
	if voters != 3 {
		t.Fatalf("%d voters, want 3", voters)
	}
	c.Admin(t).PutCredential(t, "cluster/e", "u", "p1")
	read := func(addr string) (string, error) {
		cl, err := NewClient(addr, c.RootToken)
		if err != nil {
			return "", err
		}
		kv, err := cl.KVv2(KVMount).Get(context.Background(), "cluster/e")
		if err != nil {
			return "", err
		}
		return kv.Data["password"].(string), nil
	}
	for _, n := range c.Nodes {
		if p, err := read(n.Addr); err != nil || p != "p1" {
			t.Errorf("read on %s: %q, %v", n.ID, p, err)
		}
	}

	old := c.Leader(t, 10*time.Second)
	start := time.Now()
	c.Kill(old)
	next := c.Leader(t, 60*time.Second)
	t.Logf("leader %s killed; %s leads after %v", old.ID, next.ID, time.Since(start).Round(100*time.Millisecond))
	if next == old {
		t.Fatal("the killed node still leads")
	}
	c.Admin(t).PutCredential(t, "cluster/e", "u", "p2")
	for _, n := range c.Live() {
		if p, err := read(n.Addr); err != nil || p != "p2" {
			t.Errorf("read on %s after failover: %q, %v", n.ID, p, err)
		}
	}
	if _, err := read(old.Addr); err == nil {
		t.Error("the killed node still answers")
	}
}
