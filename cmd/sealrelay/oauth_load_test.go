package main

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/hydra"
	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
)

// oauthLoad sends from senders goroutines through a, each pausing a random
// 100 ms to maxGap between messages, until stop is closed; at(d, f)
// events run f once d has passed. It returns the messages accepted and
// how many were refused.
func oauthLoad(t *testing.T, a *runningAgent, name string, senders int, maxGap, run time.Duration, events map[time.Duration]func()) (map[string]time.Time, int) {
	t.Helper()
	var (
		sent = &load{accepted: map[string]time.Time{}}
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(s), 11))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(100*time.Millisecond + time.Duration(rnd.Int64N(int64(maxGap-100*time.Millisecond)))):
				}
				id := fmt.Sprintf("<%s.%d.%d@rig>", name, s, i)
				err := send(a.Addr().String(), "app@client.test", "user@example.net", id)
				sent.mu.Lock()
				if err == nil {
					sent.accepted[id] = time.Now()
				} else {
					sent.refused++
				}
				sent.mu.Unlock()
			}
		}()
	}
	start := time.Now()
	var order []time.Duration
	for d := range events {
		order = append(order, d)
	}
	for len(order) > 0 {
		next := order[0]
		for _, d := range order {
			next = min(next, d)
		}
		time.Sleep(time.Until(start.Add(next)))
		events[next]()
		order = deleteDuration(order, next)
	}
	time.Sleep(time.Until(start.Add(run)))
	close(stop)
	wg.Wait()
	return sent.accepted, sent.refused
}

func deleteDuration(list []time.Duration, d time.Duration) []time.Duration {
	out := list[:0]
	for _, x := range list {
		if x != d {
			out = append(out, x)
		}
	}
	return out
}

// metricValue reads one sample of /metrics.
func metricValue(t *testing.T, body, name string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\d+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s", name)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestOAuth2TokenReuseUnderLoad: access tokens that live 10 s, and 60 s
// of continuous sending by three applications whose pauses often outlast
// the relay connections' idle timeout (500 ms), so that new connections,
// each authenticating with XOAUTH2, keep being made across many token
// lifetimes. Nothing is lost or bounced, and the token requests Hydra
// saw are few: a 10 s token is handed out for 5 s and refreshed in the
// background from 2.5 s on (secrets/oauth's margins), so at most one
// request per 2.5 s, whatever the number of messages or connections.
func TestOAuth2TokenReuseUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("60 s of load; not with -short")
	}
	const run = 60 * time.Second
	h, r := startOAuthPeers(t, 10*time.Second)
	c := h.CreateClient(t, hydra.ClientSpec{})
	g := newOAuthRig(t, h, r, oauthOpts{IdleTimeout: "500ms", Extra: `metrics_address = "127.0.0.1:0"`})
	g.seal(t, c, "smtp")
	a := startAgent(t, g.cfg)

	accepted, refused := oauthLoad(t, a, "reuse", 3, 1200*time.Millisecond, run, nil)
	if refused > 0 {
		t.Errorf("%d messages refused by the agent", refused)
	}
	waitRelayed(t, r.Upstream, accepted) // lost: none
	noBounces(t, a)

	tokens, st := h.TokenRequests(), a.Deliverer().Stats()
	body := scrape(t, metricsURL(t, a))
	t.Logf("%s: %d messages accepted and relayed, 0 lost, 0 bounced; %d connections authenticated (XOAUTH2), %d token requests (%d ahead of expiry per /metrics)",
		run, len(accepted), st.AuthOK, tokens, metricValue(t, body, "sealrelay_oauth2_token_refreshes_ahead_total"))
	if limit := int(run/(2500*time.Millisecond)) + 4; tokens > limit || tokens*4 > len(accepted) || uint64(tokens) >= st.AuthOK {
		t.Errorf("%d token requests for %d messages on %d authenticated connections: want at most %d, far fewer than messages, and fewer than connections",
			tokens, len(accepted), st.AuthOK, limit)
	}
	if st.AuthOK < 20 {
		t.Errorf("only %d connections authenticated: the load did not make the agent need tokens across their lifetimes", st.AuthOK)
	}
	if n := metricValue(t, body, "sealrelay_oauth2_token_requests_total"); n != tokens {
		t.Errorf("/metrics counts %d token requests, Hydra's proxy %d", n, tokens)
	}
	if n := metricValue(t, body, "sealrelay_oauth2_token_failures_total"); n != 0 {
		t.Errorf("%d failed token requests", n)
	}
}

// TestOAuth2SecretRotationUnderLoad: while two applications send, the
// client secret is rotated twice, in the sealed store (`creds set`) and
// at Hydra, which keeps one secret per client, so the old one is refused
// at once: first Hydra, then the store two seconds later; then the store
// first, then Hydra. For the age file and for Vault. Tokens live 4 s, so
// the agent needs new ones during both rotations. Nothing is lost or
// bounced; what was deferred in between goes once both sides agree.
func TestOAuth2SecretRotationUnderLoad(t *testing.T) {
	h, r := startOAuthPeers(t, 4*time.Second)
	vs := vaulttest.Start(t)
	for _, source := range []string{"age", "vault"} {
		t.Run(source, func(t *testing.T) {
			c := h.CreateClient(t, hydra.ClientSpec{})
			g := newOAuthRig(t, h, r, oauthOpts{Source: source, Vault: vs, IdleTimeout: "200ms"})
			g.seal(t, c, "smtp")
			a := startAgent(t, g.cfg)
			before := h.TokenRequests()
			stored := func(secret string) {
				sc := *c
				sc.Secret = secret
				g.seal(t, &sc, "smtp")
			}
			accepted, refused := oauthLoad(t, a, "rotate-"+source, 2, 500*time.Millisecond, 16*time.Second, map[time.Duration]func(){
				3 * time.Second:  func() { h.SetSecret(t, c, "second-Secret-"+source+"-b8e1") },
				5 * time.Second:  func() { stored("second-Secret-" + source + "-b8e1") },
				9 * time.Second:  func() { stored("third-Secret-" + source + "-41c7") },
				11 * time.Second: func() { h.SetSecret(t, c, "third-Secret-"+source+"-41c7") },
			})
			if refused > 0 {
				t.Errorf("%d messages refused by the agent", refused)
			}
			waitRelayed(t, r.Upstream, accepted)
			noBounces(t, a)
			st := a.Queue().Stats()
			t.Logf("%s: %d messages accepted and relayed, 0 lost, 0 bounced; %d attempts deferred; %d token requests; %d connections authenticated",
				source, len(accepted), st.Deferred, h.TokenRequests()-before, a.Deliverer().Stats().AuthOK)
			if _, err := h.RequestToken(h.TokenURL, &hydra.Client{ID: c.ID, Secret: "second-Secret-" + source + "-b8e1", AuthMethod: hydra.SecretPost, Scope: "smtp"}); err == nil {
				t.Error("Hydra still takes the second secret: the rotation did not revoke it")
			}
		})
	}
}
