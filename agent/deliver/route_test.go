package deliver

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/secrets"
)

// namedCreds holds one credential per entry name, as a Store does.
type namedCreds struct {
	mu sync.Mutex
	m  map[string]secrets.Credential
}

func (n *namedCreds) Get(name string) (secrets.Credential, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.m[name]
	if !ok {
		return secrets.Credential{}, fmt.Errorf("no entry %q", name)
	}
	return c, nil
}

func (n *namedCreds) Refresh(_ context.Context, name string, _ secrets.Credential) (secrets.Credential, error) {
	return n.Get(name)
}

// routeRig is two upstreams, a and b, each knowing only its own account,
// and relays for them with credentials of their own.
type routeRig struct {
	a, b   *upstream.Server
	ra, rb Relay
	creds  *namedCreds
}

func newRouteRig(t *testing.T) *routeRig {
	t.Helper()
	g := &routeRig{creds: &namedCreds{m: map[string]secrets.Credential{
		"cred-a": secrets.NewCredential("cred-a", "user-a@a.test", "pass-a-123456", "1"),
		"cred-b": secrets.NewCredential("cred-b", "user-b@b.test", "pass-b-654321", "1"),
	}}}
	g.a = startUpstream(t, upstream.Config{Accounts: map[string]string{"user-a@a.test": "pass-a-123456"}, Behavior: upstream.Behavior{RequireAuth: true}})
	g.b = startUpstream(t, upstream.Config{Accounts: map[string]string{"user-b@b.test": "pass-b-654321"}, Behavior: upstream.Behavior{RequireAuth: true}})
	g.ra, g.rb = relayTo(g.a, AuthRequired), relayTo(g.b, AuthRequired)
	g.ra.Name, g.ra.Credential = "a", "cred-a"
	g.rb.Name, g.rb.Credential = "b", "cred-b"
	return g
}

func (g *routeRig) deliverer(t *testing.T, routes []Route, relays ...Relay) *Deliverer {
	t.Helper()
	if relays == nil {
		relays = []Relay{g.ra, g.rb}
	}
	d, err := New(Options{Hostname: "agent.test", Relays: relays, Routes: routes, Credentials: g.creds,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func messageFrom(from string, rcpts ...string) *spool.Delivery {
	m := message(rcpts...)
	m.From = from
	return m
}

// received lists, per message an upstream took, its sender, recipients and
// the AUTH username of its session.
func received(u *upstream.Server) []string {
	var out []string
	for _, m := range u.Messages() {
		out = append(out, fmt.Sprintf("%s %s -> %s", m.Username, m.From, strings.Join(m.To, ",")))
	}
	slices.Sort(out)
	return out
}

// TestRoutesSplitAndCredentials: a message whose recipients fall on two
// routes is split; each upstream gets only its route's recipients, on a
// session authenticated with its own credential; a sender route takes
// every recipient of its sender; the first matching route wins.
func TestRoutesSplitAndCredentials(t *testing.T) {
	g := newRouteRig(t)
	d := g.deliverer(t, []Route{
		{Name: "partners", RecipientDomains: []string{"partner.example", ".partner.example"}, Relays: []string{"b"}},
		{Name: "sales", Senders: []string{"*@sales.example.com", "ceo@example.com"}, Relays: []string{"b"}},
		{Name: "default", Relays: []string{"a"}},
	})
	cases := []*spool.Delivery{
		messageFrom("alice@example.com", "x@partner.example", "y@example.net", "z@sub.partner.example", "w@notpartner.example"),
		messageFrom("bob@sales.example.com", "y@example.net", "x@partner.example"),
		messageFrom("CEO@Example.com", "y@example.net"),
		messageFrom("", "y@example.net"),
	}
	for _, m := range cases {
		if res := d.Deliver(t.Context(), m); statuses(res) != strings.TrimSuffix(strings.Repeat("delivered,", len(m.To)), ",") {
			t.Fatalf("%s -> %v: %s %+v", m.From, m.To, statuses(res), res)
		}
	}
	wantA := []string{
		"user-a@a.test  -> y@example.net",
		"user-a@a.test alice@example.com -> y@example.net,w@notpartner.example",
	}
	wantB := []string{
		"user-b@b.test CEO@Example.com -> y@example.net",
		"user-b@b.test alice@example.com -> x@partner.example,z@sub.partner.example",
		// Two routes (partners first, then sales) on one relay: two
		// transactions, each under its own route's limits.
		"user-b@b.test bob@sales.example.com -> x@partner.example",
		"user-b@b.test bob@sales.example.com -> y@example.net",
	}
	if got := received(g.a); !slices.Equal(got, wantA) {
		t.Errorf("upstream a got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantA, "\n"))
	}
	if got := received(g.b); !slices.Equal(got, wantB) {
		t.Errorf("upstream b got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantB, "\n"))
	}
	if name, relays := d.Route("x@sales.example.com", "q@partner.example"); name != "partners" || !slices.Equal(relays, []string{"b"}) {
		t.Errorf("Route = %s %v; the first match (partners) wins", name, relays)
	}
}

// TestRouteFailover: a route's relays are tried in order; one that cannot
// be used hands the recipients to the next.
func TestRouteFailover(t *testing.T) {
	g := newRouteRig(t)
	down := g.ra
	down.Name, down.Address = "down", closedPort(t)
	d := g.deliverer(t, []Route{{Relays: []string{"down", "b"}}}, down, g.ra, g.rb)
	res := d.Deliver(t.Context(), message("y@example.net"))
	if statuses(res) != "delivered" || res[0].Relay != "b" {
		t.Fatalf("%+v", res)
	}
	if len(g.a.Messages()) != 0 {
		t.Error("relay a is in no route, yet got mail")
	}
}

func closedPort(t *testing.T) string {
	u, err := upstream.Start(upstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	addr := u.Addr()
	u.Close()
	return addr
}

// TestRecipientsPerMessage: a message with more recipients than the
// relay's (or the route's) limit goes as several transactions.
func TestRecipientsPerMessage(t *testing.T) {
	for _, tc := range []struct {
		name         string
		relay, route int
	}{{"relay limit", 2, 0}, {"route limit", 0, 2}, {"the smaller of both", 3, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRouteRig(t)
			g.ra.Limits.RecipientsPerMessage = tc.relay
			d := g.deliverer(t, []Route{{Relays: []string{"a"}, Limits: Limits{RecipientsPerMessage: tc.route}}})
			res := d.Deliver(t.Context(), message("r1@x.example", "r2@x.example", "r3@x.example", "r4@x.example", "r5@x.example"))
			if statuses(res) != "delivered,delivered,delivered,delivered,delivered" {
				t.Fatalf("%+v", res)
			}
			var sizes []int
			ids := map[string]bool{}
			for _, m := range g.a.Messages() {
				sizes = append(sizes, len(m.To))
				ids[m.MessageID] = true
			}
			if !slices.Equal(sizes, []int{2, 2, 1}) || len(ids) != 1 {
				t.Errorf("transactions of %v recipients, message IDs %v; want 2, 2, 1 of one message", sizes, ids)
			}
		})
	}
}

// TestRateLimitWaits: above a relay's or a route's message rate, the
// delivery is not attempted: its recipients get a Waiting result with a
// retry time, later ones each a slot further; nothing fails.
func TestRateLimitWaits(t *testing.T) {
	for _, tc := range []struct {
		name         string
		relay, route Limits
		by           string
	}{
		{"relay per minute", Limits{MessagesPerMinute: 6}, Limits{}, "relay a's limit of one message every 10s"},
		{"route per minute", Limits{}, Limits{MessagesPerMinute: 6}, "route slow's limit of one message every 10s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRouteRig(t)
			g.ra.Limits = tc.relay
			d := g.deliverer(t, []Route{{Name: "slow", Relays: []string{"a"}, Limits: tc.route}})
			start := time.Now()
			if res := d.Deliver(t.Context(), message("r@x.example")); statuses(res) != "delivered" {
				t.Fatalf("first message: %+v", res)
			}
			var prev time.Time
			for i := 1; i <= 3; i++ {
				res := d.Deliver(t.Context(), message("r1@x.example", "r2@x.example"))
				if statuses(res) != "waiting,waiting" {
					t.Fatalf("message %d: %s %+v", i, statuses(res), res)
				}
				at := res[0].RetryAt
				if low := start.Add(time.Duration(i) * 10 * time.Second); at.Before(low.Add(-time.Second)) || at.After(low.Add(5*time.Second)) {
					t.Errorf("message %d: retry at +%s, want about +%ds (a slot of its own)", i, at.Sub(start), i*10)
				}
				if !at.After(prev) || res[0].Relay != "a" || !strings.Contains(res[0].Err.Error(), "waiting for "+tc.by) {
					t.Errorf("message %d: %+v (previous retry %s)", i, res[0], prev)
				}
				prev = at
			}
			if n := len(g.a.Messages()); n != 1 {
				t.Errorf("the upstream got %d messages, want only the first", n)
			}
			if st := d.Stats(); st.Waiting != 6 || st.Deferred != 0 || st.Failed != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestRateLimitShortWait: a token due within a moment is waited for in
// the delivery itself rather than sent back to the queue.
func TestRateLimitShortWait(t *testing.T) {
	g := newRouteRig(t)
	g.ra.Limits.MessagesPerSecond = 20 // one every 50ms
	d := g.deliverer(t, nil, g.ra)
	for i := range 5 {
		if res := d.Deliver(t.Context(), message("r@x.example")); statuses(res) != "delivered" {
			t.Fatalf("message %d: %+v", i, res)
		}
	}
}

// TestRoutesRefused: New refuses routes it cannot follow.
func TestRoutesRefused(t *testing.T) {
	g := newRouteRig(t)
	for _, tc := range []struct {
		routes []Route
		want   string
	}{
		{[]Route{{Senders: []string{"a@b.example"}}}, "the last route must take all mail"},
		{[]Route{{Name: "x", Relays: []string{"c"}}}, `route "x": no relay is named "c"`},
		{[]Route{{Name: "x", Senders: []string{"nobody"}}, {}}, `route "x": sender "nobody" is not an address`},
		{[]Route{{Name: "x", RecipientDomains: []string{"a@b"}}, {}}, `route "x": recipient domain "a@b" is an address`},
	} {
		_, err := New(Options{Relays: []Relay{g.ra}, Routes: tc.routes, Credentials: g.creds})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("routes %+v: error %v, want %q", tc.routes, err, tc.want)
		}
	}
}
