package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/hydra"
)

// sendAll sends one message per id and fails the test unless each was
// accepted (250); it returns the ids as waitRelayed wants them.
func sendAll(t *testing.T, a *runningAgent, ids ...string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	for _, id := range ids {
		if err := send(a.Addr().String(), "app@client.test", "user@example.net", id); err != nil {
			t.Fatalf("message %s not accepted: %v", id, err)
		}
		out[id] = time.Now()
	}
	return out
}

// waitDeferred waits until the spool counted n more deferred attempts
// than before.
func waitDeferred(t *testing.T, a *runningAgent, before uint64, n int) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%d deferred attempts", n), func() bool {
		return a.Queue().Stats().Deferred >= before+uint64(n)
	})
}

// notRelayed fails if the relay's upstream holds any of ids.
func notRelayed(t *testing.T, g *oauthRig, ids map[string]time.Time) {
	t.Helper()
	for _, m := range g.r.Upstream.Messages() {
		if _, ok := ids[m.MessageID]; ok {
			t.Errorf("%s was relayed while it should wait", m.MessageID)
		}
	}
}

// noBounces fails if the spool failed a recipient or made a DSN.
func noBounces(t *testing.T, a *runningAgent) {
	t.Helper()
	if st := a.Queue().Stats(); st.Failed != 0 || st.Bounced != 0 {
		t.Errorf("spool stats %+v: want nothing failed, no DSN", st)
	}
}

// TestOAuth2TokenEndpointDown: Hydra's token endpoint unreachable when
// the agent starts: mail is accepted and deferred (`queue list` says
// why), the failure is logged once for all the attempts, and the mail goes
// when the endpoint is back. The same again mid-run, once the token in use
// has run out (tokens live 4 s here). Deferrals are counted under the
// reason oauth2_token; nothing bounces.
func TestOAuth2TokenEndpointDown(t *testing.T) {
	h, r := startOAuthPeers(t, 4*time.Second)
	c := h.CreateClient(t, hydra.ClientSpec{})
	g := newOAuthRig(t, h, r, oauthOpts{IdleTimeout: "300ms", Extra: `metrics_address = "127.0.0.1:0"`})
	g.seal(t, c, "smtp")

	h.Down(t)
	a := startAgent(t, g.cfg)
	for round := 1; round <= 2; round++ {
		ids := sendAll(t, a, fmt.Sprintf("<down.%d.1@rig>", round), fmt.Sprintf("<down.%d.2@rig>", round), fmt.Sprintf("<down.%d.3@rig>", round))
		waitDeferred(t, a, a.Queue().Stats().Deferred, 6) // each message tried twice at least
		notRelayed(t, g, ids)
		_, out, _ := runCLI(t, "queue", "list", "-c", g.cfg)
		if want := "AUTH: not attempted: oauth2: token endpoint " + h.TokenURL + " unreachable"; !strings.Contains(out, want) {
			t.Errorf("round %d: queue list does not say %q:\n%s", round, want, out)
		}
		if n := strings.Count(a.logs.String(), "oauth2 token endpoint failing"); n != round {
			t.Errorf("round %d: the token endpoint failure was logged %d times in all, want %d (once per outage)", round, n, round)
		}
		h.Up(t)
		waitRelayed(t, r.Upstream, ids)
		if n := strings.Count(a.logs.String(), "oauth2 token endpoint answers again"); n != round {
			t.Errorf("round %d: the recovery was logged %d times in all, want %d", round, n, round)
		}
		if round == 1 {
			// Mid-run: mail flows, then the endpoint goes down; the token
			// in use is handed out for 2 s more at most.
			waitRelayed(t, r.Upstream, sendAll(t, a, "<up.1@rig>", "<up.2@rig>"))
			h.Down(t)
			time.Sleep(3 * time.Second)
		}
	}
	noBounces(t, a)
	body := scrape(t, metricsURL(t, a))
	if !regexpMatch(`sealrelay_delivery_deferrals_total\{reason="oauth2_token"\} ([1-9][0-9]*)\n`, body) ||
		!regexpMatch(`sealrelay_oauth2_token_failures_total [1-9][0-9]*\n`, body) {
		t.Errorf("/metrics does not count the deferrals and failed token requests:\n%s", grepLines(body, "oauth2"))
	}
	t.Logf("deferred attempts %d, token requests that reached Hydra %d", a.Queue().Stats().Deferred, h.TokenRequests())
}

// TestOAuth2RefusedClient: a scope Hydra does not grant the client, then
// the client deleted at Hydra (which revokes its tokens too): mail is
// deferred, never bounced, and `check` exits 1 naming the OAuth error.
// With the scope fixed in the sealed credential, the waiting mail goes.
func TestOAuth2RefusedClient(t *testing.T) {
	h, r := startOAuthPeers(t, 0)
	c := h.CreateClient(t, hydra.ClientSpec{})
	g := newOAuthRig(t, h, r, oauthOpts{IdleTimeout: "300ms"})
	g.seal(t, c, "admin")
	a := startAgent(t, g.cfg)

	check := func(what, reason string) {
		t.Helper()
		code, out, errs := runCLI(t, "check", "-c", g.cfg)
		tokenLine := "relay postfix (" + r.Addr() + "): token from " + h.TokenURL + ": FAILED: oauth2: token endpoint " + h.TokenURL + " refused the request: " + reason
		relayLine := "relay postfix (" + r.Addr() + "): FAILED: AUTH: not attempted: oauth2: token endpoint " + h.TokenURL + " refused the request: " + reason
		if code != 1 || !strings.Contains(out, tokenLine) || !strings.Contains(out, relayLine) ||
			!strings.Contains(errs, `sealrelay: check failed: 1 relay(s) with auth = "required"`) {
			t.Errorf("check with %s: exit %d\n%s%s\nwant exit 1 and lines starting\n%s\n%s", what, code, out, errs, tokenLine, relayLine)
		}
	}

	ids := sendAll(t, a, "<scope.1@rig>")
	waitDeferred(t, a, 0, 2)
	notRelayed(t, g, ids)
	check("a scope the client may not ask for", "invalid_scope")
	g.seal(t, c, "smtp")
	waitRelayed(t, r.Upstream, ids)

	h.DeleteClient(t, c.ID)
	// A pooled session that authenticated before stays usable; let the
	// relay's idle timeout (300 ms) close it, so the next message needs AUTH.
	time.Sleep(time.Second)
	before := a.Queue().Stats().Deferred
	ids = sendAll(t, a, "<deleted.1@rig>", "<deleted.2@rig>")
	waitDeferred(t, a, before, 4)
	notRelayed(t, g, ids)
	check("a deleted client", "invalid_client")
	if !strings.Contains(a.logs.String(), "relay refused the access token; retrying at once with a new one") {
		t.Error("the token of the deleted client was not refused by the relay first")
	}
	noBounces(t, a)
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
