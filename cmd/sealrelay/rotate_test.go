package main

import (
	"os"
	"strings"
	"testing"
	"time"
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
