package config

import (
	"slices"
	"testing"
)

const twoRelays = `
[[relay]]
name = "a"
address = "a.example:587"
max_messages_per_minute = 30
max_recipients_per_message = 50
[[relay]]
name = "b"
address = "b.example:587"
`

// TestConfigRoutes: routes load in order with their defaults (a name by
// position, every relay when none is named), and the limits of relays
// and routes are read.
func TestConfigRoutes(t *testing.T) {
	c, err := Parse([]byte(twoRelays+`
[[route]]
senders = ["*@sales.example.com", "ceo@example.com"]
relays = ["b"]
max_messages_per_second = 5
[[route]]
name = "partners"
recipient_domains = [".partner.example"]
relays = ["b", "a"]
[[route]]
`), "c.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Routes) != 3 {
		t.Fatalf("%d routes", len(c.Routes))
	}
	r0, r1, r2 := c.Routes[0], c.Routes[1], c.Routes[2]
	if r0.Name != "route1" || r1.Name != "partners" || r2.Name != "route3" {
		t.Errorf("names %q %q %q", r0.Name, r1.Name, r2.Name)
	}
	if !slices.Equal(r0.Relays, []string{"b"}) || !slices.Equal(r1.Relays, []string{"b", "a"}) || !slices.Equal(r2.Relays, []string{"a", "b"}) {
		t.Errorf("relays %v %v %v; the default route names none and gets every relay in order", r0.Relays, r1.Relays, r2.Relays)
	}
	if r0.MaxMessagesPerSecond != 5 || r0.Default() || r1.Default() || !r2.Default() {
		t.Errorf("route limits or default: %+v", c.Routes)
	}
	if a := c.Relays[0]; a.MaxMessagesPerMinute != 30 || a.MaxRecipientsPerMessage != 50 || c.Relays[1].MaxMessagesPerMinute != 0 {
		t.Errorf("relay limits %+v %+v", a.Limits, c.Relays[1].Limits)
	}
	validatesUnchanged(t, []byte(twoRelays), "c.toml", mustParse(t, twoRelays))
}

// TestConfigSendmail: [[sendmail.allow]] rules load; the maildrop is in
// data_dir.
func TestConfigSendmail(t *testing.T) {
	c, err := Parse([]byte(minimal+`
[[sendmail.allow]]
users = ["www-data", "*"]
groups = ["mailers"]
senders = ["noreply@example.com", "@apps.example.com", "<>"]
`), "/etc/sealrelay/c.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sendmail.Allow) != 1 || !slices.Equal(c.Sendmail.Allow[0].Users, []string{"www-data", "*"}) || len(c.Sendmail.Allow[0].Senders) != 3 {
		t.Errorf("sendmail rules %+v", c.Sendmail)
	}
	if c.MaildropDir() != "/var/lib/sealrelay/maildrop" {
		t.Errorf("maildrop %q", c.MaildropDir())
	}
}

func mustParse(t *testing.T, data string) *Config {
	t.Helper()
	c, err := Parse([]byte(data), "c.toml")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConfigRouteErrors: each mistake in a route, a limit or a sendmail
// rule names the file and the key.
func TestConfigRouteErrors(t *testing.T) {
	cases := []struct{ name, toml, want string }{
		{"no default route", twoRelays + "[[route]]\nsenders = [\"a@b.example\"]\n",
			"c.toml: route: no default route: with [[route]] tables, the last one must have neither senders nor recipient_domains"},
		{"default not last", twoRelays + "[[route]]\nname = \"all\"\n[[route]]\nsenders = [\"a@b.example\"]\n",
			`c.toml: route[1].senders: the route can never match: route "all" before it is the default route`},
		{"unknown relay", twoRelays + "[[route]]\nrelays = [\"c\"]\n", `c.toml: route[0].relays[0]: no [[relay]] is named "c"`},
		{"relay twice", twoRelays + "[[route]]\nrelays = [\"a\", \"a\"]\n", `c.toml: route[0].relays[1]: relay "a" named twice`},
		{"route name twice", twoRelays + "[[route]]\nname = \"x\"\nsenders = [\"@a.example\"]\n[[route]]\nname = \"x\"\n", `c.toml: route[1].name: route name "x" used twice`},
		{"bad sender", twoRelays + "[[route]]\nsenders = [\"nobody\"]\n[[route]]\n", `c.toml: route[0].senders[0]: "nobody" is not an address, @domain`},
		{"empty sender", twoRelays + "[[route]]\nsenders = [\"\"]\n[[route]]\n", `c.toml: route[0].senders[0]: empty pattern`},
		{"space in sender", twoRelays + "[[route]]\nsenders = [\"a b@c.example\"]\n[[route]]\n", `route[0].senders[0]: "a b@c.example" holds a space`},
		{"address as domain", twoRelays + "[[route]]\nrecipient_domains = [\"a@b.example\"]\n[[route]]\n", `c.toml: route[0].recipient_domains[0]: "a@b.example" is an address; give its domain`},
		{"empty label", twoRelays + "[[route]]\nrecipient_domains = [\"a..example\"]\n[[route]]\n", `route[0].recipient_domains[0]: "a..example": empty label in domain`},
		{"both rates on a relay", "[[relay]]\naddress = \"a:1\"\nmax_messages_per_minute = 1\nmax_messages_per_second = 1\n",
			"c.toml: relay[0].max_messages_per_second: set max_messages_per_minute or max_messages_per_second, not both"},
		{"negative rate", twoRelays + "[[route]]\nmax_messages_per_minute = -1\n", "c.toml: route[0].max_messages_per_minute: must not be negative"},
		{"negative recipients", "[[relay]]\naddress = \"a:1\"\nmax_recipients_per_message = -2\n", "c.toml: relay[0].max_recipients_per_message: must not be negative"},
		{"unknown route key", twoRelays + "[[route]]\nsender = [\"a@b.example\"]\n", "c.toml: route.sender: unknown key"},
		{"sendmail bad user", minimal + "[[sendmail.allow]]\nusers = [\"a b\"]\n", `c.toml: sendmail.allow[0].users[0]: "a b" is not a login name`},
		{"sendmail bad group", minimal + "[[sendmail.allow]]\ngroups = [\"\"]\n", `c.toml: sendmail.allow[0].groups[0]: "" is not a group name`},
		{"sendmail bad sender", minimal + "[[sendmail.allow]]\nusers = [\"*\"]\nsenders = [\"@\"]\n", `c.toml: sendmail.allow[0].senders[0]: "@" is not an address`},
		{"sendmail unknown key", minimal + "[sendmail]\nmaildrop = \"/tmp/x\"\n", "c.toml: sendmail.maildrop: unknown key"},
	}
	checkErrors(t, cases)
}
