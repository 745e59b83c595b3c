package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// secretForms returns every form of a relay password that could leak: as
// is, hex, base64 (the form SASL LOGIN sends), and the base64 of the SASL
// PLAIN message "\x00user\x00pass".
func secretForms(user, pass string) map[string]string {
	forms := map[string]string{
		"password": pass,
		"hex":      hex.EncodeToString([]byte(pass)),
	}
	plain := "\x00" + user + "\x00" + pass
	for name, enc := range map[string]*base64.Encoding{
		"std": base64.StdEncoding, "raw": base64.RawStdEncoding, "url": base64.URLEncoding,
	} {
		forms["base64 "+name+" (LOGIN)"] = enc.EncodeToString([]byte(pass))
		forms["base64 "+name+" of PLAIN"] = enc.EncodeToString([]byte(plain))
		forms["base64 "+name+" of PLAIN with authzid"] = enc.EncodeToString([]byte(user + plain))
	}
	return forms
}

// recordingCLI returns a function that runs one command line in-process,
// fails the test unless it exits with want, appends what it printed to
// printed, and returns its stdout.
func recordingCLI(t *testing.T, printed *bytes.Buffer) func(stdin string, want int, args ...string) string {
	return func(stdin string, want int, args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		code := run(&env{ctx: context.Background(), stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr}, args)
		printed.Write(stdout.Bytes())
		printed.Write(stderr.Bytes())
		if code != want {
			t.Fatalf("sealrelay %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, &stdout, &stderr)
		}
		return stdout.String()
	}
}

// checkWorkDir checks that dir holds exactly the files want (no temp
// files), and that none but those in skip holds any of forms.
func checkWorkDir(t *testing.T, dir string, want []string, forms map[string]string, skip ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		if slices.Contains(skip, e.Name()) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for name, form := range forms {
			if bytes.Contains(data, []byte(form)) {
				t.Errorf("%s holds the %s", e.Name(), name)
			}
		}
	}
	if !slices.Equal(names, want) {
		t.Errorf("work dir holds %q, want only %q (no temp files)", names, want)
	}
}

// TestCredsFlowLeavesNoSecret runs the whole CLI flow in-process with known
// passwords, then looks for them, in every form, in everything printed and
// in every file left in the work dir other than the sealed file; and for
// secret keys in everything printed.
func TestCredsFlowLeavesNoSecret(t *testing.T) {
	const (
		user     = "relay-account@example.com"
		pass     = "Flow-Test-Pa55word-6d1c"
		rotated  = "Flow-Test-Rotated-93ab"
		backup   = "backup@example.com"
		backupPw = "Flow-Test-Backup-0f2e"
	)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	var printed bytes.Buffer

	sealrelay := recordingCLI(t, &printed)

	pub1 := sealrelay("", 0, "keygen", "-o", p("relay1.key"))
	pub2 := sealrelay("", 0, "keygen", "-o", p("relay2.key"))
	both := "# relay1.example.com\n" + pub1 + "# relay2.example.com\n" + pub2
	if err := os.WriteFile(p("recipients.txt"), []byte(both), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("relay1-only.txt"), []byte("# relay1.example.com\n"+pub1), 0o644); err != nil {
		t.Fatal(err)
	}

	creds := p("credentials.age")
	sealrelay(pass+"\n", 0, "creds", "set", "primary", "-f", creds, "-R", p("recipients.txt"), "--username", user, "--password-stdin")
	sealrelay(backupPw+"\r\n", 0, "creds", "set", "backup", "-f", creds, "-R", p("recipients.txt"), "-i", p("relay2.key"), "--username", backup, "--password-stdin")
	if got := sealrelay("", 0, "creds", "list", "-f", creds, "-i", p("relay1.key")); !listed(got, "backup", backup) || !listed(got, "primary", user) {
		t.Errorf("list = %q", got)
	}
	sealrelay("", 0, "creds", "reencrypt", "-f", creds, "-R", p("relay1-only.txt"), "-i", p("relay1.key"))
	sealrelay("", 1, "creds", "list", "-f", creds, "-i", p("relay2.key"))
	sealrelay(rotated, 0, "creds", "set", "primary", "-f", creds, "-R", p("relay1-only.txt"), "-i", p("relay1.key"), "--username", user, "--password-stdin")
	sealrelay("", 0, "creds", "rm", "backup", "-f", creds, "-R", p("relay1-only.txt"), "-i", p("relay1.key"))
	sealrelay("", 1, "creds", "rm", "backup", "-f", creds, "-R", p("relay1-only.txt"), "-i", p("relay1.key"))
	sealrelay("", 2, "creds", "set", "x", "-f", creds, "-R", p("relay1-only.txt"), "-i", p("relay1.key"), "--username", user)
	if got := sealrelay("", 0, "keygen", "-y", p("relay1.key")); got != pub1 {
		t.Errorf("keygen -y = %q, want %q", got, pub1)
	}
	if got := sealrelay("", 0, "creds", "list", "-f", creds, "-i", p("relay1.key")); !listed(got, "primary", user) || listed(got, "backup", backup) {
		t.Errorf("final list = %q", got)
	}

	forms := secretForms(user, pass)
	for k, v := range secretForms(user, rotated) {
		forms["rotated "+k] = v
	}
	for k, v := range secretForms(backup, backupPw) {
		forms["backup "+k] = v
	}

	out := printed.String()
	if !strings.Contains(out, "added entry") || !strings.Contains(out, "not among the recipients") {
		t.Fatalf("the flow did not print what it should; the test is not looking at the output:\n%s", out)
	}
	for name, form := range forms {
		if strings.Contains(out, form) {
			t.Errorf("printed output holds the %s: %q", name, form)
		}
	}
	if strings.Contains(out, "AGE-SECRET-KEY") {
		t.Error("printed output holds a secret key")
	}

	checkWorkDir(t, dir, []string{"credentials.age", "recipients.txt", "relay1-only.txt", "relay1.key", "relay2.key"}, forms, "credentials.age")
	sealed, err := os.ReadFile(creds)
	if err != nil {
		t.Fatal(err)
	}
	for name, form := range forms {
		if bytes.Contains(sealed, []byte(form)) {
			t.Errorf("the sealed file holds the %s in the clear", name)
		}
	}
}
