package vault

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// deadAddr returns the address of a port nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	return "http://" + testlib.RefusedAddr(t)
}

// Vault stopped mid-run: reads fail with "connection refused"; once it is
// back (empty, as dev mode is, and seeded again), the Source logs in again
// by itself and reads work. Then a sealed Vault is reported as such.
func TestVaultStoppedAndRestarted(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	const (
		roleID   = "3a9c2a52-6f0b-4c0e-9b1e-000000000001"
		secretID = "3a9c2a52-6f0b-4c0e-9b1e-000000000002"
	)
	v.Seed(t, func(t testing.TB, v *vaulttest.Server) {
		v.Policy(t, "relay", vaulttest.ReadPolicy(vaulttest.KVMount, "sealrelay"))
		v.CreateAppRole(t, vaulttest.AppRole{Name: "relay", RoleID: roleID, Policies: []string{"relay"}})
		v.SecretID(t, "", "relay", secretID)
		v.PutCredential(t, "sealrelay/primary", "restart@example.com", "pw-restart")
	})
	dir := t.TempDir()
	s, logs := newSource(t, Config{Address: v.Addr, Auth: "approle",
		RoleIDFile:   writeFile(t, dir, "role-id", roleID, 0o600),
		SecretIDFile: writeFile(t, dir, "secret-id", secretID, 0o600)})
	logs.forbid(secretID, "pw-restart")
	if err := start(t, s); err != nil {
		t.Fatal(err)
	}
	fetchOne(t, s, "primary")

	v.Stop()
	_, err := s.Fetch(ctx(t), []string{"primary"})
	wantErr(t, err, "secret/data/sealrelay/primary: connection refused: vault at "+v.Addr)
	if !errors.Is(err, ErrConnRefused) {
		t.Errorf("not ErrConnRefused: %v", err)
	}
	if h := hintOf(err); !strings.Contains(h, "check that vault runs and listens at "+v.Addr) {
		t.Errorf("hint %q", h)
	}
	_, err = s.Versions(ctx(t), []string{"primary"})
	wantErr(t, err, "secret/metadata/sealrelay/primary: connection refused")

	v.Restart(t)
	if user, _, _ := fetchOne(t, s, "primary"); user != "restart@example.com" {
		t.Errorf("username %q after the restart", user)
	}

	if err := v.Client.Sys().Seal(); err != nil {
		t.Fatal(err)
	}
	_, err = s.Fetch(ctx(t), []string{"primary"})
	wantErr(t, err, "secret/data/sealrelay/primary: vault is sealed: vault at "+v.Addr)
	if !errors.Is(err, ErrSealed) {
		t.Errorf("not ErrSealed: %v", err)
	}
}

// With several addresses, a node that refuses connections is skipped.
func TestFailover(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	file, token := readToken(t, path, vaulttest.Token{})
	shared.PutCredential(t, path+"/primary", "failover@example.com", "pw-failover")
	dead := deadAddr(t)
	s, logs := newSource(t, Config{Addresses: []string{dead, shared.Addr}, Path: path, Auth: "token", TokenFile: file})
	logs.forbid(token, "pw-failover")
	if err := start(t, s); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if user, _, _ := fetchOne(t, s, "primary"); user != "failover@example.com" {
		t.Errorf("username %q", user)
	}
	if logs.count(fmt.Sprintf("from=%s to=%s", dead, shared.Addr)) != 1 {
		t.Errorf("the switch is not logged once:\n%s", logs)
	}
	if want := "vault " + dead + "," + shared.Addr + " secret/" + path; s.String() != want {
		t.Errorf("String() = %q, want %q", s.String(), want)
	}

	// When every node is down, the error names them all.
	dead2 := deadAddr(t)
	s, _ = newSource(t, Config{Addresses: []string{dead, dead2}, Path: path, Auth: "token", TokenFile: file})
	_, err := s.Fetch(ctx(t), []string{"primary"})
	wantErr(t, err, "auth/token/lookup-self: connection refused: vault at "+dead+", "+dead2)
}
