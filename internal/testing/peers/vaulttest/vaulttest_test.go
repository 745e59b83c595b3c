package vaulttest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// Seed functions run at once and after every Restart, on the same address;
// Stop leaves nothing listening.
func TestRestartSeedsAgain(t *testing.T) {
	s := Start(t)
	runs := 0
	s.Seed(t, func(t testing.TB, s *Server) {
		runs++
		s.PutCredential(t, "sealrelay/primary", "u", "p")
		s.CreateToken(t, Token{ID: "fixed-token", Policies: []string{"default"}, TTL: time.Minute})
	})
	addr := s.Addr
	s.Restart(t)
	if runs != 2 || s.Addr != addr {
		t.Fatalf("after Restart: %d seed runs, address %s (was %s); want 2 runs, the same address", runs, s.Addr, addr)
	}
	kv, err := s.Client.KVv2(KVMount).Get(context.Background(), "sealrelay/primary")
	if err != nil || kv.Data["username"] != "u" || kv.VersionMetadata.Version != 1 {
		t.Fatalf("entry after Restart: %v, %v; want the seeded one at version 1 (a fresh server)", kv, err)
	}
	c, err := NewClient(s.Addr, "fixed-token")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Auth().Token().LookupSelf(); err != nil {
		t.Errorf("the re-seeded token with a fixed ID does not work: %v", err)
	}

	s.Stop()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "http://"), time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("something still listens on %s after Stop", addr)
	}
}

func TestWrappedSecretID(t *testing.T) {
	s := Start(t)
	roleID := s.CreateAppRole(t, AppRole{Name: "r", RoleID: "role-1", Policies: []string{"default"}})
	wrap := s.WrappedSecretID(t, "", "r", time.Minute)
	c, err := NewClient(s.Addr, wrap)
	if err != nil {
		t.Fatal(err)
	}
	sec, err := c.Logical().Unwrap("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": sec.Data["secret_id"]}); err != nil {
		t.Errorf("login with the unwrapped secret ID: %v", err)
	}
	if _, err := c.Logical().Unwrap(""); err == nil {
		t.Errorf("a wrapping token worked twice")
	}
}
