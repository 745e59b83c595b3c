package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/sealrelay/sealrelay/internal/hint"
	"github.com/sealrelay/sealrelay/internal/testing/systemdcreds"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/keys"
)

// The server identity as a systemd credential: identity =
// "credential:NAME" reads $CREDENTIALS_DIRECTORY/NAME, laid out here as
// systemd's service manager lays it out (see internal/testing/systemdcreds).
// systemd is not PID 1 on the test machines, so no unit is started;
// systemd-creds, where installed, encrypts and decrypts the identity with
// a host key of the test's own.

// credentialRig makes the rig of rig_test.go in dir with identity =
// "credential:identity", puts the identity it made into a credentials
// directory laid out for a service running as uid, and removes the
// identity file: the credential is then the only copy. plaintext, if not
// nil, replaces what goes into the credential (the identity after a round
// trip through systemd-creds). It returns the config and the directory.
func credentialRig(t *testing.T, dir string, up *upstream.Server, uid int, plaintext func(identityFile string) []byte) (cfg, credDir string) {
	t.Helper()
	rigFiles(t, dir, rigUser, rigPass)
	idFile := filepath.Join(dir, "identity.txt")
	data := []byte(readTestFile(t, idFile))
	if plaintext != nil {
		data = plaintext(idFile)
	}
	if err := os.Remove(idFile); err != nil {
		t.Fatal(err)
	}
	credDir = systemdcreds.Dir(t, dir, map[string][]byte{"identity": data}, uid)
	cfg = rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	writeTestFile(t, cfg, strings.Replace(readTestFile(t, cfg), `identity = "identity.txt"`, `identity = "credential:identity"`, 1))
	return cfg, credDir
}

// withoutCredentials is the test's environment without
// CREDENTIALS_DIRECTORY, should the tests themselves run under systemd.
func withoutCredentials() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CREDENTIALS_DIRECTORY=") {
			env = append(env, kv)
		}
	}
	return env
}

// runAs runs bin with args and env, as uid when uid is not -1.
func runAs(t *testing.T, bin string, uid int, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(withoutCredentials(), env...)
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	return runCmd(t, cmd)
}

// TestSystemdCredentialServe: `check` and `serve` read the identity from
// $CREDENTIALS_DIRECTORY, name it in their startup line, open the sealed
// credential file, and serve delivers. Without the variable, or without
// the credential, they fail naming the credential (and the directory),
// with a hint.
func TestSystemdCredentialServe(t *testing.T) {
	dir := t.TempDir()
	up := startUpstream(t, dir, upstream.Config{})
	cfg, credDir := credentialRig(t, dir, up, os.Geteuid(), nil)
	env := []string{"CREDENTIALS_DIRECTORY=" + credDir}
	bin := builtBinary(t)
	wantSource := "systemd credential identity in " + credDir

	code, stdout, stderr := runAs(t, bin, -1, env, "check", "-c", cfg)
	if code != 0 {
		t.Fatalf("check: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, `msg="server identity" source="`+wantSource+`" public_key=age1`) {
		t.Errorf("check does not name the identity's source:\n%s", stderr)
	}

	code, _, stderr = runAs(t, bin, -1, nil, "check", "-c", cfg)
	want := "sealrelay: " + cfg + `: credentials.identity: systemd credential "identity": $CREDENTIALS_DIRECTORY is not set: sealrelay was not started by systemd with a credential
sealrelay: hint: pass it in the unit: LoadCredentialEncrypted=identity:/etc/sealrelay/identity.cred (made by ` + "`systemd-creds encrypt --name=identity IDENTITY /etc/sealrelay/identity.cred`" + `; see dist/systemd/sealrelay-credential.service.d/), or set credentials.identity to an identity file
`
	if code != 1 || stderr != want {
		t.Errorf("check without CREDENTIALS_DIRECTORY: exit %d, stderr:\n%s\nwant exit 1 and:\n%s", code, stderr, want)
	}

	other := filepath.Join(dir, "other.toml")
	writeTestFile(t, other, strings.Replace(readTestFile(t, cfg), `"credential:identity"`, `"credential:sealrelay-id"`, 1))
	code, _, stderr = runAs(t, bin, -1, env, "check", "-c", other)
	if want := `sealrelay: ` + other + `: credentials.identity: systemd credential "sealrelay-id" in ` + credDir + `: the service was not given it
sealrelay: hint: pass it in the unit: LoadCredentialEncrypted=sealrelay-id:`; code != 1 || !strings.HasPrefix(stderr, want) {
		t.Errorf("check with a credential the unit lacks: exit %d, stderr:\n%s\nwant exit 1 and:\n%s...", code, stderr, want)
	}

	// The creds commands take the credential too, as under
	// systemd-run -p LoadCredentialEncrypted=... sealrelay creds ...
	code, stdout, stderr = runAs(t, bin, -1, env, "creds", "list", "-f", filepath.Join(dir, "credentials.age"), "-i", "credential:identity")
	if code != 0 || !regexp.MustCompile(`(?m)^upstream +password +`+regexp.QuoteMeta(rigUser)+` `).MatchString(stdout) {
		t.Errorf("creds list -i credential:identity: exit %d\n%s%s", code, stdout, stderr)
	}

	p := startProcess(t, cfg, env...)
	if !strings.Contains(p.stderr.String(), `msg="server identity" source="`+wantSource+`"`) {
		t.Errorf("serve does not name the identity's source:\n%s", p.stderr.String())
	}
	deliverOne(t, p, up, "<systemd@rig>")
}

// TestSystemdCredsRoundTrip: the identity encrypted by `systemd-creds
// encrypt --with-key=host` (as for LoadCredentialEncrypted=) holds no key
// in clear; `systemd-creds decrypt` gives it back, as the service manager
// does at start, into the credentials directory; the agent then reads it
// and delivers with the sealed credential. The host key is the test's own
// ($SYSTEMD_CREDENTIAL_SECRET), made by `systemd-creds setup`.
func TestSystemdCredsRoundTrip(t *testing.T) {
	systemdcreds.Tool(t)
	dir := t.TempDir()
	up := startUpstream(t, dir, upstream.Config{})
	secret := filepath.Join(dir, "credential.secret")
	var sealedIdentity []byte
	cfg, credDir := credentialRig(t, dir, up, os.Geteuid(), func(idFile string) []byte {
		systemdcreds.Creds(t, secret, "setup")
		enc := filepath.Join(dir, "identity.cred")
		systemdcreds.Creds(t, secret, "encrypt", "--with-key=host", "--name=identity", idFile, enc)
		sealedIdentity = []byte(readTestFile(t, enc))
		return systemdcreds.Creds(t, secret, "decrypt", "--name=identity", enc, "-")
	})
	if bytes.Contains(sealedIdentity, []byte("AGE-SECRET-KEY")) || len(sealedIdentity) == 0 {
		t.Fatalf("the encrypted credential holds the key in clear, or nothing:\n%s", sealedIdentity)
	}
	p := startProcess(t, cfg, "CREDENTIALS_DIRECTORY="+credDir)
	deliverOne(t, p, up, "<systemd-creds@rig>")
}

// serviceUID is the service user of TestSystemdCredentialServiceUser:
// nobody, on Debian.
const serviceUID = 65534

// TestSystemdCredentialServiceUser: a service with a User= of its own gets
// its credential as systemd gives it on tmpfs: a root-owned file of mode
// 0400 with an ACL entry for the user (so the mode shows 0440), in a
// root-owned 0500 directory with an ACL entry too. `check` run as that
// user accepts it; run as root, which is not the user the ACL names, it
// refuses the credential as readable by another user.
func TestSystemdCredentialServiceUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running sealrelay as a service user needs root")
	}
	// Everything but the credential must be readable by the service user.
	base, err := os.MkdirTemp("", "sealrelay-credential-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t, base, upstream.Config{})
	cfg, credDir := credentialRig(t, base, up, serviceUID, nil)
	for _, f := range []string{"credentials.age", "upstream-ca.pem", "sealrelay.toml", "recipients.txt"} {
		if err := os.Chmod(filepath.Join(base, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(base, "sealrelay")
	exe, err := os.ReadFile(builtBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(credDir, "identity"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o440 {
		t.Fatalf("the credential shows mode %04o, want 0440 as systemd's with its ACL", fi.Mode().Perm())
	}
	env := []string{"CREDENTIALS_DIRECTORY=" + credDir}

	code, stdout, stderr := runAs(t, bin, serviceUID, env, "check", "-c", cfg)
	if code != 0 {
		t.Fatalf("check as uid %d: exit %d\n%s\n%s", serviceUID, code, stdout, stderr)
	}
	if !strings.Contains(stderr, `source="systemd credential identity in `+credDir+`"`) {
		t.Errorf("check does not name the identity's source:\n%s", stderr)
	}

	code, _, stderr = runAs(t, bin, -1, env, "check", "-c", cfg)
	want := `: credentials.identity: systemd credential "identity" in ` + credDir + `: its ACL lets uid 65534 read it (mode 0440); refusing to use it`
	if code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("check as root: exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr, want)
	}
}

// TestCredentialDropIn: the drop-in in dist/systemd and what sealrelay
// says agree: the credential it loads is the one its comment tells the
// config to name, a name sealrelay accepts, from the file the hint of a
// missing credential names.
func TestCredentialDropIn(t *testing.T) {
	data := readTestFile(t, "../../dist/systemd/sealrelay-credential.service.d/credential.conf")
	load := regexp.MustCompile(`(?m)^LoadCredentialEncrypted=([^:\n]+):(\S+)$`).FindStringSubmatch(data)
	if load == nil {
		t.Fatal("the drop-in has no LoadCredentialEncrypted=NAME:FILE line")
	}
	name, file := load[1], load[2]
	if !strings.Contains(data, `#   identity = "credential:`+name+`"`) {
		t.Errorf("the drop-in's comment does not set identity = \"credential:%s\"", name)
	}
	if !strings.Contains(data, "systemd-creds encrypt --name="+name+" ") || !strings.Contains(data, " "+file+"\n") {
		t.Errorf("the drop-in's comment does not encrypt --name=%s into %s", name, file)
	}
	if !keys.ValidCredentialName(name) {
		t.Errorf("sealrelay refuses the drop-in's credential name %q", name)
	}
	_, err := keys.LoadCredential(t.TempDir(), name)
	if h := hint.All(err); len(h) == 0 || !strings.Contains(h[0], "LoadCredentialEncrypted="+name+":"+file+" ") {
		t.Errorf("the hint for a missing credential, %q, does not name the drop-in's line", h)
	}
}
