package vaulttest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// KVMount is the KV v2 mount dev mode creates.
const KVMount = "secret"

// ReadPolicy returns a policy that lets a token read the KV v2 entries under
// mount/path and their metadata, and list them: what sealrelay needs.
func ReadPolicy(mount, path string) string {
	return fmt.Sprintf(`
path "%[1]s/data/%[2]s/*" { capabilities = ["read"] }
path "%[1]s/metadata/%[2]s/*" { capabilities = ["read", "list"] }
`, mount, path)
}

// WritePolicy returns a policy that also allows writing entries under
// mount/path (for `creds set --vault`).
func WritePolicy(mount, path string) string {
	return ReadPolicy(mount, path) + fmt.Sprintf(`
path "%[1]s/data/%[2]s/*" { capabilities = ["create", "update", "read"] }
`, mount, path)
}

func fatal(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("vaulttest: %s: %v", what, err)
	}
}

// Put writes data to the KV v2 entry at path under the secret/ mount and
// returns its new version.
func (s *Server) Put(t testing.TB, path string, data map[string]any) int {
	t.Helper()
	kv, err := s.Client.KVv2(KVMount).Put(context.Background(), path, data)
	fatal(t, "writing "+KVMount+"/"+path, err)
	return kv.VersionMetadata.Version
}

// PutCredential writes username and password to the entry at path.
func (s *Server) PutCredential(t testing.TB, path, username, password string) int {
	t.Helper()
	return s.Put(t, path, map[string]any{"username": username, "password": password})
}

// Policy creates or replaces a policy.
func (s *Server) Policy(t testing.TB, name, hcl string) {
	t.Helper()
	fatal(t, "writing policy "+name, s.Client.Sys().PutPolicy(name, hcl))
}

// EnableAuth enables an auth method (kind "approle", "kubernetes"...) at
// mount, if it is not enabled there yet.
func (s *Server) EnableAuth(t testing.TB, mount, kind string) {
	t.Helper()
	auths, err := s.Client.Sys().ListAuth()
	fatal(t, "listing auth methods", err)
	if _, ok := auths[mount+"/"]; ok {
		return
	}
	err = s.Client.Sys().EnableAuthWithOptions(mount, &api.EnableAuthOptions{Type: kind})
	if err != nil && strings.Contains(err.Error(), "path is already in use") {
		return // a parallel test enabled it first
	}
	fatal(t, "enabling auth "+kind+" at "+mount, err)
}

// AppRole describes an AppRole role.
type AppRole struct {
	Mount       string        // default "approle"; enabled if needed
	Name        string        // role name
	RoleID      string        // fixed role ID; "" lets Vault choose
	Policies    []string      // token policies
	TokenTTL    time.Duration // 0: Vault's default
	TokenMaxTTL time.Duration // 0: Vault's default
	// SecretIDNumUses limits how often one secret ID may log in (0: no limit).
	SecretIDNumUses int
}

// CreateAppRole creates (or replaces) the role and returns its role ID.
func (s *Server) CreateAppRole(t testing.TB, r AppRole) string {
	t.Helper()
	if r.Mount == "" {
		r.Mount = "approle"
	}
	s.EnableAuth(t, r.Mount, "approle")
	data := map[string]any{
		"token_policies":     strings.Join(r.Policies, ","),
		"secret_id_num_uses": r.SecretIDNumUses,
	}
	if r.TokenTTL > 0 {
		data["token_ttl"] = int(r.TokenTTL.Seconds())
	}
	if r.TokenMaxTTL > 0 {
		data["token_max_ttl"] = int(r.TokenMaxTTL.Seconds())
	}
	rolePath := fmt.Sprintf("auth/%s/role/%s", r.Mount, r.Name)
	_, err := s.Client.Logical().Write(rolePath, data)
	fatal(t, "creating role "+rolePath, err)
	if r.RoleID != "" {
		_, err := s.Client.Logical().Write(rolePath+"/role-id", map[string]any{"role_id": r.RoleID})
		fatal(t, "setting role ID of "+rolePath, err)
		return r.RoleID
	}
	sec, err := s.Client.Logical().Read(rolePath + "/role-id")
	fatal(t, "reading role ID of "+rolePath, err)
	return sec.Data["role_id"].(string)
}

// SecretID issues a new secret ID for role at mount ("" means "approle").
// With id != "" it registers that value (a custom secret ID), which lets a
// Seed function put back the same secret ID after a Restart.
func (s *Server) SecretID(t testing.TB, mount, role, id string) string {
	t.Helper()
	if mount == "" {
		mount = "approle"
	}
	if id != "" {
		_, err := s.Client.Logical().Write(fmt.Sprintf("auth/%s/role/%s/custom-secret-id", mount, role), map[string]any{"secret_id": id})
		fatal(t, "registering a custom secret ID for "+role, err)
		return id
	}
	sec, err := s.Client.Logical().Write(fmt.Sprintf("auth/%s/role/%s/secret-id", mount, role), nil)
	fatal(t, "issuing a secret ID for "+role, err)
	return sec.Data["secret_id"].(string)
}

// WrappedSecretID issues a new secret ID for role, response-wrapped: it
// returns the single-use wrapping token, valid for ttl.
func (s *Server) WrappedSecretID(t testing.TB, mount, role string, ttl time.Duration) string {
	t.Helper()
	if mount == "" {
		mount = "approle"
	}
	c, err := s.Client.Clone()
	fatal(t, "cloning client", err)
	c.SetToken(RootToken)
	c.SetWrappingLookupFunc(func(string, string) string { return ttl.String() })
	sec, err := c.Logical().Write(fmt.Sprintf("auth/%s/role/%s/secret-id", mount, role), nil)
	fatal(t, "issuing a wrapped secret ID for "+role, err)
	if sec == nil || sec.WrapInfo == nil {
		t.Fatalf("vaulttest: the secret ID for %s came back unwrapped", role)
	}
	return sec.WrapInfo.Token
}

// Token describes a token to create with the root token.
type Token struct {
	ID              string        // fixed token ID; "" lets Vault choose
	Policies        []string      // policies; the default policy is added unless NoDefaultPolicy
	NoDefaultPolicy bool          // leave out the default policy
	TTL             time.Duration // 0: the mount's default (32 days in dev mode)
	ExplicitMaxTTL  time.Duration // 0: none
	NotRenewable    bool
}

// CreateToken creates a token and returns it.
func (s *Server) CreateToken(t testing.TB, spec Token) string {
	t.Helper()
	renewable := !spec.NotRenewable
	req := &api.TokenCreateRequest{
		ID:              spec.ID,
		Policies:        spec.Policies,
		NoDefaultPolicy: spec.NoDefaultPolicy,
		Renewable:       &renewable,
	}
	if spec.TTL > 0 {
		req.TTL = spec.TTL.String()
	}
	if spec.ExplicitMaxTTL > 0 {
		req.ExplicitMaxTTL = spec.ExplicitMaxTTL.String()
	}
	sec, err := s.Client.Auth().Token().Create(req)
	fatal(t, "creating a token", err)
	return sec.Auth.ClientToken
}

// RevokeToken revokes a token (and its children).
func (s *Server) RevokeToken(t testing.TB, token string) {
	t.Helper()
	fatal(t, "revoking a token", s.Client.Auth().Token().RevokeTree(token))
}

// RevokeLogins revokes every token issued by logins to the auth method at
// mount (e.g. "approle"): the tokens a client under test holds.
func (s *Server) RevokeLogins(t testing.TB, mount string) {
	t.Helper()
	fatal(t, "revoking logins to "+mount, s.Client.Sys().RevokePrefix("auth/"+mount+"/login"))
}
