package maildrop

import (
	"os/user"
	"testing"
)

// TestPolicy: without -f a user sends as login@hostname; with -f, root
// and the agent's user may give any sender, others their own address or
// what a rule for them (by name, "*" or group) allows; anything else
// falls back to their own address, reported as not allowed.
func TestPolicy(t *testing.T) {
	p, err := NewPolicy("host.example", []Rule{
		{Users: []string{"www-data"}, Senders: []string{"noreply@example.com", "@apps.example.com"}},
		{Groups: []string{"mailers"}, Senders: []string{"*@lists.example.com", "<>"}},
		{Users: []string{"*"}, Senders: []string{"everyone@example.com"}},
	}, 999)
	if err != nil {
		t.Fatal(err)
	}
	root := &User{UID: 0, Name: "root", Groups: []string{"root"}}
	agent := &User{UID: 999, Name: "sealrelay"}
	www := &User{UID: 33, Name: "www-data", Groups: []string{"www-data"}}
	bob := &User{UID: 1001, Name: "bob", Groups: []string{"bob", "mailers"}}
	eve := &User{UID: 1002, Name: "eve", Groups: []string{"eve"}}
	cases := []struct {
		u     *User
		asked *string
		want  string
		ok    bool
	}{
		{eve, nil, "eve@host.example", true},
		{eve, ptr("eve"), "eve@host.example", true},
		{eve, ptr("EVE@host.example"), "EVE@host.example", true},
		{eve, ptr("ceo@example.com"), "eve@host.example", false},
		{eve, ptr(""), "eve@host.example", false},
		{eve, ptr("everyone@example.com"), "everyone@example.com", true},
		{root, ptr("ceo@example.com"), "ceo@example.com", true},
		{root, ptr(""), "", true},
		{agent, ptr("any@where.example"), "any@where.example", true},
		{www, ptr("noreply@example.com"), "noreply@example.com", true},
		{www, ptr("shop@apps.example.com"), "shop@apps.example.com", true},
		{www, ptr("shop@sub.apps.example.com"), "www-data@host.example", false},
		{bob, ptr("news@lists.example.com"), "news@lists.example.com", true},
		{bob, ptr(""), "", true},
		{bob, ptr("noreply@example.com"), "bob@host.example", false},
	}
	for _, tc := range cases {
		got, ok := p.Sender(tc.u, tc.asked)
		asked := "(none)"
		if tc.asked != nil {
			asked = *tc.asked
		}
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s asking %q: %q, %v; want %q, %v", tc.u.Name, asked, got, ok, tc.want, tc.ok)
		}
	}
	if _, err := NewPolicy("h", []Rule{{Users: []string{"*"}, Senders: []string{"bad"}}}, 0); err == nil {
		t.Error("a bad sender pattern was accepted")
	}
}

// TestLookupUser: the user database gives the name and the groups.
func TestLookupUser(t *testing.T) {
	u, err := LookupUser(0)
	if err != nil || u.Name != "root" || len(u.Groups) == 0 || u.Groups[0] != "root" {
		t.Errorf("uid 0: %+v %v", u, err)
	}
	if _, err := user.LookupId("424242"); err == nil {
		t.Skip("uid 424242 exists here")
	}
	if _, err := LookupUser(424242); err == nil {
		t.Error("a uid without a name was found")
	}
}
