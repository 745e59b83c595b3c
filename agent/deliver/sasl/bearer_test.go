package sasl

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

const testToken = "mF_9.B5f-4.1JqM"

// The XOAUTH2 initial response is the documented vector.
func TestXOAuth2InitialResponse(t *testing.T) {
	c := NewXOAuth2Client("user", testToken)
	mech, ir, err := c.Start()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := base64.StdEncoding.EncodeToString(ir), "dXNlcj11c2VyAWF1dGg9QmVhcmVyIG1GXzkuQjVmLTQuMUpxTQEB"; mech != "XOAUTH2" || got != want {
		t.Errorf("Start = %s %s, want XOAUTH2 %s", mech, got, want)
	}
	if c.Refusal() != nil {
		t.Errorf("Refusal before any challenge = %v, want nil", c.Refusal())
	}
}

// The OAUTHBEARER initial response follows RFC 7628 (section 4.1's
// example), with ',' and '=' in the user name escaped as GS2 wants.
func TestOAuthBearerInitialResponse(t *testing.T) {
	for _, tc := range []struct {
		user, host string
		port       int
		want       string
	}{
		{"user@example.com", "server.example.com", 143, "n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer " + testToken + "\x01\x01"},
		{"a,b=c", "", 0, "n,a=a=2Cb=3Dc,\x01auth=Bearer " + testToken + "\x01\x01"},
	} {
		mech, ir, err := NewOAuthBearerClient(tc.user, testToken, tc.host, tc.port).Start()
		if err != nil || mech != "OAUTHBEARER" || string(ir) != tc.want {
			t.Errorf("Start(%q) = %s %q %v, want OAUTHBEARER %q", tc.user, mech, ir, err, tc.want)
		}
	}
}

// The error challenge is answered as the mechanism wants (an empty line
// for XOAUTH2, \x01 for OAUTHBEARER) and its JSON is kept; a second
// challenge is an error.
func TestBearerErrorChallenge(t *testing.T) {
	for _, tc := range []struct {
		c         BearerClient
		challenge string
		reply     []byte
		want      BearerError
		text      string
	}{
		{NewXOAuth2Client("user", testToken), `{"status":"401","schemes":"bearer","scope":"mail"}`, []byte{},
			BearerError{Mechanism: "XOAUTH2", Status: "401", Schemes: "bearer", Scope: "mail"},
			`XOAUTH2: the relay refused the token (status "401", schemes "bearer", scope "mail")`},
		{NewOAuthBearerClient("user", testToken, "", 0), `{"status":"invalid_token"}`, []byte{1},
			BearerError{Mechanism: "OAUTHBEARER", Status: "invalid_token"},
			`OAUTHBEARER: the relay refused the token (status "invalid_token")`},
		{NewXOAuth2Client("user", testToken), `{"status":400,"schemes":"Bearer realm=\"mail\"","scope":"https://mail.google.com/"}`, []byte{},
			BearerError{Mechanism: "XOAUTH2", Status: "400", Schemes: `Bearer realm="mail"`, Scope: "https://mail.google.com/"},
			`XOAUTH2: the relay refused the token (status "400", schemes "Bearer realm=\"mail\"", scope "https://mail.google.com/")`},
		{NewXOAuth2Client("user", testToken), "not json", []byte{},
			BearerError{Mechanism: "XOAUTH2", Malformed: true},
			"XOAUTH2: the relay refused the token (its error challenge is not JSON)"},
	} {
		resp, err := tc.c.Next([]byte(tc.challenge))
		if err != nil || resp == nil || string(resp) != string(tc.reply) {
			t.Errorf("Next(%s) = %q, %v; want %q (non-nil, so go-smtp sends it)", tc.challenge, resp, err, tc.reply)
		}
		r := tc.c.Refusal()
		if r == nil || *r != tc.want {
			t.Errorf("Refusal after %s = %+v, want %+v", tc.challenge, r, tc.want)
			continue
		}
		if r.Error() != tc.text {
			t.Errorf("Refusal().Error() = %s, want %s", r.Error(), tc.text)
		}
		if _, err := tc.c.Next([]byte(tc.challenge)); err == nil || !strings.Contains(err.Error(), "second challenge") {
			t.Errorf("a second challenge: %v, want an error", err)
		}
	}
}

// A relay that echoes the token (or a piece of it) in its error challenge
// does not get it into the error; long and binary fields are cut.
func TestBearerErrorNeverHoldsTheToken(t *testing.T) {
	tok := "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"
	for _, challenge := range []string{
		`{"status":"` + tok + `","schemes":"bearer"}`,
		`{"status":"401","scope":"x ` + tok[10:30] + ` y"}`,
		`{"status":"401","schemes":"` + tok[20:28] + `"}`,
	} {
		for _, c := range []BearerClient{NewXOAuth2Client("u", tok), NewOAuthBearerClient("u", tok, "", 0)} {
			c.Next([]byte(challenge)) //nolint:errcheck // the refusal is what is checked
			r := c.Refusal()
			if r == nil {
				t.Fatalf("no refusal for %s", challenge)
			}
			text := r.Error() + fmt.Sprintf(" %+v %#v", r, r)
			if strings.Contains(text, tok[20:28]) || !strings.Contains(text, "[redacted]") {
				t.Errorf("refusal of %s: %s, want the token's piece redacted", challenge, text)
			}
		}
	}
	c := NewXOAuth2Client("u", tok)
	c.Next([]byte(`{"status":"` + strings.Repeat("\x00x", 300) + `"}`)) //nolint:errcheck // the refusal is what is checked
	if s := c.Refusal().Error(); len(s) > 120 || strings.ContainsRune(s, 0) {
		t.Errorf("a long binary status gives %q, want it cut and printable", s)
	}
}

// A user name or token that would break the framing is refused at Start,
// and the error names which without showing it; printing a client shows
// only its mechanism.
func TestBearerClientRefusesAndRedacts(t *testing.T) {
	tok := "tok\x01en-secret-value"
	for _, tc := range []struct {
		c    BearerClient
		want string
	}{
		{NewXOAuth2Client("user", tok), "XOAUTH2: the access token holds a control character or a space"},
		{NewXOAuth2Client("user", "two words-secret"), "XOAUTH2: the access token holds a control character or a space"},
		{NewOAuthBearerClient("us\x01er", "secret-token-value", "", 0), "OAUTHBEARER: the user name holds a control character"},
		{NewXOAuth2Client("", "secret-token-value"), "XOAUTH2: the user name is empty"},
		{NewOAuthBearerClient("user", "", "", 0), "OAUTHBEARER: the access token is empty"},
	} {
		_, _, err := tc.c.Start()
		if err == nil || err.Error() != tc.want {
			t.Errorf("Start: %v, want %q", err, tc.want)
		}
	}
	c := NewXOAuth2Client("user", "secret-token-value")
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		if s := fmt.Sprintf(verb, c); strings.Contains(s, "secret") || strings.Contains(s, "736563726574") || !strings.Contains(s, "XOAUTH2") {
			t.Errorf("Sprintf(%s, client) = %s, want the mechanism only", verb, s)
		}
	}
}
