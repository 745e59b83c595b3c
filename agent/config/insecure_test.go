package config

import (
	"strings"
	"testing"
)

// plainRelay is a relay with AUTH allowed without TLS, at addr, with extra
// keys; the [[relay]] header is on line 2.
func plainRelay(addr, extra string) string {
	return `hostname = "h"
[[relay]]
address = "` + addr + `"
credential = "primary"
tls = "none"
allow_plaintext_auth = true
` + extra
}

// vaultAt is a config reading credentials from Vault at addr, with extra
// keys in [credentials.vault] (whose header is on line 9).
func vaultAt(addr, extra string) string {
	return `hostname = "h"
[[relay]]
address = "smtp.example.com:587"
credential = "primary"

[credentials]
source = "vault"

[credentials.vault]
address = "` + addr + `"
` + extra
}

func TestInsecureSettingsRefused(t *testing.T) {
	cases := []struct {
		name, toml, want string
	}{
		{"plaintext auth to a remote host", plainRelay("smtp.example.com:25", ""),
			`c.toml:6: relay[0].allow_plaintext_auth: AUTH without TLS is allowed only to a loopback relay (127.0.0.0/8, ::1, localhost), not "smtp.example.com"; ` +
				`set insecure_plaintext_auth_to_remote = true to send the password in clear to it anyway`},
		{"plaintext auth to a remote address", plainRelay("192.0.2.1:25", ""), `c.toml:6: relay[0].allow_plaintext_auth: AUTH without TLS is allowed only to a loopback relay (127.0.0.0/8, ::1, localhost), not "192.0.2.1"`},
		{"plaintext auth to a v4-mapped remote address", plainRelay("[::ffff:192.0.2.1]:25", ""), `c.toml:6: relay[0].allow_plaintext_auth: AUTH without TLS is allowed only to a loopback relay`},
		{"plaintext auth to a name that may resolve to loopback", plainRelay("localhost.example.com:25", ""), `not "localhost.example.com"`},
		{"second relay", plainRelay("127.0.0.1:25", "[[relay]]\nname = \"b\"\naddress = \"10.0.0.1:25\"\ntls = \"none\"\ncredential = \"primary\"\n\nallow_plaintext_auth = true\n"),
			`c.toml:13: relay[1].allow_plaintext_auth: AUTH without TLS is allowed only to a loopback relay (127.0.0.0/8, ::1, localhost), not "10.0.0.1"`},
		{"insecure option without plaintext auth", "[[relay]]\naddress = \"smtp.example.com:25\"\ninsecure_plaintext_auth_to_remote = true\n",
			`c.toml:3: relay[0].insecure_plaintext_auth_to_remote: has no effect without allow_plaintext_auth = true`},
		{"insecure option for a loopback relay", plainRelay("127.0.0.1:25", "insecure_plaintext_auth_to_remote = true\n"),
			`c.toml:7: relay[0].insecure_plaintext_auth_to_remote: has no effect: the relay is on loopback`},
		{"vault http to a remote host", vaultAt("http://vault.example.com:8200", ""),
			`c.toml:10: credentials.vault.address: http:// is allowed only to a loopback Vault (127.0.0.0/8, ::1, localhost), not "vault.example.com": ` +
				`the token and the credentials would cross the network in clear; use https://, or set insecure_http = true`},
		{"vault http in addresses", vaultAt("https://vault.example.com:8200", "addresses = [\"https://v2.example.com\", \"HTTP://10.1.1.1:8200\"]\n"),
			`c.toml:11: credentials.vault.addresses[1]: http:// is allowed only to a loopback Vault (127.0.0.0/8, ::1, localhost), not "10.1.1.1"`},
		{"vault insecure_http unused", vaultAt("https://vault.example.com:8200", "insecure_http = true\n"),
			`c.toml:11: credentials.vault.insecure_http: has no effect: no address is http:// to a host other than loopback`},
		{"vault insecure_http for loopback", vaultAt("http://127.0.0.1:8200", "insecure_http = true\n"),
			`c.toml:11: credentials.vault.insecure_http: has no effect`},
	}
	t.Setenv("VAULT_ADDR", "")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.toml), "c.toml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestInsecureVaultAddrFromEnvironment(t *testing.T) {
	t.Setenv("VAULT_ADDR", "http://vault.example.com:8200")
	_, err := Parse([]byte(minimal+"[credentials]\nsource = \"vault\"\n"), "c.toml")
	want := `c.toml: credentials.vault.address: VAULT_ADDR: http:// is allowed only to a loopback Vault (127.0.0.0/8, ::1, localhost), not "vault.example.com"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v\nwant it to contain %q", err, want)
	}
}

func TestInsecureSettingsAccepted(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	cases := []struct {
		name, toml string
		warnings   []string // each InsecureSettings line contains one, in order
	}{
		{"plaintext auth to 127.0.0.1", plainRelay("127.0.0.1:25", ""), nil},
		{"plaintext auth to 127.2.3.4", plainRelay("127.2.3.4:25", ""), nil},
		{"plaintext auth to ::1", plainRelay("[::1]:25", ""), nil},
		{"plaintext auth to localhost", plainRelay("LocalHost:25", ""), nil},
		{"plaintext auth to a remote host, insecure option set", plainRelay("smtp.example.com:25", "insecure_plaintext_auth_to_remote = true\n"),
			[]string{`c.toml:7: relay[0].insecure_plaintext_auth_to_remote: relay "relay1" (smtp.example.com:25) gets AUTH without TLS: the password crosses the network in clear`}},
		{"vault http to loopback", vaultAt("http://127.0.0.1:8200", ""), nil},
		{"vault http to localhost", vaultAt("http://localhost:8200", ""), nil},
		{"vault http to ::1", vaultAt("http://[::1]:8200", ""), nil},
		{"vault https", vaultAt("https://vault.example.com:8200", ""), nil},
		{"vault http to remote, insecure_http set", vaultAt("http://vault.example.com:8200", "addresses = [\"http://10.0.0.2:8200\"]\ninsecure_http = true\n"),
			[]string{
				`c.toml:12: credentials.vault.insecure_http: Vault at http://vault.example.com:8200 is reached without TLS: the token and the credentials cross the network in clear`,
				`c.toml:12: credentials.vault.insecure_http: Vault at http://10.0.0.2:8200 is reached without TLS`,
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.toml), "c.toml")
			if err != nil {
				t.Fatal(err)
			}
			got := c.InsecureSettings()
			if len(got) != len(tc.warnings) {
				t.Fatalf("InsecureSettings = %q, want %d", got, len(tc.warnings))
			}
			for i, w := range tc.warnings {
				if !strings.Contains(got[i].String(), w) {
					t.Errorf("InsecureSettings[%d] = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}
