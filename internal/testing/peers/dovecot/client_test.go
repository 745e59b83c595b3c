package dovecot

// A test's SMTP client: go-smtp with STARTTLS, go-sasl's PLAIN, LOGIN and
// OAUTHBEARER, and the mechanisms go-sasl lacks (XOAUTH2, CRAM-MD5,
// SCRAM-SHA-256), written here for the tests only.

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/xdg-go/scram"
)

// xoauth2 is the XOAUTH2 client: "user=U\x01auth=Bearer T\x01\x01". It
// answers the server's error challenge with an empty line, as the
// mechanism wants, so a refused token ends in 535.
type xoauth2 struct{ user, token string }

func (a xoauth2) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + a.user + "\x01auth=Bearer " + a.token + "\x01\x01"), nil
}

func (a xoauth2) Next([]byte) ([]byte, error) { return []byte{}, nil }

// oauthBearer is go-sasl's OAUTHBEARER client, except that it answers the
// server's error challenge with the RFC 7628 "\x01" instead of aborting
// with "*", so a refused token ends in 535 rather than 501.
type oauthBearer struct{ sasl.Client }

func newOAuthBearer(user, token string) oauthBearer {
	return oauthBearer{sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: user, Token: token, Host: "127.0.0.1"})}
}

func (a oauthBearer) Next([]byte) ([]byte, error) { return []byte{1}, nil }

// cramMD5 is the CRAM-MD5 client (RFC 2195).
type cramMD5 struct{ user, pass string }

func (a cramMD5) Start() (string, []byte, error) { return "CRAM-MD5", nil, nil }

func (a cramMD5) Next(challenge []byte) ([]byte, error) {
	m := hmac.New(md5.New, []byte(a.pass))
	m.Write(challenge)
	return []byte(a.user + " " + hex.EncodeToString(m.Sum(nil))), nil
}

// scramSHA256 is the SCRAM-SHA-256 client (RFC 7677) from xdg-go/scram.
type scramSHA256 struct{ conv *scram.ClientConversation }

func newSCRAM(user, pass string) (*scramSHA256, error) {
	c, err := scram.SHA256.NewClient(user, pass, "")
	if err != nil {
		return nil, err
	}
	return &scramSHA256{conv: c.NewConversation()}, nil
}

func (a *scramSHA256) Start() (string, []byte, error) {
	first, err := a.conv.Step("")
	return "SCRAM-SHA-256", []byte(first), err
}

func (a *scramSHA256) Next(challenge []byte) ([]byte, error) {
	if a.conv.Done() {
		return []byte{}, nil
	}
	resp, err := a.conv.Step(string(challenge))
	if err != nil {
		return nil, err
	}
	return []byte(resp), nil
}

// mechClient returns the client for mech with user and secret (a
// password, or a token for XOAUTH2 and OAUTHBEARER).
func mechClient(t *testing.T, mech, user, secret string) sasl.Client {
	t.Helper()
	switch mech {
	case "PLAIN":
		return sasl.NewPlainClient("", user, secret)
	case "LOGIN":
		return sasl.NewLoginClient(user, secret)
	case "CRAM-MD5":
		return cramMD5{user, secret}
	case "SCRAM-SHA-256":
		c, err := newSCRAM(user, secret)
		if err != nil {
			t.Fatal(err)
		}
		return c
	case "XOAUTH2":
		return xoauth2{user, secret}
	case "OAUTHBEARER":
		return newOAuthBearer(user, secret)
	}
	t.Fatalf("no test client for %s", mech)
	return nil
}

// login authenticates with mech in a fresh session and returns the
// session (nil on failure) and AUTH's error.
func login(t *testing.T, r *Relay, mech, user, secret string) (*smtp.Client, error) {
	t.Helper()
	c, mechs := r.Dial(t)
	if !slices.Contains(mechs, mech) {
		t.Fatalf("AUTH offers %v, not %s", mechs, mech)
	}
	if err := c.Auth(mechClient(t, mech, user, secret)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// mustRefuse checks that AUTH mech with user and secret gets 535.
func mustRefuse(t *testing.T, r *Relay, mech, user, secret, what string) {
	t.Helper()
	_, err := login(t, r, mech, user, secret)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 535 {
		t.Errorf("AUTH %s with %s: %v, want 535", mech, what, err)
	}
}

// mustRelay logs in with mech, sends one message, and checks that the
// upstream got it and that Postfix logged the session's mechanism and
// user (Dovecot lower-cases the name).
func mustRelay(t *testing.T, r *Relay, mech, user, secret, what string) {
	t.Helper()
	c, err := login(t, r, mech, user, secret)
	if err != nil {
		t.Errorf("AUTH %s with %s: %v, want 235", mech, what, err)
		return
	}
	before, logins := r.Upstream.Count(), r.Logins(mech, user)
	id := fmt.Sprintf("<%d.%s@dovecot.test>", time.Now().UnixNano(), strings.ToLower(mech))
	msg := "From: app@client.test\r\nTo: user@example.net\r\nMessage-ID: " + id + "\r\n\r\nHello.\r\n"
	if err := c.SendMail("app@client.test", []string{"user@example.net"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("send after AUTH %s with %s: %v", mech, what, err)
	}
	c.Quit() //nolint:errcheck // the message is in
	if err := r.Upstream.WaitMessages(before+1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); r.Logins(mech, user) == logins; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Postfix logged no new session with sasl_method=%s, sasl_username=%s; its logins: %+v", mech, strings.ToLower(user), r.Postfix.SASLLogins())
		}
	}
}
