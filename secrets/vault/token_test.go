package vault

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/keys"
)

func TestTokenFileRead(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	file, token := readToken(t, path, vaulttest.Token{})
	version := shared.PutCredential(t, path+"/primary", "relay@example.com", "pw-token-read")
	s, logs := newSource(t, Config{Path: path, Auth: "token", TokenFile: file})
	logs.forbid(token, "pw-token-read")
	if err := start(t, s); err != nil {
		t.Fatalf("Start: %v", err)
	}
	user, pw, ver := fetchOne(t, s, "primary")
	if user != "relay@example.com" || pw != "pw-token-read" || ver != strconv.Itoa(version) {
		t.Errorf("got %q %q version %q, want relay@example.com, the password, version %d", user, pw, ver, version)
	}
	if want := "vault " + shared.Addr + " secret/" + path; s.String() != want {
		t.Errorf("String() = %q, want %q", s.String(), want)
	}
}

func TestTokenFromEnvironment(t *testing.T) {
	path := testPath(t)
	_, token := readToken(t, path, vaulttest.Token{})
	shared.PutCredential(t, path+"/primary", "env@example.com", "pw-env")
	t.Setenv("VAULT_TOKEN", token)
	s, _ := newSource(t, Config{Path: path, Auth: "token"})
	if user, _, _ := fetchOne(t, s, "primary"); user != "env@example.com" {
		t.Errorf("username %q, want env@example.com", user)
	}

	t.Setenv("VAULT_TOKEN", "")
	s, _ = newSource(t, Config{Path: path, Auth: "token"})
	_, err := s.Fetch(ctx(t), []string{"primary"})
	wantErr(t, err, "secret/data/"+path+"/primary", "token_file is not set and VAULT_TOKEN is empty")
}

// Files that hold a token, role ID, secret ID or JWT are refused when group
// or others can read them, before anything is sent to Vault.
func TestSecretFilePermissions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	loose := writeFile(t, dir, "loose", "hvs.not-a-real-token-but-secret", 0o644)
	tight := writeFile(t, dir, "tight", "some-id", 0o600)
	// Kubernetes mounts the service account token 0644: only a token others
	// could write is refused.
	writable := writeFile(t, dir, "writable", "hvs.not-a-real-token-but-secret", 0o666)
	for _, tc := range []struct {
		name string
		cfg  Config
		what string
		file string
	}{
		{"token", Config{Auth: "token", TokenFile: loose}, "vault token file", loose},
		{"role-id", Config{Auth: "approle", RoleIDFile: loose, SecretIDFile: tight}, "approle role ID file", loose},
		{"secret-id", Config{Auth: "approle", RoleIDFile: tight, SecretIDFile: loose}, "approle secret ID file", loose},
		{"jwt", Config{Auth: "kubernetes", KubernetesRole: "r", JWTFile: writable}, "kubernetes service account token file", writable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loose := tc.file
			s, _ := newSource(t, tc.cfg)
			err := start(t, s)
			mode := "0644"
			if loose == writable {
				mode = "0666"
			}
			wantErr(t, err, tc.what+" "+loose+" is accessible by group or others (mode "+mode+"); refusing to use it")
			var pe *PermissionError
			if !errors.As(err, &pe) {
				t.Errorf("error %T is not a *PermissionError", err)
			}
			hint := "make it readable by its owner only: chmod 600 " + loose
			if loose == writable {
				hint = "make it writable by its owner only: chmod go-w " + loose
			}
			if h := hintOf(err); h != hint {
				t.Errorf("hint %q, want %q", h, hint)
			}
			if strings.Contains(err.Error(), "hvs.not-a-real") {
				t.Errorf("error quotes the file: %v", err)
			}
		})
	}
}

// TestSecretFileOwners: token, role ID, secret ID and service account
// token files owned by a user other than this one and root are refused,
// as ssh refuses such keys, before anything is sent to Vault; so are those
// in a directory others can write.
func TestSecretFileOwners(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("giving a file to another user (chown) needs root; TestSecretFilePermissions checks the modes")
	}
	dir := t.TempDir()
	theirs := writeFile(t, dir, "theirs", "hvs.not-a-real-token-but-secret", 0o600)
	if err := os.Chown(theirs, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	tight := writeFile(t, dir, "tight", "some-id", 0o600)
	openDir := filepath.Join(dir, "open")
	if err := os.Mkdir(openDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openDir, 0o777); err != nil {
		t.Fatal(err)
	}
	replaceable := writeFile(t, openDir, "token", "hvs.not-a-real-token-but-secret", 0o600)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
		hint string
	}{
		{"token", Config{Auth: "token", TokenFile: theirs}, "vault token file " + theirs + " is owned by uid 4242, not by uid 0", "chown 0 " + theirs},
		{"role-id", Config{Auth: "approle", RoleIDFile: theirs, SecretIDFile: tight}, "approle role ID file " + theirs + " is owned by uid 4242", "chown 0 " + theirs},
		{"secret-id", Config{Auth: "approle", RoleIDFile: tight, SecretIDFile: theirs}, "approle secret ID file " + theirs + " is owned by uid 4242", "chown 0 " + theirs},
		{"jwt", Config{Auth: "kubernetes", KubernetesRole: "r", JWTFile: theirs}, "kubernetes service account token file " + theirs + " is owned by uid 4242", "chown 0 " + theirs},
		{"token in an open directory", Config{Auth: "token", TokenFile: replaceable}, "vault token file " + replaceable + ": directory " + openDir + " is writable by group or others (mode 0777)", "chmod go-w " + openDir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, l := newSource(t, tc.cfg)
			err := start(t, s)
			wantErr(t, err, tc.want)
			if !errors.Is(err, keys.ErrUnsafeFile) {
				t.Errorf("error %T is not keys.ErrUnsafeFile", err)
			}
			if h := hintOf(err); !strings.Contains(h, tc.hint) {
				t.Errorf("hint %q, want it to contain %q", h, tc.hint)
			}
			if strings.Contains(err.Error()+l.String(), "hvs.not-a-real") {
				t.Errorf("error or log quotes the file: %v", err)
			}
		})
	}
}

// A Kubernetes service account token mounted 0644, as Kubernetes does by
// default, passes the mode check (the login then goes to Vault).
func TestKubernetesTokenMode0644Accepted(t *testing.T) {
	t.Parallel()
	jwt := writeFile(t, t.TempDir(), "token", "eyJhbGciOi.not-a-real-jwt", 0o644)
	s, _ := newSource(t, Config{Auth: "kubernetes", KubernetesRole: "r", JWTFile: jwt})
	err := start(t, s)
	var pe *PermissionError
	if errors.As(err, &pe) {
		t.Fatalf("a 0644 service account token was refused: %v", err)
	}
	if err == nil {
		t.Fatal("login with a made-up JWT succeeded")
	}
}

// Token auth cannot log in again: a revoked token is an error that says
// so, until the file holds a valid token.
func TestTokenRevoked(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	file, token := readToken(t, path, vaulttest.Token{})
	shared.PutCredential(t, path+"/primary", "u", "pw-revoked")
	s, logs := newSource(t, Config{Path: path, Auth: "token", TokenFile: file})
	logs.forbid(token, "pw-revoked")
	if err := start(t, s); err != nil {
		t.Fatal(err)
	}
	fetchOne(t, s, "primary")

	shared.RevokeToken(t, token)
	_, err := s.Fetch(ctx(t), []string{"primary"})
	wantErr(t, err, "secret/data/"+path+"/primary", "vault token revoked or expired",
		"the token from "+file+" was revoked or has expired, and token auth cannot log in again")
	if !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("error is not ErrTokenInvalid: %v", err)
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("error contains the token")
	}
	if h := hintOf(err); !strings.Contains(h, "put a valid token in "+file) {
		t.Errorf("hint %q", h)
	}

	// A new token in the file is picked up without a restart.
	_, token2 := readToken(t, path, vaulttest.Token{})
	logs.forbid(token2)
	if err := os.WriteFile(file, []byte(token2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fetchOne(t, s, "primary")
}

// A token with a TTL of 3s keeps working across several TTLs because the
// Source renews it (token auth has no other way to stay logged in).
func TestTokenRenewal(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	file, token := readToken(t, path, vaulttest.Token{TTL: 3 * time.Second})
	shared.PutCredential(t, path+"/primary", "u", "pw-renew")
	s, logs := newSource(t, Config{Path: path, Auth: "token", TokenFile: file})
	logs.forbid(token, "pw-renew")
	if err := start(t, s); err != nil {
		t.Fatal(err)
	}
	pollFetch(t, s, "primary", 10*time.Second)
	if n := logs.count("vault token renewed"); n < 2 {
		t.Errorf("%d renewals logged in 10s of a 3s token, want at least 2:\n%s", n, logs)
	}
	if n := logs.count("vault login failed"); n > 0 {
		t.Errorf("login failures logged:\n%s", logs)
	}
}

// pollFetch fetches name every 500ms for d; every fetch must succeed.
func pollFetch(t *testing.T, s *Source, name string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	n := 0
	for time.Now().Before(deadline) {
		if _, err := s.Fetch(ctx(t), []string{name}); err != nil {
			t.Fatalf("fetch %d (after %v): %v", n, d-time.Until(deadline), err)
		}
		n++
		time.Sleep(500 * time.Millisecond)
	}
}
