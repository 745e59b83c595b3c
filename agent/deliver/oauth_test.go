package deliver

// OAuth2 delivery against real peers: ORY Hydra issues the access tokens
// (internal/testing/peers/hydra), and Postfix with Dovecot's oauth2 passdb
// checks them by introspection at Hydra (internal/testing/peers/dovecot).

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/peers/dovecot"
	"github.com/sealrelay/sealrelay/internal/testing/peers/hydra"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/oauth"
)

// oauthRig is Hydra, and Postfix with Dovecot accepting Hydra's tokens
// that carry the scope smtp.
type oauthRig struct {
	h *hydra.Server
	r *dovecot.Relay
}

func startOAuthRig(t *testing.T, ttl time.Duration) oauthRig {
	t.Helper()
	h := hydra.Start(t, hydra.Options{AccessTokenTTL: ttl})
	return oauthRig{h: h, r: dovecot.StartOAuth2Relay(t, h.IntrospectURL)}
}

// relay is the rig's Postfix as a Relay with the given mechanisms. Its
// pooled connections are never reused: each message opens one, and
// authenticates (see TestOAuth2PooledPastExpiry for reuse).
func (o oauthRig) relay(mechs ...string) Relay {
	r := o.pooled(mechs...)
	r.IdleTimeout = time.Nanosecond
	return r
}

// pooled is relay with pooled connections reused for a minute.
func (o oauthRig) pooled(mechs ...string) Relay {
	return Relay{
		Name: "postfix", Address: o.r.Addr(), Credential: "primary", RootCAs: o.r.CA.Pool(), ServerName: "localhost",
		Mechanisms: mechs, CommandTimeout: 10 * time.Second, ConnectTimeout: 5 * time.Second, IdleTimeout: time.Minute,
	}
}

// oauthCred is an oauth2 credential for Hydra's client c, asking for
// scopes; its username is the client id, which Hydra puts in the token's
// sub and Dovecot compares with the name AUTH gives.
func oauthCred(t *testing.T, h *hydra.Server, c *hydra.Client, version string, scopes ...string) secrets.Credential {
	t.Helper()
	data := map[string]any{"kind": "oauth2", "username": c.ID, "token_url": h.TokenURL, "client_id": c.ID, "scopes": scopes}
	if c.Key != nil {
		data["private_key"], data["key_id"] = c.KeyPEM(), c.KeyID
	} else {
		data["client_secret"] = c.Secret
	}
	cred, err := secrets.ParseEntry("primary", data)
	if err != nil {
		t.Fatal(err)
	}
	cred.Version = version
	return cred
}

// newOAuthDeliverer is a Deliverer using tk (nil: its own) whose log goes
// to the harness.
func newOAuthDeliverer(t *testing.T, creds *fakeCreds, tk Tokens, relays ...Relay) harness {
	t.Helper()
	logs := &syncBuffer{}
	d, err := New(Options{Hostname: "agent.test", Relays: relays, Credentials: creds, Tokens: tk,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return harness{d: d, creds: creds, logs: logs}
}

// deliverOne delivers one message and returns its one result.
func deliverOne(h harness) spool.RcptResult {
	return h.d.Deliver(context.Background(), message("user@example.net"))[0]
}

// wantDeferred checks that res is a Temporary result with reason and
// an error that says each of says.
func wantDeferred(t *testing.T, what string, res spool.RcptResult, reason string, says ...string) {
	t.Helper()
	if res.Status != spool.Temporary || res.Reason != reason {
		t.Errorf("%s: %s (reason %q): %v; want Temporary with reason %q", what, res.Status, res.Reason, res.Err, reason)
	}
	for _, s := range says {
		if res.Err == nil || !strings.Contains(res.Err.Error(), s) {
			t.Errorf("%s: error %v, want it to say %q", what, res.Err, s)
		}
	}
}

// noTokenIn fails if any of tokens is in the logs or the result errors.
func noTokenIn(t *testing.T, h harness, res []spool.RcptResult, secretValues ...string) {
	t.Helper()
	text := h.logs.String()
	for _, r := range res {
		if r.Err != nil {
			text += r.Err.Error() + fmt.Sprintf("%+v", r.Err)
		}
	}
	for _, s := range secretValues {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("a secret (%.6s...) is in the log or an error", s)
		}
	}
}

// XOAUTH2 and OAUTHBEARER each chosen from the relay's mechanisms, with a
// client secret and with private_key_jwt: the message is delivered on a
// session Postfix logged with that mechanism, one token serves several
// connections, and Check reports the token step (endpoint, grant, scopes,
// expiry, never the token) and the AUTH. A relay that lists only password
// mechanisms gets no token request and a deferral that says why.
func TestOAuth2DeliveryAgainstDovecot(t *testing.T) {
	o := startOAuthRig(t, 0)
	secretClient := o.h.CreateClient(t, hydra.ClientSpec{})
	keyClient := o.h.CreateClient(t, hydra.ClientSpec{AuthMethod: hydra.PrivateKeyJWT})
	for _, tc := range []struct {
		mechs  []string
		client *hydra.Client
		want   string
	}{
		{[]string{"XOAUTH2", "OAUTHBEARER"}, secretClient, "XOAUTH2"},
		{[]string{"PLAIN", "OAUTHBEARER", "XOAUTH2"}, secretClient, "OAUTHBEARER"},
		{[]string{"XOAUTH2"}, keyClient, "XOAUTH2"},
		{[]string{"OAUTHBEARER"}, keyClient, "OAUTHBEARER"},
	} {
		t.Run(tc.want+"/"+tc.client.AuthMethod, func(t *testing.T) {
			before := o.h.TokenRequests()
			logins := o.r.Postfix.SASLLogins()
			tk := oauth.NewTokens(oauth.Options{})
			t.Cleanup(tk.Close)
			h := newOAuthDeliverer(t, &fakeCreds{cur: oauthCred(t, o.h, tc.client, "v1", "smtp")}, tk, o.relay(tc.mechs...))
			msgs := o.r.Upstream.Count()
			var all []spool.RcptResult
			for range 3 {
				res := deliverOne(h)
				all = append(all, res)
				if res.Status != spool.Delivered {
					t.Fatalf("delivery: %s %v", res.Status, res.Err)
				}
			}
			if err := o.r.Upstream.WaitMessages(msgs+3, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := waitLogins(o.r, len(logins)+3, tc.want, tc.client.ID); err != nil {
				t.Fatal(err)
			}
			if n := o.h.TokenRequests() - before; n != 1 {
				t.Errorf("%d token requests for 3 connections, want 1", n)
			}
			chk := h.d.Check(context.Background())[0]
			tok := chk.Token
			if !chk.OK || chk.Mechanism != tc.want || tok == nil || tok.Err != nil {
				t.Fatalf("Check: %s; token %v", chk, tok)
			}
			line := tok.String()
			if !strings.HasPrefix(line, "token from "+o.h.TokenURL+": ok (client_credentials, scopes smtp, expires ") {
				t.Errorf("token line %q", line)
			}
			if want := "ok, TLS 1.3, AUTH " + tc.want + " as " + tc.client.ID; !strings.HasSuffix(chk.String(), want) {
				t.Errorf("check line %q, want it to end %q", chk, want)
			}
			cur, _, _ := tk.Token(context.Background(), "primary", mustOAuth2(t, h.creds.cur))
			noTokenIn(t, h, all, cur, tc.client.Secret, line+chk.String())
		})
	}

	t.Run("password mechanisms only", func(t *testing.T) {
		before := o.h.TokenRequests()
		h := newOAuthDeliverer(t, &fakeCreds{cur: oauthCred(t, o.h, secretClient, "v1", "smtp")}, nil, o.relay("PLAIN", "LOGIN"))
		wantDeferred(t, "PLAIN, LOGIN for an oauth2 credential", deliverOne(h), ReasonAuth,
			"no mechanism in common: none of the configured mechanisms (PLAIN, LOGIN) takes a credential of kind oauth2 (OAUTHBEARER, XOAUTH2 do)")
		if n := o.h.TokenRequests() - before; n != 0 {
			t.Errorf("%d token requests, want none", n)
		}
	})
}

func mustOAuth2(t *testing.T, c secrets.Credential) oauth.Config {
	t.Helper()
	cfg, err := c.OAuth2()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// waitLogins waits until Postfix logged n sessions in all, the last ones
// with mech as user.
func waitLogins(r *dovecot.Relay, n int, mech, user string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		l := r.Postfix.SASLLogins()
		if len(l) >= n && l[len(l)-1].Method == mech && l[len(l)-1].Username == strings.ToLower(user) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Postfix logged %+v, want %d logins, the last with sasl_method=%s as %s", l, n, mech, user)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Faults, one at a time, none of which bounces: a token the relay
// refuses (revoked at Hydra) is dropped and a new one tried at once; the
// token endpoint down defers with the reason, logged once for many
// messages, and mail flows when it is back; a scope Hydra refuses, a
// scope the relay refuses, and a deleted client all defer, and Check
// names why.
func TestOAuth2FaultsAgainstDovecot(t *testing.T) {
	o := startOAuthRig(t, 0)

	t.Run("revoked token", func(t *testing.T) {
		c := o.h.CreateClient(t, hydra.ClientSpec{})
		tk := oauth.NewTokens(oauth.Options{})
		t.Cleanup(tk.Close)
		creds := &fakeCreds{cur: oauthCred(t, o.h, c, "v1", "smtp")}
		h := newOAuthDeliverer(t, creds, tk, o.relay("XOAUTH2"))
		if res := deliverOne(h); res.Status != spool.Delivered {
			t.Fatalf("first delivery: %s %v", res.Status, res.Err)
		}
		old, _, _ := tk.Token(context.Background(), "primary", mustOAuth2(t, creds.cur))
		o.h.Revoke(t, c, old)
		before := o.h.TokenRequests()
		res := deliverOne(h)
		if res.Status != spool.Delivered {
			t.Fatalf("delivery with the revoked token cached: %s %v; want delivered with a new token", res.Status, res.Err)
		}
		if st := h.d.Stats(); st.AuthRetries != 1 || st.AuthFailures != 1 || o.h.TokenRequests()-before != 1 {
			t.Errorf("stats %+v, %d token requests; want 1 retry after 1 refusal, with 1 new token", st, o.h.TokenRequests()-before)
		}
		if !strings.Contains(h.logs.String(), `relay refused the access token; retrying at once with a new one`) ||
			!strings.Contains(h.logs.String(), `XOAUTH2: the relay refused the token (status \"401\"`) {
			t.Errorf("log:\n%s", h.logs)
		}
		fresh, _, _ := tk.Token(context.Background(), "primary", mustOAuth2(t, creds.cur))
		noTokenIn(t, h, []spool.RcptResult{res}, old, fresh, c.Secret)
	})

	t.Run("token endpoint down", func(t *testing.T) {
		c := o.h.CreateClient(t, hydra.ClientSpec{})
		h := newOAuthDeliverer(t, &fakeCreds{cur: oauthCred(t, o.h, c, "v1", "smtp")}, nil, o.relay("XOAUTH2"))
		o.h.Down(t)
		for i := range 4 {
			wantDeferred(t, fmt.Sprintf("message %d, endpoint down", i), deliverOne(h), ReasonToken,
				"AUTH: not attempted: oauth2: token endpoint "+o.h.TokenURL+" unreachable", "connection refused")
			time.Sleep(oauth.FailHold) // each message asks the endpoint again
		}
		if n := strings.Count(h.logs.String(), "oauth2 token endpoint failing"); n != 1 {
			t.Errorf("the failure was logged %d times for 4 messages, want once:\n%s", n, h.logs)
		}
		o.h.Up(t)
		if res := deliverOne(h); res.Status != spool.Delivered {
			t.Fatalf("delivery after the endpoint came back: %s %v", res.Status, res.Err)
		}
		if !strings.Contains(h.logs.String(), "oauth2 token endpoint answers again") {
			t.Errorf("no recovery logged:\n%s", h.logs)
		}
	})

	t.Run("scope refused by Hydra", func(t *testing.T) {
		c := o.h.CreateClient(t, hydra.ClientSpec{})
		h := newOAuthDeliverer(t, &fakeCreds{cur: oauthCred(t, o.h, c, "v1", "admin")}, nil, o.relay("XOAUTH2"))
		wantDeferred(t, "a scope the client may not ask for", deliverOne(h), ReasonToken,
			"refused the request: invalid_scope")
		chk := h.d.Check(context.Background())[0]
		if chk.OK || chk.Token == nil || !strings.Contains(chk.Token.String(), "token from "+o.h.TokenURL+": FAILED: oauth2: token endpoint "+o.h.TokenURL+" refused the request: invalid_scope") {
			t.Errorf("Check: %s; token %v", chk, chk.Token)
		}
	})

	t.Run("scope refused by the relay", func(t *testing.T) {
		c := o.h.CreateClient(t, hydra.ClientSpec{Scope: "smtp imap"})
		before := o.h.TokenRequests()
		h := newOAuthDeliverer(t, &fakeCreds{cur: oauthCred(t, o.h, c, "v1", "imap")}, nil, o.relay("OAUTHBEARER"))
		wantDeferred(t, "a token without the relay's scope", deliverOne(h), ReasonAuth,
			"OAUTHBEARER as "+c.ID+" rejected: 535 5.7.8 authentication credentials invalid (relay's text withheld); OAUTHBEARER: the relay refused the token (status \"invalid_token\") (with a new access token)")
		if n := o.h.TokenRequests() - before; n != 2 {
			t.Errorf("%d token requests, want 2 (the refused token, and one new one)", n)
		}
		chk := h.d.Check(context.Background())[0]
		if chk.OK || chk.Token == nil || chk.Token.Err != nil || !strings.Contains(chk.String(), `FAILED: AUTH: OAUTHBEARER as `+c.ID+` rejected: 535`) {
			t.Errorf("Check: %s; token %v", chk, chk.Token)
		}
	})

	t.Run("deleted client", func(t *testing.T) {
		c := o.h.CreateClient(t, hydra.ClientSpec{})
		creds := &fakeCreds{cur: oauthCred(t, o.h, c, "v1", "smtp")}
		h := newOAuthDeliverer(t, creds, nil, o.relay("XOAUTH2"))
		if res := deliverOne(h); res.Status != spool.Delivered {
			t.Fatalf("first delivery: %s %v", res.Status, res.Err)
		}
		o.h.DeleteClient(t, c.ID)
		wantDeferred(t, "a deleted client", deliverOne(h), ReasonToken, "refused the request: invalid_client")
		if n := creds.refreshCount(); n != 1 {
			t.Errorf("the credential was refreshed %d times after invalid_client, want 1", n)
		}
		chk := h.d.Check(context.Background())[0]
		if chk.OK || chk.Token == nil || !strings.Contains(chk.String(), "FAILED: AUTH: not attempted: oauth2: token endpoint "+o.h.TokenURL+" refused the request: invalid_client") {
			t.Errorf("Check: %s; token %v", chk, chk.Token)
		}
	})
}

// A connection authenticated with a token stays in the pool after the
// token expired: the session is authenticated, not the token, until the
// relay drops it.
func TestOAuth2PooledPastExpiry(t *testing.T) {
	o := startOAuthRig(t, 3*time.Second)
	c := o.h.CreateClient(t, hydra.ClientSpec{})
	h := newOAuthDeliverer(t, &fakeCreds{cur: oauthCred(t, o.h, c, "v1", "smtp")}, nil, o.pooled("XOAUTH2"))
	if res := deliverOne(h); res.Status != spool.Delivered {
		t.Fatalf("first delivery: %s %v", res.Status, res.Err)
	}
	time.Sleep(4 * time.Second)
	if res := deliverOne(h); res.Status != spool.Delivered {
		t.Fatalf("delivery after the token expired: %s %v", res.Status, res.Err)
	}
	if st := h.d.Stats(); st.ConnectionsOpened != 1 || st.ConnectionsReused != 1 || st.AuthOK != 1 || o.h.TokenRequests() != 1 {
		t.Errorf("stats %+v, %d token requests; want one connection, reused once, one AUTH, one token", st, o.h.TokenRequests())
	}
}
