package vault

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
)

// appRole sets up, for this test only, an AppRole mount and a role whose
// tokens may read the test's path. It returns the mount, the role name and
// a 0600 role ID file.
func appRole(t *testing.T, path string, r vaulttest.AppRole) (mount, role, roleIDFile string) {
	t.Helper()
	name := strings.ReplaceAll(path, "/", "-")
	shared.Policy(t, name, vaulttest.WritePolicy(vaulttest.KVMount, path))
	r.Mount, r.Name, r.Policies = "ar-"+name, name, []string{name}
	roleID := shared.CreateAppRole(t, r)
	return r.Mount, name, writeFile(t, t.TempDir(), "role-id", roleID, 0o600)
}

func TestAppRolePlainSecretID(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	mount, role, roleIDFile := appRole(t, path, vaulttest.AppRole{})
	secretID := shared.SecretID(t, mount, role, "")
	secretIDFile := writeFile(t, t.TempDir(), "secret-id", secretID, 0o600)
	shared.PutCredential(t, path+"/primary", "approle@example.com", "pw-approle")
	s, logs := newSource(t, Config{Path: path, Auth: "approle", AppRoleMount: mount,
		RoleIDFile: roleIDFile, SecretIDFile: secretIDFile})
	logs.forbid(secretID, "pw-approle")
	if err := start(t, s); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if user, pw, _ := fetchOne(t, s, "primary"); user != "approle@example.com" || pw != "pw-approle" {
		t.Errorf("got %q %q", user, pw)
	}

	// A revoked token leads to a fresh login, and the read succeeds.
	shared.RevokeLogins(t, mount)
	fetchOne(t, s, "primary")
	// (Either the read or the token's watcher, whichever saw it first.)
	if n := logs.count(`msg="logged in to vault"`); n != 2 {
		t.Errorf("%d logins logged, want the first and one after the revocation:\n%s", n, logs)
	}
}

func TestAppRoleLoginRefused(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	mount, role, roleIDFile := appRole(t, path, vaulttest.AppRole{})
	dir := t.TempDir()

	wrong := writeFile(t, dir, "wrong", "00000000-0000-0000-0000-000000000000", 0o600)
	s, _ := newSource(t, Config{Path: path, Auth: "approle", AppRoleMount: mount, RoleIDFile: roleIDFile, SecretIDFile: wrong})
	err := start(t, s)
	wantErr(t, err, "auth/"+mount+"/login: vault login failed: ")
	if !errors.Is(err, ErrLoginFailed) {
		t.Errorf("not ErrLoginFailed: %v", err)
	}
	if h := hintOf(err); h != "check the role ID in "+roleIDFile+" and the secret ID in "+wrong {
		t.Errorf("hint %q", h)
	}

	// A wrapping token in a file configured as a plain secret ID.
	wrap := shared.WrappedSecretID(t, mount, role, time.Minute)
	wrapFile := writeFile(t, dir, "wrap", wrap, 0o600)
	s, _ = newSource(t, Config{Path: path, Auth: "approle", AppRoleMount: mount, RoleIDFile: roleIDFile, SecretIDFile: wrapFile})
	err = start(t, s)
	wantErr(t, err, "vault login failed")
	if h := hintOf(err); !strings.Contains(h, "set secret_id_wrapped = true") {
		t.Errorf("hint %q does not say to set secret_id_wrapped", h)
	}
	if strings.Contains(err.Error(), wrap) {
		t.Errorf("error quotes the wrapping token")
	}
}

// A response-wrapped secret ID is unwrapped once; the secret ID stays in
// memory for later logins; a used wrapping token gives a clear error; a
// fresh one in the file is taken up.
func TestAppRoleWrappedSecretID(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	// Two logins per secret ID: the second login is the re-login below.
	mount, role, roleIDFile := appRole(t, path, vaulttest.AppRole{SecretIDNumUses: 2})
	wrap := shared.WrappedSecretID(t, mount, role, time.Minute)
	secretIDFile := writeFile(t, t.TempDir(), "secret-id", wrap, 0o600)
	shared.PutCredential(t, path+"/primary", "wrapped@example.com", "pw-wrapped")
	cfg := Config{Path: path, Auth: "approle", AppRoleMount: mount,
		RoleIDFile: roleIDFile, SecretIDFile: secretIDFile, SecretIDWrapped: true}
	s, logs := newSource(t, cfg)
	logs.forbid(wrap, "pw-wrapped")
	if err := start(t, s); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if user, _, _ := fetchOne(t, s, "primary"); user != "wrapped@example.com" {
		t.Errorf("username %q", user)
	}

	// Another agent (or this one restarted) finds the wrapping token used.
	// (It is not started, so it does not retry in the background.)
	s2, _ := newSource(t, cfg)
	_, err := s2.Fetch(ctx(t), []string{"primary"})
	wantErr(t, err, "sys/wrapping/unwrap: wrapping token already used: the secret ID wrapping token in "+
		secretIDFile+" was already used (or has expired); put a fresh wrapped secret ID there")
	if !errors.Is(err, ErrWrapTokenUsed) {
		t.Errorf("not ErrWrapTokenUsed: %v", err)
	}

	// The first Source logs in again with the secret ID it kept.
	shared.RevokeLogins(t, mount)
	fetchOne(t, s, "primary")

	// Now the secret ID is used up, and the file still holds the used
	// wrapping token.
	shared.RevokeLogins(t, mount)
	_, err = s.Fetch(ctx(t), []string{"primary"})
	wantErr(t, err, "secret/data/"+path+"/primary: ", "was already used (or has expired); put a fresh wrapped secret ID there")

	// A fresh wrapping token in the file is unwrapped at the next login.
	wrap2 := shared.WrappedSecretID(t, mount, role, time.Minute)
	logs.forbid(wrap2)
	if err := os.WriteFile(secretIDFile, []byte(wrap2), 0o600); err != nil {
		t.Fatal(err)
	}
	fetchOne(t, s, "primary")
}

// Tokens with a TTL of 3s and a max TTL of 8s: the Source renews them, logs
// in again when the max TTL ends them, and every read in 15s succeeds.
func TestAppRoleRenewalAndRelogin(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	mount, role, roleIDFile := appRole(t, path, vaulttest.AppRole{TokenTTL: 3 * time.Second, TokenMaxTTL: 8 * time.Second})
	secretIDFile := writeFile(t, t.TempDir(), "secret-id", shared.SecretID(t, mount, role, ""), 0o600)
	shared.PutCredential(t, path+"/primary", "u", "pw-relogin")
	s, logs := newSource(t, Config{Path: path, Auth: "approle", AppRoleMount: mount,
		RoleIDFile: roleIDFile, SecretIDFile: secretIDFile})
	logs.forbid("pw-relogin")
	if err := start(t, s); err != nil {
		t.Fatal(err)
	}
	pollFetch(t, s, "primary", 15*time.Second)
	if n := logs.count("vault token renewed"); n < 1 {
		t.Errorf("no renewal logged:\n%s", logs)
	}
	if n := logs.count(`msg="logged in to vault"`); n < 2 {
		t.Errorf("%d logins logged in 15s of tokens with a max TTL of 8s, want at least 2:\n%s", n, logs)
	}
	if n := logs.count(`reason="token reached the end of its lifetime"`); n < 1 {
		t.Errorf("no re-login at the max TTL logged:\n%s", logs)
	}
	if n := logs.count("vault login failed"); n > 0 {
		t.Errorf("login failures logged:\n%s", logs)
	}
}
