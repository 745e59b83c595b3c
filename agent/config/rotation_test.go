package config

import (
	"testing"
	"time"
)

func TestRotationDefaultsAndPaths(t *testing.T) {
	c, err := Parse([]byte(minimal+`
[rotation]
fleet = ["10.0.0.1:9425", "https://relay2.example:9425"]
set_hook = ["hooks/set", "--flag"]
retire_hook = ["retire-on-path"]
state_dir = "state"
[credentials]
source = "vault"
[credentials.vault]
address = "https://v:8200"
path = "team/relay"
`), "/etc/sr/sealrelay.toml")
	if err != nil {
		t.Fatal(err)
	}
	r := c.Rotation
	for _, ch := range []struct {
		name      string
		got, want any
	}{
		{"password_length", r.PasswordLength, 32},
		{"password bits", int(r.PasswordBits()), 190},
		{"hook_timeout", r.HookTimeout.Duration, 2 * time.Minute},
		{"wait_timeout", r.WaitTimeout.Duration, 15 * time.Minute},
		{"poll_interval", r.PollInterval.Duration, 2 * time.Second},
		{"set_hook resolved", r.SetHook[0], "/etc/sr/hooks/set"},
		{"set_hook argument kept", r.SetHook[1], "--flag"},
		{"retire_hook left to $PATH", r.RetireHook[0], "retire-on-path"},
		{"state_dir resolved", r.StateDir, "/etc/sr/state"},
		{"agents_path", c.Credentials.Vault.AgentsPath, "team/relay-agents"},
		{"report_generations", c.Credentials.Vault.ReportGenerations, true},
	} {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestRotationErrors(t *testing.T) {
	rot := minimal + "[rotation]\n"
	checkErrors(t, []struct{ name, toml, want string }{
		{"fleet not an address", rot + "fleet = [\"relay1\"]\n", `c.toml: rotation.fleet[0]: "relay1" is not host:port (an agent's metrics_address)`},
		{"fleet bad URL", rot + "fleet = [\"ftp://relay1:9425\"]\n", `rotation.fleet[0]: "ftp://relay1:9425" is not an http:// or https:// URL`},
		{"fleet URL with user", rot + "fleet = [\"http://u:p@relay1:9425\"]\n", `rotation.fleet[0]: "http://u:p@relay1:9425" is not`},
		{"empty program", rot + "set_hook = [\"\", \"x\"]\n", `rotation.set_hook: the program (its first element) is empty`},
		{"weak password", rot + "password_length = 16\n", `rotation.password_length: 16 characters of a 62-character alphabet give 95 bits; at least 128 are needed (22 characters)`},
		{"length zero", rot + "password_length = 0\n", `rotation.password_length: must be between 1 and 1024, not 0`},
		{"alphabet with space", rot + "password_alphabet = \"ab cd\"\n", `rotation.password_alphabet: holds ' ': only printable ASCII without spaces`},
		{"alphabet twice", rot + "password_alphabet = \"abca\"\n", `rotation.password_alphabet: holds 'a' twice`},
		{"alphabet of one", rot + "password_alphabet = \"a\"\n", `rotation.password_alphabet: needs at least 2 characters`},
		{"zero timeout", rot + "hook_timeout = \"0s\"\n", `rotation.hook_timeout: must be positive`},
		{"unknown key", rot + "hooks = []\n", `rotation.hooks: unknown key`},
		{"agents among the entries", minimal + "[credentials]\nsource = \"vault\"\n[credentials.vault]\naddress = \"https://v:8200\"\nagents_path = \"sealrelay/agents\"\n",
			`credentials.vault.agents_path: "sealrelay/agents" must be a folder of its own, outside path "sealrelay"`},
	})
}
