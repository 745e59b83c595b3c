package interop

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/internal/testing/peers/postfixtest"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

// These tests put sealrelay next to Postfix from Debian. They need root and
// the postfix and sasl2-bin packages; without them they fail (make test
// installs both with tools/deps.sh), they do not skip.

const (
	// The account sealrelay has at its relay host.
	relayUser = "relay@example.test"
	relayPass = "interop-Pa55word-never-logged"
	// The account the internal upstream knows (Postfix-as-client test).
	upUser = "agent@upstream.test"
	upPass = "upstream-Pa55word-never-logged"
)

func needPostfix(t *testing.T) {
	t.Helper()
	if err := postfixtest.Available(); err != nil {
		t.Fatal(err)
	}
}

// inProcess is an agent built as `sealrelay serve` builds it, running in
// the test process so that the test can look at its queue.
type inProcess struct {
	*agent.Agent
	logs *syncBuffer
}

func startAgent(t *testing.T, cfgFile string) *inProcess {
	t.Helper()
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	id, err := keys.Load(cfg.Credentials.Identity)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, stop, err := rig.StartAgent(context.Background(), cfg, agefile.NewSource(cfg.Credentials.File, id), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("agent stopped with: %v", err)
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	return &inProcess{Agent: a, logs: logs}
}

// send submits one message over plain SMTP and returns the transaction's
// error (nil is a 250).
func send(addr string, to []string, msg string) error {
	return rig.Send(addr, "app.test", "app@client.test", to, msg)
}

func message(msgID, body string) string {
	return "From: app@client.test\r\nTo: user@example.net\r\nSubject: interop\r\nMessage-ID: " + msgID + "\r\n\r\n" + body
}

// TestPostfixClientRelaysIntoSealrelay: Postfix as an application server's
// MTA relays through sealrelay (the built binary, with an age-sealed
// credential), which delivers to an upstream that demands STARTTLS and
// AUTH. Every message arrives, authenticated, with its body intact
// (dot-stuffing and long bodies survive both hops).
func TestPostfixClientRelaysIntoSealrelay(t *testing.T) {
	needPostfix(t)
	dir := t.TempDir()
	up := testlib.StartUpstream(t, upstream.Config{Accounts: map[string]string{upUser: upPass},
		Behavior: upstream.Behavior{RequireAuth: true}})
	setup, err := rig.WriteSetup(dir, rig.Options{Relay: up.Addr(), User: upUser, Password: upPass, CAPEM: up.CAPEM(), Queue: rig.QuickQueue})
	if err != nil {
		t.Fatal(err)
	}
	bin, err := rig.BuildBinary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	agentLog := &syncBuffer{}
	sr, err := rig.StartProcess(bin, setup.Config, agentLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sr.Stop(ctx); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("sealrelay log:\n%s", agentLog.String())
		}
	})
	pf := postfixtest.StartT(t, postfixtest.Config{Relayhost: sr.Addr()})

	var big strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&big, ".line %04d: a leading dot that both hops must stuff and unstuff\r\n", i)
	}
	big.WriteString(".\r\n..\r\nend\r\n")
	msgs := []struct {
		id, body string
		to       []string
	}{
		{"<small@interop>", "Hello through Postfix and sealrelay.\r\n", []string{"user@example.net"}},
		{"<two-rcpts@interop>", "Two recipients.\r\n", []string{"a@example.net", "b@example.org"}},
		{"<big@interop>", big.String(), []string{"user@example.net"}},
	}
	for _, m := range msgs {
		if err := send(pf.Addr(), m.to, message(m.id, m.body)); err != nil {
			t.Fatalf("submitting %s to Postfix: %v", m.id, err)
		}
	}
	if err := up.WaitMessages(len(msgs), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	got := map[string]upstream.Message{}
	for _, m := range up.Messages() {
		got[m.MessageID] = m
	}
	for _, m := range msgs {
		g, ok := got[m.id]
		if !ok {
			t.Fatalf("upstream lacks %s; it has %d messages", m.id, len(got))
		}
		if g.Username != upUser || !g.TLS {
			t.Errorf("%s reached the upstream as user %q, TLS %v; want %s over TLS", m.id, g.Username, g.TLS, upUser)
		}
		if strings.Join(g.To, ",") != strings.Join(m.to, ",") {
			t.Errorf("%s reached the upstream for %v, want %v", m.id, g.To, m.to)
		}
		_, body, _ := bytes.Cut(g.Data, []byte("\r\n\r\n"))
		if string(body) != m.body {
			t.Errorf("%s: body changed on the way (%d bytes, want %d)", m.id, len(body), len(m.body))
		}
	}
	for _, s := range up.Sessions() {
		if s.UnauthenticatedMail() {
			t.Errorf("upstream session %d saw MAIL before AUTH", s.ID)
		}
	}
	// Postfix saw sealrelay accept each one.
	testlib.WaitFor(t, 10*time.Second, "Postfix to log three status=sent", func() bool {
		return strings.Count(pf.Log(), "status=sent") >= 4 // two-rcpts logs one line per recipient
	})
	for _, secret := range []string{upPass} {
		if strings.Contains(agentLog.String(), secret) || strings.Contains(pf.Log(), secret) {
			t.Fatal("the relay password is in a log")
		}
	}
}

// TestSealrelayToPostfixRelayHost: sealrelay delivers to Postfix as its
// relay host, which demands SASL AUTH (Cyrus sasldb, PLAIN/LOGIN) after
// STARTTLS and relays only for authenticated clients, under each auth
// policy. Postfix relays what it accepts to an internal upstream, where
// the test counts it.
func TestSealrelayToPostfixRelayHost(t *testing.T) {
	needPostfix(t)
	ca, err := upstream.NewCA("interop relay host CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue()
	if err != nil {
		t.Fatal(err)
	}
	final := testlib.StartUpstream(t, upstream.Config{TLS: upstream.NoTLS})
	pf := postfixtest.StartT(t, postfixtest.Config{
		Hostname:  "relayhost.test",
		Relayhost: final.Addr(),
		TLSCert:   &cert,
		SASLUsers: map[string]string{relayUser: relayPass},
	})

	// run starts an agent with the policy and password, submits one
	// message, and returns the agent, the message ID and the Postfix log
	// offset before the message.
	run := func(t *testing.T, policy, password string) (*inProcess, string, int) {
		t.Helper()
		setup, err := rig.WriteSetup(t.TempDir(), rig.Options{Relay: pf.Addr(), Auth: policy, User: relayUser, Password: password,
			CAPEM: ca.PEM(), Queue: rig.QuickQueue})
		if err != nil {
			t.Fatal(err)
		}
		a := startAgent(t, setup.Config)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("postfix log for this test:\n%s", pf.Log())
			}
		})
		offset := len(pf.Log())
		id := fmt.Sprintf("<%s.%d@interop>", policy, time.Now().UnixNano())
		if err := send(a.Addr().String(), []string{"user@example.net"}, message(id, "Policy "+policy+".\r\n")); err != nil {
			t.Fatalf("submitting to sealrelay: %v", err)
		}
		return a, id, offset
	}
	since := func(offset int) string { return pf.Log()[offset:] }

	// delivered checks that the message went through Postfix to the final
	// upstream, and that Postfix's smtpd logged a SASL PLAIN login by
	// relayUser for it.
	delivered := func(t *testing.T, a *inProcess, id string, offset int) {
		t.Helper()
		testlib.WaitFor(t, 30*time.Second, "the final upstream to receive "+id, func() bool {
			for _, m := range final.Messages() {
				if m.MessageID == id {
					return true
				}
			}
			return false
		})
		qid := postfixQueueID(t, pf, id)
		line, err := pf.WaitLog(qid+": client=", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if want := "sasl_method=PLAIN, sasl_username=" + relayUser; !strings.Contains(line, want) {
			t.Fatalf("Postfix accepted %s on %q, want %q", id, line, want)
		}
		testlib.WaitFor(t, 10*time.Second, "sealrelay's queue to empty", func() bool { return len(a.Queue().List()) == 0 })
		if st := a.Queue().Stats(); st.Delivered != 1 || st.Failed != 0 || st.Bounced != 0 {
			t.Fatalf("queue stats %+v, want 1 delivered, none failed or bounced", st)
		}
		if strings.Contains(since(offset), "NOQUEUE: reject") {
			t.Fatalf("Postfix rejected something:\n%s", since(offset))
		}
	}

	t.Run("required", func(t *testing.T) {
		a, id, offset := run(t, "required", relayPass)
		delivered(t, a, id, offset)
	})
	t.Run("enabled", func(t *testing.T) {
		a, id, offset := run(t, "enabled", relayPass)
		delivered(t, a, id, offset)
	})

	// disabled: sealrelay never sends AUTH, so Postfix refuses to relay
	// (554 5.7.1 at RCPT). That is a permanent refusal: the recipient
	// fails and the sender gets a DSN, which sealrelay sends through the
	// same relay host, which refuses it too; a DSN from <> gets no DSN,
	// so sealrelay holds it, visible in the queue, until an operator acts.
	t.Run("disabled", func(t *testing.T) {
		before := final.Count()
		a, id, offset := run(t, "disabled", relayPass)
		testlib.WaitFor(t, 30*time.Second, "the recipient to fail and the DSN to be tried", func() bool {
			st := a.Queue().Stats()
			return st.Bounced == 1 && st.Failed == 2 && st.Held == 1
		})
		if items := a.Queue().List(); len(items) != 1 || !items[0].Held || items[0].From != "" ||
			items[0].Recipients[0].Address != "app@client.test" || items[0].Recipients[0].State != spool.StateFailed {
			t.Errorf("queue %+v, want only the refused DSN to app@client.test, held", items)
		}
		log := since(offset)
		for _, want := range []string{
			"554 5.7.1 <user@example.net>: Recipient address rejected: Access denied; from=<app@client.test> to=<user@example.net>",
			"554 5.7.1 <app@client.test>: Recipient address rejected: Access denied; from=<> to=<app@client.test>",
		} {
			if !strings.Contains(log, want) {
				t.Errorf("Postfix log lacks %q", want)
			}
		}
		if strings.Contains(log, "sasl_") || strings.Contains(log, " auth=") {
			t.Errorf("sealrelay sent AUTH under auth = disabled:\n%s", log)
		}
		if st := a.Queue().Stats(); st.Delivered != 0 {
			t.Errorf("queue stats %+v, want nothing delivered", st)
		}
		if final.Count() != before {
			t.Errorf("the final upstream got %d messages, want none (%s)", final.Count()-before, id)
		}
		if !strings.Contains(a.logs.String(), "Access denied") {
			t.Errorf("sealrelay's log does not give Postfix's reason for the failure")
		}
	})

	// required with a wrong password in the sealed file: Postfix answers
	// 535; sealrelay refreshes the credential, retries once, and defers.
	// The message stays queued, is never bounced, and no MAIL is ever sent
	// on a session that did not authenticate.
	t.Run("required with a wrong password", func(t *testing.T) {
		before := final.Count()
		a, id, offset := run(t, "required", "not-the-"+relayPass)
		testlib.WaitFor(t, 30*time.Second, "two deferred attempts", func() bool {
			items := a.Queue().List()
			return len(items) == 1 && items[0].Attempts >= 2
		})
		it := a.Queue().List()[0]
		if !strings.Contains(it.LastError, "535") {
			t.Errorf("last error %q, want Postfix's 535", it.LastError)
		}
		for _, r := range it.Recipients {
			if r.State != spool.StatePending {
				t.Errorf("recipient %s is %s, want pending", r.Address, r.State)
			}
		}
		if st := a.Queue().Stats(); st.Bounced != 0 || st.Failed != 0 || st.Delivered != 0 {
			t.Errorf("queue stats %+v, want nothing delivered, failed or bounced", st)
		}
		log := since(offset)
		if n := strings.Count(log, "SASL PLAIN authentication failed"); n < 2 {
			t.Errorf("Postfix logged %d failed PLAIN logins, want at least 2:\n%s", n, log)
		}
		disconnects := regexp.MustCompile(`disconnect from \S+ (.*)`).FindAllStringSubmatch(log, -1)
		if len(disconnects) == 0 {
			t.Errorf("no session ended in the Postfix log:\n%s", log)
		}
		for _, d := range disconnects {
			if strings.Contains(d[1], "mail=") || strings.Contains(d[1], "rcpt=") {
				t.Errorf("sealrelay sent MAIL on a session that did not authenticate: %s", d[0])
			}
		}
		if strings.Contains(log, "NOQUEUE") || final.Count() != before {
			t.Errorf("a message got through or was refused (%s):\n%s", id, log)
		}
	})

	if strings.Contains(pf.Log(), relayPass) {
		t.Fatal("the relay password is in Postfix's log")
	}
}

// postfixQueueID finds the queue ID Postfix gave the message with msgID.
func postfixQueueID(t *testing.T, pf *postfixtest.Instance, msgID string) string {
	t.Helper()
	line, err := pf.WaitLog(": message-id="+msgID, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\]: ([0-9A-F]+): message-id=`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no queue ID in %q", line)
	}
	return m[1]
}

// syncBuffer is a log sink the test reads while the code writes to it.
type syncBuffer = testlib.LogBuf
