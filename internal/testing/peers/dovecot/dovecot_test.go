package dovecot

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/hydra"
	"github.com/sealrelay/sealrelay/internal/testing/peers/postfixtest"
)

const (
	relayUser = "relay@example.test"
	oldPass   = "old-Pa55-not-in-logs"
	newPass   = "new-Pa55-not-in-logs"
)

// need fails the test (it does not skip) when Dovecot or Postfix cannot
// run here, saying why, and runs it in parallel with the others.
func need(t *testing.T) {
	t.Helper()
	t.Parallel() // each test has peers of its own; most of their time is waiting
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	if err := postfixtest.Available(); err != nil {
		t.Fatal(err)
	}
}

// noSecrets fails the test if a secret is in Dovecot's or Postfix's log.
func noSecrets(t *testing.T, r *Relay, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(r.Dovecot.Log(), s) || strings.Contains(r.Postfix.Log(), s) {
			t.Errorf("a secret (%.6s...) is in a log", s)
		}
	}
}

// A relay that offers only one password mechanism offers exactly it,
// accepts the right password with it and refuses a wrong one.
func TestPasswordMechanisms(t *testing.T) {
	need(t)
	for _, mechs := range [][]string{{"PLAIN", "LOGIN"}, {"CRAM-MD5"}, {"SCRAM-SHA-256"}} {
		t.Run(strings.Join(mechs, "+"), func(t *testing.T) {
			t.Parallel()
			r := StartRelay(t, Config{Mechanisms: mechs, Users: map[string]string{relayUser: oldPass}}, postfixtest.Config{})
			_, offered := r.Dial(t)
			if !slices.Equal(offered, mechs) {
				t.Fatalf("AUTH offers %v, want exactly %v", offered, mechs)
			}
			for _, mech := range mechs {
				mustRelay(t, r, mech, relayUser, oldPass, "the right password")
				mustRefuse(t, r, mech, relayUser, "wrong-password", "a wrong password")
				mustRefuse(t, r, mech, "nobody@example.test", oldPass, "an unknown user")
			}
			noSecrets(t, r, oldPass)
		})
	}
}

// A password rotation: the new password is added beside the old one, both
// work (PLAIN and LOGIN; CRAM-MD5 only with the first, see the package
// doc), then the old one is removed and only the new one works, with
// every mechanism. No reload, no restart.
func TestPasswordRotation(t *testing.T) {
	need(t)
	r := StartRelay(t, Config{Mechanisms: []string{"PLAIN", "LOGIN", "CRAM-MD5"}, Users: map[string]string{relayUser: oldPass}}, postfixtest.Config{})
	mustRelay(t, r, "PLAIN", relayUser, oldPass, "the only password")
	mustRefuse(t, r, "PLAIN", relayUser, newPass, "a password not added yet")

	r.Dovecot.AddPassword(t, relayUser, newPass)
	if got := r.Dovecot.Passwords(relayUser); !slices.Equal(got, []string{oldPass, newPass}) {
		t.Fatalf("passwords during the rotation: %d of them, want old then new", len(got))
	}
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		mustRelay(t, r, mech, relayUser, oldPass, "the old password during the rotation")
		mustRelay(t, r, mech, relayUser, newPass, "the new password during the rotation")
	}
	mustRelay(t, r, "CRAM-MD5", relayUser, oldPass, "the first password during the rotation")
	mustRefuse(t, r, "CRAM-MD5", relayUser, newPass, "the second password (CRAM-MD5 checks only the first)")

	r.Dovecot.RemovePassword(t, relayUser, oldPass)
	for _, mech := range []string{"PLAIN", "LOGIN", "CRAM-MD5"} {
		mustRefuse(t, r, mech, relayUser, oldPass, "the removed old password")
		mustRelay(t, r, mech, relayUser, newPass, "the new password after the rotation")
	}

	// A password of the same length replaced within the same second is
	// still seen (the rig gives the file a new mtime).
	same := strings.Replace(newPass, "new", "nex", 1)
	r.Dovecot.SetPassword(t, relayUser, same)
	mustRefuse(t, r, "PLAIN", relayUser, newPass, "the replaced password")
	mustRelay(t, r, "PLAIN", relayUser, same, "the password that replaced it")
	noSecrets(t, r, oldPass, newPass, same)
}

// Bearer tokens from Hydra's client_credentials grant are accepted through
// Postfix and Dovecot (introspection) with XOAUTH2, OAUTHBEARER and PLAIN;
// so is one of a private_key_jwt client. A revoked token, a deleted
// client's token, and a token under another user name get 535.
func TestOAuth2(t *testing.T) {
	need(t)
	h := hydra.Start(t, hydra.Options{})
	r := StartRelay(t, Config{OAuth2: &OAuth2{IntrospectionURL: h.IntrospectURL, Scope: "smtp", Plain: true}}, postfixtest.Config{})
	_, offered := r.Dial(t)
	if want := []string{"PLAIN", "XOAUTH2", "OAUTHBEARER"}; !sameSet(offered, want) {
		t.Fatalf("AUTH offers %v, want %v", offered, want)
	}

	c := h.CreateClient(t, hydra.ClientSpec{})
	tok := h.Token(t, c)
	for _, mech := range []string{"XOAUTH2", "OAUTHBEARER", "PLAIN"} {
		mustRelay(t, r, mech, c.ID, tok, "a valid token")
	}
	// The client ID in upper case is the same user to Dovecot.
	mustRelay(t, r, "XOAUTH2", strings.ToUpper(c.ID), tok, "the client ID in upper case")

	jc := h.CreateClient(t, hydra.ClientSpec{AuthMethod: hydra.PrivateKeyJWT})
	jtok, err := h.RequestToken(h.TokenURL, jc)
	if err != nil {
		t.Fatal(err)
	}
	mustRelay(t, r, "XOAUTH2", jc.ID, jtok, "a private_key_jwt client's token")

	mustRefuse(t, r, "XOAUTH2", jc.ID, tok, "another client's token")
	mustRefuse(t, r, "XOAUTH2", c.ID, tok[:len(tok)-4]+"AAAA", "a token with a bad signature")

	h.Revoke(t, c, tok)
	for _, mech := range []string{"XOAUTH2", "OAUTHBEARER", "PLAIN"} {
		mustRefuse(t, r, mech, c.ID, tok, "a revoked token")
	}
	h.DeleteClient(t, jc.ID)
	mustRefuse(t, r, "XOAUTH2", jc.ID, jtok, "a deleted client's token")
	mustRefuse(t, r, "OAUTHBEARER", jc.ID, jtok, "a deleted client's token")

	if !strings.Contains(r.Dovecot.Log(), "oauth2") {
		t.Errorf("Dovecot's log says nothing about oauth2:\n%s", r.Dovecot.Log())
	}
	noSecrets(t, r, tok, jtok)
}

// An OAuth2 relay with a scope the token lacks refuses it; one whose
// introspection endpoint is gone refuses every token (535, Dovecot logs
// the failure).
func TestOAuth2Refusals(t *testing.T) {
	need(t)
	h := hydra.Start(t, hydra.Options{})
	c := h.CreateClient(t, hydra.ClientSpec{Scope: "other"})
	tok := h.Token(t, c)

	scoped := StartRelay(t, Config{OAuth2: &OAuth2{IntrospectionURL: h.IntrospectURL, Scope: "smtp"}}, postfixtest.Config{})
	mustRefuse(t, scoped, "XOAUTH2", c.ID, tok, "a token without the smtp scope")
	// A 3000-character token (a 4 KB AUTH line) reaches Dovecot whole:
	// with Postfix's default line_length_limit (2048) smtpd would cut it
	// and answer "Invalid base64 data".
	_, err := login(t, scoped, "XOAUTH2", c.ID, strings.Repeat("x", 3000))
	if err == nil || !strings.Contains(err.Error(), "535") || strings.Contains(err.Error(), "base64") {
		t.Errorf("AUTH XOAUTH2 with a 3000-character token: %v, want 535 from Dovecot, not a cut line", err)
	}

	gone := StartRelay(t, Config{OAuth2: &OAuth2{IntrospectionURL: h.AdminURL + "/no/such/endpoint"}}, postfixtest.Config{})
	mustRefuse(t, gone, "XOAUTH2", c.ID, tok, "an introspection URL that answers 404")
	if !strings.Contains(gone.Dovecot.Log(), "Introspection failed") {
		t.Errorf("Dovecot's log does not say the introspection failed:\n%s", gone.Dovecot.Log())
	}
}

// Stop stops every Dovecot process and removes the directory; Start
// refuses configs that cannot work, naming the field.
func TestStartStop(t *testing.T) {
	need(t)
	s := Start(t, Config{Users: map[string]string{relayUser: oldPass}})
	if got := s.Mechanisms(); !slices.Equal(got, []string{"PLAIN", "LOGIN"}) {
		t.Errorf("default mechanisms %v, want PLAIN LOGIN", got)
	}
	info, err := os.Stat(s.SocketPath())
	if err != nil || info.Mode()&os.ModeSocket == 0 || info.Mode().Perm() != 0o660 {
		t.Fatalf("auth socket %s: %v %v, want a socket with mode 0660", s.SocketPath(), info.Mode(), err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(time.Second):
		t.Fatal("dovecot still runs after Stop")
	}
	if _, err := os.Stat(s.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s still there after Stop: %v", s.Dir(), err)
	}

	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "needs Users or OAuth2"},
		{Config{OAuth2: &OAuth2{}}, "IntrospectionURL is required"},
		{Config{Users: map[string]string{relayUser: "a:b"}}, "holds ':'"},
		{Config{Users: map[string]string{"a b": "x"}}, `user name "a b"`},
		{Config{Users: map[string]string{relayUser: "x"}, Mechanisms: []string{"plain"}}, `mechanism "plain"`},
	} {
		if _, err := start(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("start(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}

func sameSet(a, b []string) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(s string) bool { return !slices.Contains(b, s) })
}
