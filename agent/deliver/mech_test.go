package deliver

// Against a real relay: Postfix with Dovecot's SASL
// (internal/testing/peers/dovecot), whose log says which mechanism a
// session used.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/peers/dovecot"
	"github.com/sealrelay/sealrelay/internal/testing/peers/postfixtest"
)

// dovecotRelay starts Postfix with Dovecot offering mechs, knowing
// testUser with testPass, and returns it with a Relay to it.
func dovecotRelay(t *testing.T, mechs ...string) (*dovecot.Relay, Relay) {
	t.Helper()
	if err := dovecot.Available(); err != nil {
		t.Fatal(err)
	}
	dr := dovecot.StartRelay(t, dovecot.Config{Mechanisms: mechs, Users: map[string]string{testUser: testPass}}, postfixtest.Config{})
	return dr, Relay{Name: "postfix", Address: dr.Addr(), Credential: "primary", RootCAs: dr.CA.Pool(), ServerName: "localhost",
		CommandTimeout: 20 * time.Second, ConnectTimeout: 5 * time.Second}
}

// lastLogin waits for Postfix to log the session of the n-th message it
// relayed, and returns that session's SASL mechanism.
func lastLogin(t *testing.T, dr *dovecot.Relay, n int) string {
	t.Helper()
	if err := dr.Upstream.WaitMessages(n, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	logins := dr.Postfix.WaitSASLLogins(n, 10*time.Second)
	if len(logins) < n {
		t.Fatalf("Postfix logged %d authenticated sessions, want %d", len(logins), n)
	}
	if l := logins[n-1]; l.Username != strings.ToLower(testUser) {
		t.Errorf("logged in as %q", l.Username)
	}
	return logins[n-1].Method
}

// TestMechanismNeverWeaker: where the relay offers every password
// mechanism, under auth = enabled, the strongest one configured is used
// whatever the configured order; each delivery is a new connection.
func TestMechanismNeverWeaker(t *testing.T) {
	dr, base := dovecotRelay(t, "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256")
	for i, tc := range []struct {
		configured []string
		want       string
	}{
		{[]string{"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"}, "SCRAM-SHA-256"},
		{[]string{"LOGIN", "SCRAM-SHA-1", "PLAIN"}, "SCRAM-SHA-1"},
		{[]string{"PLAIN", "CRAM-MD5"}, "CRAM-MD5"},
		{[]string{"LOGIN", "PLAIN"}, "LOGIN"},
	} {
		r := base
		r.Auth, r.Mechanisms = AuthEnabled, tc.configured
		h := newDeliverer(t, newCreds(testPass), r)
		if res := h.d.Deliver(context.Background(), message("user@example.net")); statuses(res) != "delivered" {
			t.Fatalf("%v: %+v", tc.configured, res)
		}
		if got := lastLogin(t, dr, i+1); got != tc.want {
			t.Errorf("configured %v: the relay logged %s, want %s", tc.configured, got, tc.want)
		}
		if st := h.d.Stats(); st.AuthFallbacks != 0 || st.AuthOK != 1 {
			t.Errorf("configured %v: stats %+v", tc.configured, st)
		}
		h.d.Close()
	}
	assertNoSecrets(t, harness{logs: &syncBuffer{}}, nil, dr.Postfix.Log(), dr.Dovecot.Log())
}

// TestCRAMMD5OnlyRelay: a relay that offers only CRAM-MD5 gets mail when
// CRAM-MD5 is configured; with PLAIN and LOGIN only, the delivery is
// deferred and the error says what each side has; a wrong password is
// deferred with the relay's 535 (its text withheld).
func TestCRAMMD5OnlyRelay(t *testing.T) {
	dr, r := dovecotRelay(t, "CRAM-MD5")
	r.Mechanisms = []string{"PLAIN", "LOGIN", "CRAM-MD5"}
	h := newDeliverer(t, newCreds(testPass), r)
	if res := h.d.Deliver(context.Background(), message("user@example.net")); statuses(res) != "delivered" {
		t.Fatalf("%+v", res)
	}
	if got := lastLogin(t, dr, 1); got != "CRAM-MD5" {
		t.Errorf("the relay logged %s", got)
	}

	for _, tc := range []struct {
		mechs []string
		pass  string
		want  string
	}{
		{[]string{"PLAIN", "LOGIN"}, testPass, "AUTH: no mechanism in common: the relay offers CRAM-MD5; configured for a password credential: PLAIN, LOGIN"},
		{[]string{"CRAM-MD5"}, newPass, "AUTH: CRAM-MD5 as " + testUser + " rejected: 535 5.7.8 authentication credentials invalid (relay's text withheld); credential \"primary\" has no newer secret in its source"},
	} {
		r := r
		r.Mechanisms = tc.mechs
		h := newDeliverer(t, newCreds(tc.pass), r)
		res := h.d.Deliver(context.Background(), message("user@example.net"))
		if res[0].Status != spool.Temporary || res[0].Reason != ReasonAuth || !strings.Contains(res[0].Err.Error(), tc.want) {
			t.Errorf("%v: %+v: %v\nwant Temporary, reason auth, %q", tc.mechs, res[0], res[0].Err, tc.want)
		}
		assertNoSecrets(t, h, res)
	}
	if n := dr.Upstream.Count(); n != 1 {
		t.Errorf("the upstream got %d messages, want 1", n)
	}
}
