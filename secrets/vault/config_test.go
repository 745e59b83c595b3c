package vault

import (
	"context"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/keys"
)

func TestNewErrors(t *testing.T) {
	t.Parallel()
	notPEM := writeFile(t, t.TempDir(), "ca.pem", "not a certificate", 0o644)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no address", Config{}, "vault: no address configured (address)"},
		{"bad address", Config{Address: "vault.example.com:8200"}, `vault: address "vault.example.com:8200" is not an http:// or https:// URL`},
		{"unknown auth", Config{Address: "https://v:8200", Auth: "ldap"}, `vault: auth = "ldap": want token, approle or kubernetes`},
		{"approle files", Config{Address: "https://v:8200", Auth: "approle", RoleIDFile: "r"}, `vault: auth = "approle" needs role_id_file and secret_id_file`},
		{"kubernetes role", Config{Address: "https://v:8200", Auth: "kubernetes"}, `vault: auth = "kubernetes" needs kubernetes_role`},
		{"sealed identity", Config{Address: "https://v:8200", Sealed: true}, "vault: sealed = true needs this server's identity to open the entries"},
		{"ca file missing", Config{Address: "https://v:8200", Auth: "token", CAFile: "/nonexistent/ca.pem"}, "vault: reading ca_file: open /nonexistent/ca.pem: no such file or directory"},
		{"ca file not pem", Config{Address: "https://v:8200", Auth: "token", CAFile: notPEM}, "vault: ca_file " + notPEM + ": no PEM certificate found"},
		{"settings unset", Config{Address: "https://v:8200", Auth: "kubernetes", KubernetesRole: "r"}, "vault: not set: mount, path, timeout, kubernetes_mount, jwt_file"},
		{"approle mount unset", withSettings(Config{Address: "https://v:8200", Auth: "approle", RoleIDFile: "r", SecretIDFile: "s", AppRoleMount: "/"}), "vault: not set: approle_mount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || err.Error() != tc.want {
				t.Errorf("New: %v\nwant: %s", err, tc.want)
			}
		})
	}
}

func TestStartTwice(t *testing.T) {
	t.Parallel()
	_, log := newLogs(t)
	s, err := New(withSettings(Config{Address: "http://127.0.0.1:1", Auth: "token", TokenFile: "/nonexistent", Logger: log}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = s.Start(ctx)
	wantErr(t, err, "opening vault token file: open /nonexistent: no such file or directory")
	wantErr(t, s.Start(ctx), "vault: source already started")
}

// Example shows a Source reading sealed entries with AppRole auth, as the
// agent sets it up from [credentials.vault].
func Example() {
	id, err := keys.Load("/etc/sealrelay/identity.txt")
	if err != nil {
		panic(err)
	}
	src, err := New(Config{
		Addresses:    []string{"https://vault1.example.com:8200", "https://vault2.example.com:8200"},
		Mount:        "secret",
		Path:         "sealrelay",
		Auth:         "approle",
		AppRoleMount: "approle",
		RoleIDFile:   "/etc/sealrelay/vault-role-id",
		SecretIDFile: "/etc/sealrelay/vault-secret-id",
		Sealed:       true,
		Identity:     id,
		Timeout:      10 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := src.Start(ctx); err != nil {
		// Logged; the Source keeps trying in the background.
		_ = err
	}
	creds, err := src.Fetch(ctx, []string{"primary"})
	if err != nil {
		panic(err)
	}
	_ = creds["primary"] // prints as Credential{... Password:[redacted] ...}
}
