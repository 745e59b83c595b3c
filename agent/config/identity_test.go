package config

import (
	"strings"
	"testing"
)

// TestIdentityCredential: identity = "credential:NAME" names a systemd
// credential. It is kept as written (not taken as a path relative to the
// config file), and a NAME systemd would not accept is refused, naming the
// file and the key.
func TestIdentityCredential(t *testing.T) {
	const base = `
[[relay]]
address = "smtp.example.com:587"
credential = "primary"

[credentials]
`
	c, err := Parse([]byte(base+`identity = "credential:sealrelay.identity"`+"\n"), "/etc/sr/sealrelay.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Credentials.Identity != "credential:sealrelay.identity" {
		t.Errorf("identity %q, want it as written", c.Credentials.Identity)
	}
	// A file whose name merely contains the word stays a relative path.
	c, err = Parse([]byte(base+`identity = "my-credential:x"`+"\n"), "/etc/sr/sealrelay.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Credentials.Identity != "/etc/sr/my-credential:x" {
		t.Errorf("identity %q, want a path relative to the config", c.Credentials.Identity)
	}

	for _, bad := range []string{"credential:", "credential:a/b", "credential:a:b", "credential:..", "credential:tab\\there"} {
		_, err := Parse([]byte(base+`identity = "`+bad+`"`+"\n"), "c.toml")
		want := "c.toml: credentials.identity: "
		if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "does not name a systemd credential") {
			t.Errorf("identity = %q: error %v, want %q... does not name a systemd credential", bad, err, want)
		}
	}
	// The same holds for sealed Vault values, which use the identity too.
	_, err = Parse([]byte(`
[[relay]]
address = "smtp.example.com:587"
credential = "primary"

[credentials]
source = "vault"
identity = "credential:a/b"
[credentials.vault]
address = "https://vault.example.com:8200"
auth = "token"
sealed = true
`), "v.toml")
	if err == nil || !strings.Contains(err.Error(), "v.toml: credentials.identity: ") {
		t.Errorf("vault: error %v", err)
	}
}
