package opensmtpdtest

import (
	"errors"
	"net/smtp"
	"net/textproto"
	"strings"
	"testing"
)

func TestStartNeedsRelayhost(t *testing.T) {
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(Config{}); err == nil || !strings.Contains(err.Error(), "Config.Relayhost is required") {
		t.Fatalf("Start without a relayhost: %v", err)
	}
}

// TestStrictAboutEHLO: the instance is the strict relay this package is
// for: a second EHLO on one session gets 503 5.5.1, and a recipient outside
// its domain 550. Close stops it.
func TestStrictAboutEHLO(t *testing.T) {
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	in, err := Start(Config{Relayhost: "127.0.0.1:9"})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	c, err := smtp.Dial(in.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@client.test"); err != nil {
		t.Fatal(err)
	}
	var te *textproto.Error
	if err := c.Rcpt("b@elsewhere.test"); !errors.As(err, &te) || te.Code != 550 {
		t.Errorf("RCPT outside the domain: %v, want 550", err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	id, err := c.Text.Cmd("EHLO client.test")
	if err != nil {
		t.Fatal(err)
	}
	c.Text.StartResponse(id)
	code, msg, err := c.Text.ReadResponse(250)
	c.Text.EndResponse(id)
	if err == nil || code != 503 || msg != "5.5.1 Invalid command: Already identified" {
		t.Errorf("second EHLO: %d %q (%v), want 503 5.5.1", code, msg, err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := smtp.Dial(in.Addr); err == nil {
		t.Error("still listening after Close")
	}
}
