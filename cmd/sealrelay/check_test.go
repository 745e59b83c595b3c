package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestCheck runs `sealrelay check` against upstreams that work and that
// fail in each way an operator meets, and checks the line it prints, the
// exit status, and that no mail was sent.
func TestCheck(t *testing.T) {
	cases := []struct {
		name     string
		up       upstream.Config
		down     bool // the upstream is not listening
		relay    relayOpts
		code     int
		wantLine string
	}{
		{name: "ok", code: 0, wantLine: "relay up (ADDR): ok, TLS 1.3, AUTH PLAIN as " + rigUser},
		{name: "tcp", down: true, code: 1, wantLine: "connection refused"},
		{name: "tls verification", up: upstream.Config{UntrustedCert: true}, code: 1, wantLine: "certificate"},
		{name: "no auth offered", up: upstream.Config{Behavior: upstream.Behavior{NoAuth: true}}, code: 1, wantLine: "FAILED: AUTH: not offered by the relay"},
		{name: "535", up: upstream.Config{Behavior: upstream.Behavior{AuthReply: &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}}}, code: 1, wantLine: "535 5.7.8 authentication credentials invalid (relay's text withheld)"},
		{name: "enabled relay failing is a warning", relay: relayOpts{Auth: "enabled"}, up: upstream.Config{Behavior: upstream.Behavior{NoAuth: true}}, code: 0, wantLine: "relay up (ADDR): ok"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			rigFiles(t, dir, rigUser, rigPass)
			up := startUpstream(t, dir, tc.up)
			addr := up.Addr()
			if tc.down {
				addr = testlib.RefusedAddr(t)
			}
			cfg := rigConfig(t, dir, addr, tc.relay, "")
			var out, errb bytes.Buffer
			code := run(&env{ctx: t.Context(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb}, []string{"check", "-c", cfg})
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out.String(), errb.String())
			}
			want := strings.ReplaceAll(tc.wantLine, "ADDR", addr)
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
			if !strings.Contains(out.String(), "credentials age file") {
				t.Errorf("output does not report the credentials:\n%s", out.String())
			}
			for _, s := range up.Sessions() {
				if s.MailIssued() {
					t.Errorf("check sent MAIL")
				}
			}
			if strings.Contains(out.String()+errb.String(), rigPass) {
				t.Error("check printed the password")
			}
		})
	}
}

// TestCheckBadCredentials: a credential file this server cannot read is
// reported with the reason and the hint, and check fails.
func TestCheckBadCredentials(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	// Another server's key: this one is not a recipient of the file.
	other := t.TempDir()
	rigFiles(t, other, rigUser, rigPass)
	data := readTestFile(t, cfg)
	data = strings.Replace(data, `file = "credentials.age"`, `file = "`+other+`/credentials.age"`, 1)
	writeTestFile(t, cfg, data)

	var out, errb bytes.Buffer
	code := run(&env{ctx: t.Context(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb}, []string{"check", "-c", cfg})
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{"is not among the recipients of", "sealrelay: hint: "} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
	if !strings.Contains(out.String(), "FAILED") {
		t.Errorf("stdout has no FAILED line:\n%s", out.String())
	}
}
