package sasl

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	gosasl "github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/xdg-go/scram"
)

// CRAM-MD5 answers RFC 2195's example challenge with its example
// response, and refuses an empty or a second challenge.
func TestCRAMMD5(t *testing.T) {
	c := NewCRAMMD5Client("tim", "tanstaaftanstaaf")
	mech, ir, err := c.Start()
	if mech != "CRAM-MD5" || ir != nil || err != nil {
		t.Fatalf("Start = %s %q %v, want CRAM-MD5 without an initial response", mech, ir, err)
	}
	resp, err := c.Next([]byte("<1896.697170952@postoffice.reston.mci.net>"))
	if want := "tim b913a602c7eda7a495b4e6e7334d3890"; err != nil || string(resp) != want {
		t.Errorf("Next = %q %v, want %q", resp, err, want)
	}
	if _, err := c.Next([]byte("<again@x>")); err == nil || err.Error() != "CRAM-MD5: the server sent a second challenge" {
		t.Errorf("second challenge: %v", err)
	}
	if _, err := NewCRAMMD5Client("tim", "tanstaaftanstaaf").Next(nil); err == nil || err.Error() != "CRAM-MD5: the server's challenge is empty" {
		t.Errorf("empty challenge: %v", err)
	}
}

// scramVector is an exchange from the RFCs: RFC 5802 section 5 (SHA-1)
// and RFC 7677 section 3 (SHA-256), user "user", password "pencil".
type scramVector struct {
	mech, nonce, clientFirst, serverFirst, clientFinal, serverFinal string
}

var scramVectors = []scramVector{
	{"SCRAM-SHA-1", "fyko+d2lbbFgONRv9qkxdawL",
		"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
		"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
		"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
		"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="},
	{"SCRAM-SHA-256", "rOprNGfwEbeRWgbNEkqO",
		"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
		"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="},
}

// withNonce returns a client for v whose conversation uses v's nonce.
func withNonce(t *testing.T, v scramVector, password string) *SCRAMClient {
	t.Helper()
	c, err := NewSCRAMClient(v.mech, "user", password)
	if err != nil {
		t.Fatal(err)
	}
	hash := map[string]scram.HashGeneratorFcn{"SCRAM-SHA-1": scram.SHA1, "SCRAM-SHA-256": scram.SHA256}[v.mech]
	sc, err := hash.NewClient("user", password, "")
	if err != nil {
		t.Fatal(err)
	}
	c.conv = sc.WithNonceGenerator(func() string { return v.nonce }).NewConversation()
	return c
}

// The RFCs' exchanges, message for message; the server's signature is
// checked and Verify says so.
func TestSCRAMVectors(t *testing.T) {
	for _, v := range scramVectors {
		c := withNonce(t, v, "pencil")
		mech, first, err := c.Start()
		if err != nil || mech != v.mech || string(first) != v.clientFirst {
			t.Fatalf("%s: Start = %s %q %v, want %q", v.mech, mech, first, err, v.clientFirst)
		}
		if err := c.Verify(); err == nil {
			t.Errorf("%s: Verify before the server's final message = nil", v.mech)
		}
		final, err := c.Next([]byte(v.serverFirst))
		if err != nil || string(final) != v.clientFinal {
			t.Fatalf("%s: client-final %q %v, want %q", v.mech, final, err, v.clientFinal)
		}
		resp, err := c.Next([]byte(v.serverFinal))
		if err != nil || resp == nil || len(resp) != 0 {
			t.Fatalf("%s: answer to server-final %q %v, want an empty (non-nil) response", v.mech, resp, err)
		}
		if err := c.Verify(); err != nil {
			t.Errorf("%s: Verify after a good server signature: %v", v.mech, err)
		}
		if _, err := c.Next([]byte("v=x")); err == nil {
			t.Errorf("%s: a challenge after the final message was answered", v.mech)
		}
	}
}

// A server signature that does not match, a server error, a nonce the
// server did not extend, a flood of iterations and a malformed message
// each fail the exchange with an error that names the fault and holds no
// secret and none of the server's text but a short error code.
func TestSCRAMServerFaults(t *testing.T) {
	v := scramVectors[1]
	const pw = "pencil"
	for _, tc := range []struct {
		name               string
		serverFirst, final string
		want               string
	}{
		{"wrong signature", v.serverFirst, "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
			"SCRAM-SHA-256: the server's final message: the server's signature does not match (the server does not know the password, or the exchange was altered)"},
		{"server error", v.serverFirst, "e=invalid-proof",
			`SCRAM-SHA-256: the server's final message: the server reports error "invalid-proof"`},
		{"nonce not extended", "r=other,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "",
			"SCRAM-SHA-256: the server's first message: the server's nonce does not extend the client's"},
		{"too many iterations", "r=" + v.nonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=999999999", "",
			"SCRAM-SHA-256: the server asks for more PBKDF2 iterations than 1048576"},
		{"too few iterations", "r=" + v.nonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1", "",
			"SCRAM-SHA-256: the server's first message: server requested too few iterations (1)"},
		{"malformed", "r=" + v.nonce + "x,s=pencil-not-base64!,i=4096", "",
			"SCRAM-SHA-256: the server's first message: malformed"},
	} {
		c := withNonce(t, v, pw)
		c.Start() //nolint:errcheck // checked in TestSCRAMVectors
		_, err := c.Next([]byte(tc.serverFirst))
		if err == nil {
			_, err = c.Next([]byte(tc.final))
		}
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v\nwant %s", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("%s: the error holds the password", tc.name)
		}
		if c.Verify() == nil {
			t.Errorf("%s: Verify = nil after a failed exchange", tc.name)
		}
	}
}

// SASLprep failures name the field, never the password.
func TestSCRAMPrepErrors(t *testing.T) {
	_, err := NewSCRAMClient("SCRAM-SHA-256", "user", "pass\u0007word-secret")
	if err == nil || err.Error() != "SCRAM-SHA-256: the password cannot be prepared (SASLprep refuses it)" {
		t.Errorf("password SASLprep error: %v", err)
	}
	if _, err := NewSCRAMClient("SCRAM-SHA-512", "user", "x"); err == nil || !strings.Contains(err.Error(), `"SCRAM-SHA-512"`) {
		t.Errorf("unknown SCRAM mechanism: %v", err)
	}
	c, _ := NewSCRAMClient("SCRAM-SHA-1", "user", "pencil-secret")
	if s := fmt.Sprintf("%+v %#v", c, c); strings.Contains(s, "pencil") || !strings.Contains(s, "SCRAM-SHA-1") {
		t.Errorf("printing a SCRAM client shows %s", s)
	}
}

// scramServer is a go-smtp session whose SCRAM-SHA-256 is xdg-go/scram's
// server, with one fault at a time in what it sends last: a tampered
// signature, or a 235 with no server-final message at all.
type scramServer struct {
	fault string // "", "tamper", "skip"
}

func (b *scramServer) NewSession(*smtp.Conn) (smtp.Session, error) { return &scramSession{b}, nil }

type scramSession struct{ b *scramServer }

func (s *scramSession) AuthMechanisms() []string { return []string{"SCRAM-SHA-256"} }

func (s *scramSession) Auth(string) (gosasl.Server, error) {
	kf := scram.KeyFactors{Salt: "QSXCR+Q6sek8bf92", Iters: 4096}
	client, _ := scram.SHA256.NewClient("user", "pencil", "")
	stored, err := client.GetStoredCredentialsWithError(kf)
	if err != nil {
		return nil, err
	}
	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return stored, nil })
	if err != nil {
		return nil, err
	}
	return &scramSASL{conv: srv.NewConversation(), fault: s.b.fault}, nil
}

func (s *scramSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *scramSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *scramSession) Data(io.Reader) error                 { return nil }
func (s *scramSession) Reset()                               {}
func (s *scramSession) Logout() error                        { return nil }

type scramSASL struct {
	conv  *scram.ServerConversation
	fault string
	sent  bool
}

func (a *scramSASL) Next(resp []byte) ([]byte, bool, error) {
	if a.sent {
		return nil, true, nil
	}
	out, err := a.conv.Step(string(resp))
	if err != nil {
		return nil, true, err
	}
	if !a.conv.Done() {
		return []byte(out), false, nil
	}
	a.sent = true
	switch a.fault {
	case "skip":
		return nil, true, nil
	case "tamper":
		out = "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	}
	return []byte(out), false, nil
}

// Through go-smtp's Client.Auth: a good server passes and Verify is nil;
// a tampered signature fails Auth; a 235 without a server-final message
// passes Auth (go-smtp cannot tell), and Verify catches it.
func TestSCRAMThroughGoSMTP(t *testing.T) {
	for _, fault := range []string{"", "tamper", "skip"} {
		srv := smtp.NewServer(&scramServer{fault: fault})
		srv.AllowInsecureAuth = true // loopback, no TLS: the SASL exchange is what is tested
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln) //nolint:errcheck // ends at Close
		c, err := smtp.Dial(ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		a, err := NewSCRAMClient("SCRAM-SHA-256", "user", "pencil")
		if err != nil {
			t.Fatal(err)
		}
		authErr := c.Auth(a)
		verr := Verify(a)
		c.Close()
		srv.Close()
		switch fault {
		case "":
			if authErr != nil || verr != nil {
				t.Errorf("good server: Auth %v, Verify %v", authErr, verr)
			}
		case "tamper":
			if authErr == nil || !strings.Contains(authErr.Error(), "signature does not match") {
				t.Errorf("tampered signature: Auth %v, want the mismatch", authErr)
			}
		case "skip":
			if authErr != nil || verr == nil || !strings.Contains(verr.Error(), "without proving it knows the password") {
				t.Errorf("235 without server-final: Auth %v, Verify %v; want nil and an error", authErr, verr)
			}
		}
	}
	if err := Verify(gosasl.NewPlainClient("", "u", "p")); err != nil {
		t.Errorf("Verify(PLAIN) = %v, want nil", err)
	}
}
