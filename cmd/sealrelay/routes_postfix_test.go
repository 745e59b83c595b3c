package main

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/testing/peers/postfixtest"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

// Two upstreams, a and b, each knowing only its own accounts: one for
// sealrelay and one for Postfix.
var routeAccounts = map[string]map[string]string{
	"a": {"sr-a@up.test": "sr-a-Pa55word", "pf-a@up.test": "pf-a-Pa55word"},
	"b": {"sr-b@up.test": "sr-b-Pa55word", "pf-b@up.test": "pf-b-Pa55word"},
}

// routeTable is the routes, in sealrelay's form: the sales senders' mail
// goes to a, everything else to b. Postfix's transport(5) entries win
// over its sender-dependent relayhosts, so the recipient domain route
// comes first: mail from sales to a partner goes to b. Were either kind
// of route ignored, or the order not kept, some recipient would reach the
// other upstream.
const routeTable = `
[[route]]
name = "partners"
recipient_domains = ["partner.example", ".partner.example"]
relays = ["b"]

[[route]]
name = "sales"
senders = ["@sales.example.com", "ceo@example.com", "<>"]
relays = ["a"]

[[route]]
name = "default"
relays = ["b"]
`

// postfixMaps are the same routes as Postfix's maps, with the upstreams'
// ports filled in: transport_maps, sender_dependent_relayhost_maps (the
// relayhost is b), and a password per next hop.
func postfixMaps(pa, pb string) (transport, senders, passwords string) {
	a, b := "[127.0.0.1]:"+pa, "[127.0.0.1]:"+pb
	transport = "partner.example smtp:" + b + "\n.partner.example smtp:" + b + "\n"
	senders = "@sales.example.com " + a + "\nceo@example.com " + a + "\n<> " + a + "\n"
	passwords = a + " pf-a@up.test:" + routeAccounts["a"]["pf-a@up.test"] + "\n" +
		b + " pf-b@up.test:" + routeAccounts["b"]["pf-b@up.test"] + "\n"
	return
}

type envelope struct {
	id    string
	from  string
	rcpts []string
}

// routeEnvelopes are n envelopes from a fixed seed: senders that hit and
// miss each sender pattern (case, subdomains, the null sender), and one to
// three recipients in domains that hit and miss the domain patterns.
func routeEnvelopes(n int) []envelope {
	senders := []string{"alice@example.com", "ceo@example.com", "CEO@Example.COM", "bob@sales.example.com", "eve@SALES.example.com",
		"x@sub.sales.example.com", "", "carol@other.example", "ceo@example.com.evil"}
	domains := []string{"partner.example", "sub.partner.example", "PARTNER.example", "example.net", "notpartner.example", "partner.example.org", "other.example"}
	rnd := rand.New(rand.NewPCG(13, 2026))
	var out []envelope
	for i := range n {
		e := envelope{id: fmt.Sprintf("<route-%d@test>", i), from: senders[rnd.IntN(len(senders))]}
		for k := range 1 + rnd.IntN(3) {
			e.rcpts = append(e.rcpts, fmt.Sprintf("u%d-%d@%s", i, k, domains[rnd.IntN(len(domains))]))
		}
		out = append(out, e)
	}
	return out
}

func submitEnvelope(addr string, e envelope) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	msg := "From: sender@client.test\r\nTo: " + strings.Join(e.rcpts, ", ") + "\r\nSubject: routes\r\nMessage-ID: " + e.id + "\r\n\r\nrouted\r\n"
	if err := c.SendMail(e.from, e.rcpts, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// writeRouteCredentials seals cred-a and cred-b (sealrelay's accounts at
// a and b) to a fresh server key in dir.
func writeRouteCredentials(t *testing.T, dir string) {
	t.Helper()
	pub, err := keys.WriteNew(filepath.Join(dir, "identity.txt"), false)
	if err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(dir, "recipients.txt")
	writeTestFile(t, rec, "# route test server\n"+pub+"\n")
	rl, err := keys.LoadRecipients(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := agefile.Write(filepath.Join(dir, "credentials.age"), []secrets.Credential{
		secrets.NewCredential("cred-a", "sr-a@up.test", routeAccounts["a"]["sr-a@up.test"], ""),
		secrets.NewCredential("cred-b", "sr-b@up.test", routeAccounts["b"]["sr-b@up.test"], ""),
	}, rl); err != nil {
		t.Fatal(err)
	}
}

// TestRoutesMatchPostfix: the same 50 envelopes through sealrelay with a
// route table and through Postfix with the equivalent
// sender_dependent_relayhost_maps and transport_maps: for every
// recipient, sealrelay chose the upstream Postfix chose (read from
// Postfix's log, relay=); each upstream got only its routes' recipients,
// from sealrelay on sessions authenticated with that upstream's own
// credential, every recipient exactly once.
func TestRoutesMatchPostfix(t *testing.T) {
	if err := postfixtest.Available(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ups := map[string]*upstream.Server{}
	ups["a"] = startUpstream(t, dir, upstream.Config{Accounts: routeAccounts["a"], Behavior: upstream.Behavior{RequireAuth: true}})
	ups["b"] = startUpstream(t, t.TempDir(), upstream.Config{CA: ups["a"].CA(), Accounts: routeAccounts["b"], Behavior: upstream.Behavior{RequireAuth: true}})
	byPort := map[string]string{}
	for name, u := range ups {
		_, port, _ := strings.Cut(u.Addr(), ":")
		byPort[port] = name
	}

	writeRouteCredentials(t, dir)
	cfg := filepath.Join(dir, "sealrelay.toml")
	relay := func(name string) string {
		return fmt.Sprintf("[[relay]]\nname = %q\naddress = %q\ncredential = \"cred-%s\"\nca_file = \"upstream-ca.pem\"\nserver_name = \"localhost\"\n", name, ups[name].Addr(), name)
	}
	writeTestFile(t, cfg, "hostname = \"agent.test\"\ndata_dir = \"data\"\n[listen]\naddress = \"127.0.0.1:0\"\n"+relay("a")+relay("b")+routeTable+
		"[credentials]\nidentity = \"identity.txt\"\nfile = \"credentials.age\"\n[queue]\nmin_backoff = \"200ms\"\nmax_backoff = \"1s\"\n")
	a := startAgent(t, cfg)

	mapDir, err := os.MkdirTemp("", "sealrelay-routes-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(mapDir) })
	os.Chmod(mapDir, 0o755) //nolint:errcheck // Postfix says if it cannot read
	_, pa, _ := strings.Cut(ups["a"].Addr(), ":")
	_, pb, _ := strings.Cut(ups["b"].Addr(), ":")
	transport, senders, passwords := postfixMaps(pa, pb)
	mapFile := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(mapDir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return "texthash:" + p
	}
	pf, err := postfixtest.Start(postfixtest.Config{
		Relayhost:  ups["b"].Addr(),
		RelayCAPEM: ups["a"].CAPEM(),
		Params: map[string]string{
			"transport_maps":                       mapFile("transport", transport, 0o644),
			"sender_dependent_relayhost_maps":      mapFile("sender_relay", senders, 0o644),
			"smtp_sender_dependent_authentication": "yes",
			"smtp_sasl_auth_enable":                "yes",
			"smtp_sasl_password_maps":              mapFile("sasl_passwd", passwords, 0o600),
			"smtp_sasl_security_options":           "noanonymous",
			"smtp_sasl_tls_security_options":       "noanonymous",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfix log:\n%s", pf.Log())
		}
		pf.Stop() //nolint:errcheck // a leftover instance is logged by Stop
	})

	envs := routeEnvelopes(50)
	total := 0
	for _, e := range envs {
		total += len(e.rcpts)
		for _, addr := range []string{a.Addr().String(), pf.Addr()} {
			if err := submitEnvelope(addr, e); err != nil {
				t.Fatalf("submit %s to %s: %v", e.id, addr, err)
			}
		}
	}

	// Postfix's choice: relay= on each status=sent line, by Message-ID.
	sent := regexp.MustCompile(`postfix-\S+/smtp\[\d+\]: (\w+): to=<([^>]+)>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:(\d+), .* status=sent`)
	msgID := regexp.MustCompile(`(\w+): message-id=(<[^>]+>)`)
	postfixChose := map[string]string{}
	waitFor(t, 90*time.Second, "Postfix to send every recipient", func() bool {
		log := pf.Log()
		ids := map[string]string{}
		for _, m := range msgID.FindAllStringSubmatch(log, -1) {
			ids[m[1]] = m[2]
		}
		postfixChose = map[string]string{}
		for _, m := range sent.FindAllStringSubmatch(log, -1) {
			postfixChose[ids[m[1]]+" "+strings.ToLower(m[2])] = byPort[m[3]]
		}
		return len(postfixChose) == total
	})

	// sealrelay's choice: where each recipient arrived with an sr- login.
	sealrelayChose := map[string]string{}
	waitFor(t, 60*time.Second, "sealrelay to deliver every recipient", func() bool {
		n := 0
		for _, u := range ups {
			for _, m := range u.Messages() {
				if strings.HasPrefix(m.Username, "sr-") {
					n += len(m.To)
				}
			}
		}
		return n >= total
	})
	counts := map[string]int{}
	for name, u := range ups {
		for _, m := range u.Messages() {
			login, _, _ := strings.Cut(m.Username, "@")
			if login != "sr-"+name && login != "pf-"+name {
				t.Errorf("upstream %s got %s on a session authenticated as %q", name, m.MessageID, m.Username)
			}
			if login != "sr-"+name {
				continue
			}
			for _, r := range m.To {
				key := m.MessageID + " " + strings.ToLower(r)
				if prev, dup := sealrelayChose[key]; dup {
					t.Errorf("%s reached upstreams %s and %s", key, prev, name)
				}
				sealrelayChose[key] = name
				counts[name]++
			}
		}
	}
	if len(sealrelayChose) != total {
		t.Errorf("sealrelay delivered %d recipients, want %d", len(sealrelayChose), total)
	}
	mismatch := 0
	for _, k := range slices.Sorted(maps.Keys(postfixChose)) {
		if sealrelayChose[k] != postfixChose[k] {
			mismatch++
			t.Errorf("%s: sealrelay chose upstream %q, Postfix %q", k, sealrelayChose[k], postfixChose[k])
		}
	}
	if counts["a"] == 0 || counts["b"] == 0 {
		t.Errorf("recipients per upstream %v: the envelopes do not exercise both", counts)
	}
	t.Logf("%d envelopes, %d recipients: upstream a %d, b %d; %d differ from Postfix", len(envs), total, counts["a"], counts["b"], mismatch)
}
