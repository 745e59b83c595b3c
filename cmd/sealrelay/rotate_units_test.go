package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRotateUnitsVerify: systemd-analyze verify accepts the example
// timer and service of dist/examples/systemd, as the instance a reader
// enables (sealrelay-rotate@primary), without a warning; and the hooks
// the README shows are there and executable.
func TestRotateUnitsVerify(t *testing.T) {
	bin := systemdAnalyze(t)
	dir := t.TempDir()
	src := filepath.Join(repoRoot, "dist/examples/systemd")
	service := readTestFile(t, filepath.Join(src, "sealrelay-rotate@.service"))
	if !strings.Contains(service, "ExecStart=/usr/bin/sealrelay creds rotate %i ") {
		t.Fatal("the service does not run /usr/bin/sealrelay creds rotate %i")
	}
	service = strings.ReplaceAll(service, "ExecStart=/usr/bin/sealrelay ", "ExecStart="+builtBinary(t)+" ")
	writeTestFile(t, filepath.Join(dir, "sealrelay-rotate@primary.service"), service)
	writeTestFile(t, filepath.Join(dir, "sealrelay-rotate@primary.timer"), readTestFile(t, filepath.Join(src, "sealrelay-rotate@.timer")))
	out, err := exec.Command(bin, "verify", filepath.Join(dir, "sealrelay-rotate@primary.timer"), filepath.Join(dir, "sealrelay-rotate@primary.service")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	readme := readTestFile(t, filepath.Join(repoRoot, "README.md"))
	for _, hook := range []string{"dovecot-passwd-file", "mailgun", "ses-iam-access-key"} {
		fi, err := os.Stat(filepath.Join(repoRoot, "dist/examples/rotate", hook))
		if err != nil || fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("dist/examples/rotate/%s: %v, mode %v: not an executable", hook, err, fi.Mode())
		}
		if !strings.Contains(readme, "examples/rotate/"+hook) {
			t.Errorf("the README does not show the %s hook", hook)
		}
	}
}

// runExampleHook runs a shipped hook with in as its standard input.
func runExampleHook(t *testing.T, env []string, hook string, in string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot, "dist/examples/rotate", hook), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(in)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	code := exitCode(t, cmd.Run())
	return out.String(), errb.String(), code
}

// TestExampleHookMailgun runs the Mailgun hook against a stand-in for
// Mailgun's credentials API (the only scripted part): make names the
// other login, set-new creates it with the password in the body and the
// key in the Authorization header, retire-old deletes the old login.
func TestExampleHookMailgun(t *testing.T) {
	var seen []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		user, pass, _ := r.BasicAuth()
		seen = append(seen, fmt.Sprintf("%s %s auth=%s:%s login=%s password=%s", r.Method, r.URL.Path, user, pass, r.PostForm.Get("login"), r.PostForm.Get("password")))
		w.Write([]byte(`{"message": "ok"}`))
	}))
	defer api.Close()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte("key-unit\n"), 0o600)
	args := []string{"--domain", "mg.example.com", "--key-file", keyFile, "--logins", "relay-a@mg.example.com,relay-b@mg.example.com", "--api", api.URL}
	out, errs, code := runExampleHook(t, nil, "mailgun", `{"action": "make", "username": "relay-a@mg.example.com", "old_username": "relay-a@mg.example.com"}`, args...)
	if code != 0 || strings.TrimSpace(out) != `{"username": "relay-b@mg.example.com"}` {
		t.Fatalf("make: exit %d, printed %q %s", code, out, errs)
	}
	for _, in := range []string{
		`{"action": "set-new", "username": "relay-b@mg.example.com", "secret": "S3cret-new", "old_username": "relay-a@mg.example.com"}`,
		`{"action": "retire-old", "username": "relay-b@mg.example.com", "secret": "S3cret-new", "old_username": "relay-a@mg.example.com"}`,
	} {
		if out, errs, code := runExampleHook(t, nil, "mailgun", in, args...); code != 0 || out != "" {
			t.Fatalf("%s: exit %d %q %s", in, code, out, errs)
		}
	}
	want := []string{
		"POST /v3/domains/mg.example.com/credentials auth=api:key-unit login=relay-b@mg.example.com password=S3cret-new",
		"DELETE /v3/domains/mg.example.com/credentials/relay-a@mg.example.com auth=api:key-unit login= password=",
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Errorf("Mailgun saw:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
	os.Chmod(keyFile, 0o644)
	if _, errs, code := runExampleHook(t, nil, "mailgun", `{"action": "retire-new", "username": "relay-b@mg.example.com"}`, args...); code != 1 || !strings.Contains(errs, "can be read by others: chmod 600") {
		t.Errorf("a readable key file: exit %d %s", code, errs)
	}
}

// TestExampleHookSES runs the SES hook with a stand-in `aws` on $PATH:
// make prints the new key from create-access-key, retire-old deletes the
// old key id.
func TestExampleHookSES(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "aws.log")
	aws := "#!/bin/sh\necho \"$@\" >> " + log + "\n" +
		"case \"$2\" in create-access-key) echo '{\"AccessKey\": {\"AccessKeyId\": \"AKIANEWKEY0000000002\", \"SecretAccessKey\": \"new/secret\"}}';; esac\n"
	os.WriteFile(filepath.Join(dir, "aws"), []byte(aws), 0o755)
	env := []string{"PATH=" + dir + ":" + os.Getenv("PATH")}
	args := []string{"--user-name", "ses-smtp", "--settle", "0"}
	out, errs, code := runExampleHook(t, env, "ses-iam-access-key", `{"action": "make", "username": "AKIAOLDKEY0000000001"}`, args...)
	if code != 0 || strings.TrimSpace(out) != `{"username": "AKIANEWKEY0000000002", "secret": "new/secret"}` {
		t.Fatalf("make: exit %d %q %s", code, out, errs)
	}
	if _, errs, code := runExampleHook(t, env, "ses-iam-access-key", `{"action": "retire-old", "username": "AKIANEWKEY0000000002", "old_username": "AKIAOLDKEY0000000001"}`, args...); code != 0 {
		t.Fatalf("retire-old: exit %d %s", code, errs)
	}
	want := "iam create-access-key --user-name ses-smtp --output json\niam delete-access-key --user-name ses-smtp --access-key-id AKIAOLDKEY0000000001 --output json\n"
	if got := readTestFile(t, log); got != want {
		t.Errorf("aws ran:\n%s\nwant:\n%s", got, want)
	}
}
