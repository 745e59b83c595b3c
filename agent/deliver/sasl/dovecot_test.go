package sasl_test

// Real peers: Postfix with Dovecot as its SASL backend
// (internal/testing/peers/dovecot), and ORY Hydra issuing the bearer tokens
// Dovecot checks by introspection (internal/testing/peers/hydra).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gosasl "github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/deliver/sasl"
	"github.com/sealrelay/sealrelay/internal/testing/peers/dovecot"
	"github.com/sealrelay/sealrelay/internal/testing/peers/hydra"
	"github.com/sealrelay/sealrelay/internal/testing/peers/postfixtest"
	"github.com/sealrelay/sealrelay/secrets/oauth"
)

const (
	relayUser = "relay@example.test"
	goodPass  = "Good-pa55-not-in-logs"
	badPass   = "Bad-pa55-not-in-logs"
)

// need fails the test (it does not skip) when Dovecot or Postfix cannot
// run here, and runs it in parallel with the others.
func need(t *testing.T) {
	t.Helper()
	t.Parallel()
	if err := dovecot.Available(); err != nil {
		t.Fatal(err)
	}
	if err := postfixtest.Available(); err != nil {
		t.Fatal(err)
	}
}

// dial connects to the relay, says EHLO, does STARTTLS, and returns the
// client and the mechanisms AUTH offers.
func dial(t *testing.T, r *dovecot.Relay) (*smtp.Client, []string) {
	t.Helper()
	return r.Dial(t)
}

// authenticate runs AUTH with a in a fresh session and returns the session
// and the error of Client.Auth (or of Verify after it).
func authenticate(t *testing.T, r *dovecot.Relay, a gosasl.Client) (*smtp.Client, error) {
	t.Helper()
	c, _ := dial(t, r)
	if err := c.Auth(a); err != nil {
		return nil, err
	}
	if err := sasl.Verify(a); err != nil {
		return nil, err
	}
	return c, nil
}

// relayed sends one message on an authenticated session and checks that
// it came out of Postfix and that Postfix logged the session as mech.
func relayed(t *testing.T, r *dovecot.Relay, c *smtp.Client, mech, user string) {
	t.Helper()
	before := r.Upstream.Count()
	logins := r.Logins(mech, user)
	id := fmt.Sprintf("<%d.%s@sasl.test>", time.Now().UnixNano(), strings.ToLower(mech))
	msg := "From: app@client.test\r\nTo: user@example.net\r\nMessage-ID: " + id + "\r\n\r\nHello.\r\n"
	if err := c.SendMail("app@client.test", []string{"user@example.net"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("send after AUTH %s: %v", mech, err)
	}
	c.Quit() //nolint:errcheck // the message is in
	if err := r.Upstream.WaitMessages(before+1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); r.Logins(mech, user) == logins; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Postfix logged no session with sasl_method=%s, sasl_username=%s: %+v", mech, strings.ToLower(user), r.Postfix.SASLLogins())
		}
	}
}

// refused checks that err is the relay's 535 and holds none of secrets.
func refused(t *testing.T, err error, what string, secrets ...string) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 535 {
		t.Errorf("%s: %v, want the relay's 535", what, err)
	}
	noSecret(t, what, fmt.Sprintf("%v %+v", err, err), secrets...)
}

func noSecret(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%s: a secret (%.4s...) is in %q", what, s, text)
		}
	}
}

// A relay that offers only CRAM-MD5, only SCRAM-SHA-256 or only
// SCRAM-SHA-1 is chosen with its one mechanism from a list that also names
// PLAIN and LOGIN; the right password gets 235 (SCRAM: with the server's
// signature checked) and the message through, a wrong one 535. No
// password is in an error or in Postfix's or Dovecot's log.
func TestPasswordMechanismsAgainstDovecot(t *testing.T) {
	for _, mech := range []string{"CRAM-MD5", "SCRAM-SHA-256", "SCRAM-SHA-1"} {
		t.Run(mech, func(t *testing.T) {
			need(t)
			r := dovecot.StartRelay(t, dovecot.Config{Mechanisms: []string{mech}, Users: map[string]string{relayUser: goodPass}}, postfixtest.Config{})
			_, offered := dial(t, r)
			if !slices.Equal(offered, []string{mech}) {
				t.Fatalf("AUTH offers %v, want only %s", offered, mech)
			}
			chosen, err := sasl.Choose(sasl.KindPassword, []string{"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"}, offered)
			if err != nil || chosen != mech {
				t.Fatalf("Choose picked %q, %v; want %s", chosen, err, mech)
			}

			a, err := sasl.NewPasswordClient(chosen, relayUser, goodPass)
			if err != nil {
				t.Fatal(err)
			}
			c, err := authenticate(t, r, a)
			if err != nil {
				t.Fatalf("AUTH %s with the right password: %v", mech, err)
			}
			relayed(t, r, c, mech, relayUser)

			for _, tc := range []struct{ user, pass, what string }{
				{relayUser, badPass, "a wrong password"},
				{"nobody@example.test", goodPass, "an unknown user"},
			} {
				a, err := sasl.NewPasswordClient(chosen, tc.user, tc.pass)
				if err != nil {
					t.Fatal(err)
				}
				_, err = authenticate(t, r, a)
				refused(t, err, mech+" with "+tc.what, goodPass, badPass)
			}
			noSecret(t, "the logs", r.Dovecot.Log()+r.Postfix.Log(), goodPass, badPass)
		})
	}
}

// Where the relay offers every password mechanism, a configuration that
// lists PLAIN first still gets the strongest one it lists, and the relay
// logs that mechanism.
func TestStrongestConfiguredAgainstDovecot(t *testing.T) {
	need(t)
	all := []string{"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"}
	r := dovecot.StartRelay(t, dovecot.Config{Mechanisms: all, Users: map[string]string{relayUser: goodPass}}, postfixtest.Config{})
	_, offered := dial(t, r)
	for _, tc := range []struct {
		configured []string
		want       string
	}{
		{[]string{"PLAIN", "LOGIN", "SCRAM-SHA-256"}, "SCRAM-SHA-256"},
		{[]string{"LOGIN", "PLAIN", "CRAM-MD5"}, "CRAM-MD5"},
		{[]string{"LOGIN", "PLAIN"}, "LOGIN"},
	} {
		mech, err := sasl.Choose(sasl.KindPassword, tc.configured, offered)
		if err != nil || mech != tc.want {
			t.Fatalf("Choose(%v, %v) = %q, %v; want %s", tc.configured, offered, mech, err, tc.want)
		}
		a, err := sasl.NewPasswordClient(mech, relayUser, goodPass)
		if err != nil {
			t.Fatal(err)
		}
		c, err := authenticate(t, r, a)
		if err != nil {
			t.Fatalf("AUTH %s: %v", mech, err)
		}
		relayed(t, r, c, mech, relayUser)
	}
}

// Bearer tokens from Hydra: XOAUTH2 and OAUTHBEARER get 235 and the
// message through. A revoked token and a garbage token get the relay's
// error challenge, which the clients answer so that the relay ends with
// 535 (not 501), and Refusal holds the challenge's status; neither the
// error nor the refusal holds the token.
func TestBearerMechanismsAgainstDovecot(t *testing.T) {
	need(t)
	h := hydra.Start(t, hydra.Options{})
	r := dovecot.StartRelay(t, dovecot.Config{OAuth2: &dovecot.OAuth2{IntrospectionURL: h.IntrospectURL, Scope: "smtp"}}, postfixtest.Config{})
	_, offered := dial(t, r)
	if mech, err := sasl.Choose(sasl.KindOAuth2, []string{"PLAIN", "OAUTHBEARER", "XOAUTH2"}, offered); err != nil || mech != "OAUTHBEARER" {
		t.Fatalf("Choose(oauth2) among %v = %q, %v; want OAUTHBEARER", offered, mech, err)
	}
	host, portText, _ := net.SplitHostPort(r.Addr())
	port, _ := strconv.Atoi(portText)
	client := func(mech, user, token string) sasl.BearerClient {
		if mech == "XOAUTH2" {
			return sasl.NewXOAuth2Client(user, token)
		}
		return sasl.NewOAuthBearerClient(user, token, host, port)
	}

	hc := h.CreateClient(t, hydra.ClientSpec{})
	tok := h.Token(t, hc)
	for _, mech := range []string{"XOAUTH2", "OAUTHBEARER"} {
		a := client(mech, hc.ID, tok)
		c, err := authenticate(t, r, a)
		if err != nil {
			t.Fatalf("AUTH %s with a valid token: %v", mech, err)
		}
		if a.Refusal() != nil {
			t.Errorf("%s: Refusal %v after 235", mech, a.Refusal())
		}
		relayed(t, r, c, mech, hc.ID)
	}

	garbage := "garbage-" + strings.Repeat("Zm9v", 20)
	h.Revoke(t, hc, tok)
	for _, tc := range []struct{ token, what string }{{tok, "a revoked token"}, {garbage, "a garbage token"}} {
		for mech, status := range map[string]string{"XOAUTH2": "401", "OAUTHBEARER": "invalid_token"} {
			a := client(mech, hc.ID, tc.token)
			_, err := authenticate(t, r, a)
			refused(t, err, mech+" with "+tc.what, tc.token)
			ref := a.Refusal()
			if ref == nil || ref.Status != status || ref.Mechanism != mech {
				t.Errorf("%s with %s: Refusal %+v, want status %s", mech, tc.what, ref, status)
				continue
			}
			noSecret(t, mech+" refusal", fmt.Sprintf("%v %+v %#v", ref, ref, ref), tc.token)
		}
	}
	noSecret(t, "the logs", r.Dovecot.Log()+r.Postfix.Log(), tok, garbage)
}

// The two packages together, as delivery will use them: an access token
// from secrets/oauth (a private_key_jwt client of Hydra) gets 235 with
// XOAUTH2; once Hydra revoked it the relay refuses it (535, with the
// refusal), and after Invalidate the next token is fetched and accepted.
func TestOAuthTokensAgainstDovecot(t *testing.T) {
	need(t)
	h := hydra.Start(t, hydra.Options{})
	r := dovecot.StartRelay(t, dovecot.Config{OAuth2: &dovecot.OAuth2{IntrospectionURL: h.IntrospectURL, Scope: "smtp"}}, postfixtest.Config{})
	hc := h.CreateClient(t, hydra.ClientSpec{AuthMethod: hydra.PrivateKeyJWT})
	cfg := oauth.Config{TokenURL: h.TokenURL, ClientID: hc.ID, PrivateKey: oauth.NewSecret(hc.KeyPEM()), KeyID: hc.KeyID, Scopes: []string{"smtp"}}
	tk := oauth.NewTokens(oauth.Options{})
	t.Cleanup(tk.Close)

	tok, _, err := tk.Token(context.Background(), "relay", cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := authenticate(t, r, sasl.NewXOAuth2Client(hc.ID, tok))
	if err != nil {
		t.Fatalf("AUTH XOAUTH2 with the token from secrets/oauth: %v", err)
	}
	relayed(t, r, c, "XOAUTH2", hc.ID)

	h.Revoke(t, hc, tok)
	a := sasl.NewXOAuth2Client(hc.ID, tok)
	_, err = authenticate(t, r, a)
	refused(t, err, "XOAUTH2 with the revoked token", tok)
	if a.Refusal() == nil {
		t.Fatal("no refusal recorded for the revoked token")
	}
	tk.Invalidate("relay")
	fresh, _, err := tk.Token(context.Background(), "relay", cfg)
	if err != nil || fresh == tok {
		t.Fatalf("Token after Invalidate: %v (same token: %v)", err, fresh == tok)
	}
	c, err = authenticate(t, r, sasl.NewXOAuth2Client(hc.ID, fresh))
	if err != nil {
		t.Fatalf("AUTH XOAUTH2 with the fresh token: %v", err)
	}
	relayed(t, r, c, "XOAUTH2", hc.ID)
	if n := h.TokenRequests(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
	noSecret(t, "the logs", r.Dovecot.Log()+r.Postfix.Log(), tok, fresh, hc.KeyPEM())
}
