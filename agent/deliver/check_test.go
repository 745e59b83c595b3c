package deliver

import (
	"context"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

func TestCheck(t *testing.T) {
	ok := startUpstream(t, upstream.Config{})
	untrusted := startUpstream(t, upstream.Config{UntrustedCert: true})
	noAuth := startUpstream(t, upstream.Config{Behavior: upstream.Behavior{NoAuth: true}})
	wrong := startUpstream(t, upstream.Config{Accounts: map[string]string{testUser: "other"}})
	dead := testlib.RefusedAddr(t)

	relay := func(name string, u *upstream.Server, policy AuthPolicy) Relay {
		r := relayTo(u, policy)
		r.Name = name
		return r
	}
	deadRelay := relay("dead", ok, AuthRequired)
	deadRelay.Address = dead
	h := newDeliverer(t, newCreds(testPass),
		relay("ok", ok, AuthRequired),
		deadRelay,
		relay("untrusted", untrusted, AuthRequired),
		relay("noauth", noAuth, AuthRequired),
		relay("wrong", wrong, AuthRequired),
		relay("enabled-noauth", noAuth, AuthEnabled),
	)
	res := h.d.Check(context.Background())
	want := []struct {
		ok   bool
		line string
	}{
		{true, "relay ok (" + ok.Addr() + "): ok, TLS 1.3, AUTH PLAIN as " + testUser},
		{false, "relay dead (" + dead + "): FAILED: TCP connect: dial tcp " + dead},
		{false, "relay untrusted (" + untrusted.Addr() + `): FAILED: TLS: certificate verification failed for "127.0.0.1": x509: certificate signed by unknown authority`},
		{false, "relay noauth (" + noAuth.Addr() + "): FAILED: AUTH: not offered by the relay"},
		{false, "relay wrong (" + wrong.Addr() + "): FAILED: AUTH: PLAIN as " + testUser + " rejected: 535 5.7.8 authentication credentials invalid (relay's text withheld); credential \"primary\" has no newer secret in its source"},
		{true, "relay enabled-noauth (" + noAuth.Addr() + "): ok, TLS 1.3, WARNING: AUTH: not offered by the relay; delivering without AUTH"},
	}
	if len(res) != len(want) {
		t.Fatalf("got %d results", len(res))
	}
	for i, w := range want {
		if res[i].OK != w.ok || !strings.HasPrefix(res[i].String(), w.line) {
			t.Errorf("result %d:\n got %v %s\nwant %v %s", i, res[i].OK, res[i], w.ok, w.line)
		}
	}
	assertNoSecrets(t, h, nil, func() []string {
		var s []string
		for _, r := range res {
			s = append(s, r.String())
		}
		return s
	}()...)

	for _, u := range []*upstream.Server{ok, untrusted, noAuth, wrong} {
		for _, s := range waitSessionsEnded(t, u, 1) {
			if s.MailIssued() {
				t.Errorf("check sent MAIL to %s: %+v", u.Addr(), s)
			}
		}
	}
	if ok.Count()+noAuth.Count()+wrong.Count() != 0 {
		t.Error("check delivered mail")
	}
}
