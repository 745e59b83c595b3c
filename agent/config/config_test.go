package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const minimal = `
[[relay]]
address = "smtp.example.com:587"
credential = "primary"
`

func TestConfigDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal), "/etc/sealrelay/sealrelay.toml")
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if c.Hostname != host {
		t.Errorf("hostname %q, want os.Hostname() %q", c.Hostname, host)
	}
	r := c.Relays[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir", c.DataDir, "/var/lib/sealrelay"},
		{"listen.address", c.Listen.Address, "127.0.0.1:2525"},
		{"listen.allowed_networks", strings.Join(c.Listen.AllowedNetworks, ","), "127.0.0.0/8,::1/128"},
		{"listen.max_message_bytes", c.Listen.MaxMessageBytes, int64(36700160)},
		{"listen.max_recipients", c.Listen.MaxRecipients, 100},
		{"listen.max_sessions", c.Listen.MaxSessions, 100},
		{"listen.max_sessions_per_client", c.Listen.MaxSessionsPerClient, 20},
		{"listen.idle_timeout", c.Listen.IdleTimeout.Duration, time.Minute},
		{"relay.name", r.Name, "relay1"},
		{"relay.tls", r.TLS, "starttls"},
		{"relay.auth (with a credential)", r.Auth, "required"},
		{"relay.allow_plaintext_auth", r.AllowPlaintextAuth, false},
		{"relay.mechanisms", strings.Join(r.Mechanisms, ","), "PLAIN,LOGIN"},
		{"relay.max_connections", r.MaxConnections, 10},
		{"credentials.source", c.Credentials.Source, "age"},
		{"credentials.identity", c.Credentials.Identity, "/etc/sealrelay/identity.txt"},
		{"credentials.file", c.Credentials.File, "/etc/sealrelay/credentials.age"},
		{"credentials.vault.mount", c.Credentials.Vault.Mount, "secret"},
		{"credentials.vault.poll_interval", c.Credentials.Vault.PollInterval.Duration, 30 * time.Second},
		// secrets/vault has no defaults of its own: these reach it from here.
		{"credentials.vault.path", c.Credentials.Vault.Path, "sealrelay"},
		{"credentials.vault.auth", c.Credentials.Vault.Auth, "token"},
		{"credentials.vault.approle_mount", c.Credentials.Vault.AppRoleMount, "approle"},
		{"credentials.vault.kubernetes_mount", c.Credentials.Vault.KubernetesMount, "kubernetes"},
		{"credentials.vault.jwt_file", c.Credentials.Vault.JWTFile, "/var/run/secrets/kubernetes.io/serviceaccount/token"},
		{"credentials.vault.timeout", c.Credentials.Vault.Timeout.Duration, 10 * time.Second},
		{"queue.min_backoff", c.Queue.MinBackoff.Duration, 30 * time.Second},
		{"queue.max_backoff", c.Queue.MaxBackoff.Duration, 30 * time.Minute},
		{"queue.max_lifetime", c.Queue.MaxLifetime.Duration, 120 * time.Hour},
		{"spool dir", c.SpoolDir(), "/var/lib/sealrelay/spool"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if got := c.CredentialNames(); len(got) != 1 || got[0] != "primary" {
		t.Errorf("credential names %v", got)
	}
}

func TestConfigRelayDefaultsPerRelay(t *testing.T) {
	c, err := Parse([]byte(`
[[relay]]
name = "a"
address = "a.example:587"
max_connections = 3
[[relay]]
name = "b"
address = "b.example:465"
tls = "implicit"
`), "x.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Relays[0].MaxConnections != 3 || c.Relays[1].MaxConnections != 10 {
		t.Errorf("max_connections %d, %d: the second relay must keep the default", c.Relays[0].MaxConnections, c.Relays[1].MaxConnections)
	}
	if c.Relays[1].Auth != "disabled" {
		t.Errorf("a relay without a credential defaults to auth = %q, want disabled", c.Relays[1].Auth)
	}
}

// TestConfigClientCertificate: every mechanism the delivery code speaks
// is accepted; a client certificate joins the entries the store loads;
// without a credential it is shown at TLS only (auth disabled), or with
// EXTERNAL it is what AUTH uses (auth required by default).
func TestConfigClientCertificate(t *testing.T) {
	c, err := Parse([]byte(`
[[relay]]
name = "cert-only"
address = "a.example:587"
client_certificate = "corp-cert"
[[relay]]
name = "external"
address = "b.example:587"
client_certificate = "other-cert"
mechanisms = ["external"]
[[relay]]
name = "both"
address = "c.example:587"
credential = "primary"
client_certificate = "corp-cert"
mechanisms = ["scram-sha-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"]
[[relay]]
name = "oauth"
address = "d.example:587"
credential = "m365"
mechanisms = ["XOAUTH2", "OAUTHBEARER"]
`), "x.toml")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"disabled", "required", "required", "required"} {
		if got := c.Relays[i].Auth; got != want {
			t.Errorf("relay %s: auth = %q, want %q", c.Relays[i].Name, got, want)
		}
	}
	if got := strings.Join(c.Relays[1].Mechanisms, ","); got != "EXTERNAL" {
		t.Errorf("mechanisms %s, want EXTERNAL in upper case", got)
	}
	if got := strings.Join(c.Relays[2].Mechanisms, ","); got != "SCRAM-SHA-256,SCRAM-SHA-1,CRAM-MD5,PLAIN,LOGIN" {
		t.Errorf("mechanisms %s", got)
	}
	if got := strings.Join(c.CredentialNames(), ","); got != "corp-cert,other-cert,primary,m365" {
		t.Errorf("credential names %s, want each credential and client certificate once", got)
	}
}

func TestConfigRelativePaths(t *testing.T) {
	c, err := Parse([]byte(minimal+`
[credentials]
identity = "id.txt"
`), "/etc/sr/sealrelay.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Credentials.Identity != "/etc/sr/id.txt" {
		t.Errorf("identity %q, want it relative to the config file", c.Credentials.Identity)
	}
}

// TestConfigErrors: every bad input names the file and the key (and the
// line, where the TOML decoder knows it).
func TestConfigErrors(t *testing.T) {
	cases := []struct{ name, toml, want string }{
		{"unknown top key", "colour = 1\n" + minimal, "c.toml: colour: unknown key"},
		{"unknown relay key", minimal + "passwd = \"x\"\n", "c.toml: relay.passwd: unknown key"},
		{"unknown table key", minimal + "[queue]\nretries = 3\n", "c.toml: queue.retries: unknown key"},
		{"syntax", "hostname = \n", "c.toml:1: hostname: "},
		{"duration as number", minimal + "[queue]\nmin_backoff = 30\n", `c.toml:6: queue.min_backoff: a duration is a string such as "30s"`},
		{"bad duration", minimal + "[queue]\nmin_backoff = \"30 seconds\"\n", `queue.min_backoff: invalid duration "30 seconds"`},
		{"no relay", "hostname = \"h\"\n", "c.toml: relay: at least one [[relay]] is needed"},
		{"bad tls", "[[relay]]\naddress = \"a:1\"\ntls = \"ssl\"\n", `c.toml: relay[0].tls: must be starttls, implicit or none, not "ssl"`},
		{"bad auth", "[[relay]]\naddress = \"a:1\"\ncredential = \"x\"\nauth = \"yes\"\n", `relay[0].auth: must be required, enabled or disabled, not "yes"`},
		{"required without credential", "[[relay]]\naddress = \"a:1\"\nauth = \"required\"\n", `relay[0].credential: auth = "required" needs a credential entry name`},
		{"bad address", "[[relay]]\naddress = \"smtp.example.com\"\n", `relay[0].address: must be host:port`},
		{"duplicate relay name", "[[relay]]\nname=\"a\"\naddress = \"a:1\"\n[[relay]]\nname=\"a\"\naddress = \"b:1\"\n", `relay[1].name: relay name "a" used twice`},
		{"plaintext auth with tls", "[[relay]]\naddress = \"a:1\"\nallow_plaintext_auth = true\n", `relay[0].allow_plaintext_auth: only meaningful with tls = "none"`},
		{"bad mechanism", "[[relay]]\naddress = \"a:1\"\nmechanisms = [\"DIGEST-MD5\"]\n", `relay[0].mechanisms[0]: unsupported SASL mechanism "DIGEST-MD5" (supported: PLAIN, LOGIN, XOAUTH2, OAUTHBEARER, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, EXTERNAL)`},
		{"EXTERNAL without a certificate", "[[relay]]\naddress = \"a:1\"\nmechanisms = [\"EXTERNAL\"]\n", `relay[0].mechanisms: EXTERNAL authenticates with the client certificate: set client_certificate`},
		{"EXTERNAL with a credential", "[[relay]]\naddress = \"a:1\"\ncredential = \"p\"\nclient_certificate = \"c\"\nmechanisms = [\"EXTERNAL\", \"PLAIN\"]\n", `relay[0].mechanisms: EXTERNAL authenticates with the client certificate alone: with it, leave credential empty`},
		{"certificate without TLS", "[[relay]]\naddress = \"a:1\"\ntls = \"none\"\nclient_certificate = \"c\"\n", `relay[0].client_certificate: a client certificate is shown in the TLS handshake: it needs tls = "starttls" or "implicit"`},
		{"required with a certificate, no EXTERNAL", "[[relay]]\naddress = \"a:1\"\nclient_certificate = \"c\"\nauth = \"required\"\n", `relay[0].credential: auth = "required" needs a credential entry name (or a client_certificate with EXTERNAL in mechanisms)`},
		{"missing ca_file", "[[relay]]\naddress = \"a:1\"\nca_file = \"/nonexistent/ca.pem\"\n", `relay[0].ca_file: `},
		{"bad network", "[listen]\nallowed_networks = [\"localhost\"]\n" + minimal, `listen.allowed_networks[0]: not a network in CIDR form`},
		{"bad listen address", "[listen]\naddress = \"2525\"\n" + minimal, `listen.address: not host:port`},
		{"tls_cert without key", "[listen]\ntls_cert = \"c.pem\"\n" + minimal, `listen.tls_cert: tls_cert and tls_key go together`},
		{"max_sessions zero", "[listen]\nmax_sessions = 0\n" + minimal, `c.toml: listen.max_sessions: must be positive`},
		{"max_sessions_per_client negative", "[listen]\nmax_sessions_per_client = -1\n" + minimal, `c.toml: listen.max_sessions_per_client: must be positive`},
		{"idle_timeout zero", "[listen]\nidle_timeout = \"0s\"\n" + minimal, `c.toml: listen.idle_timeout: must be positive`},
		{"bad source", minimal + "[credentials]\nsource = \"env\"\n", `credentials.source: must be age or vault, not "env"`},
		{"vault without address", minimal + "[credentials]\nsource = \"vault\"\n", `credentials.vault.address: must be set`},
		{"vault bad auth", minimal + "[credentials]\nsource = \"vault\"\n[credentials.vault]\naddress = \"http://v:8200\"\nauth = \"userpass\"\n", `credentials.vault.auth: must be token, approle or kubernetes, not "userpass"`},
		{"approle without files", minimal + "[credentials]\nsource = \"vault\"\n[credentials.vault]\naddress = \"http://v:8200\"\nauth = \"approle\"\n", `credentials.vault.role_id_file: auth = "approle" needs role_id_file and secret_id_file`},
		{"max_backoff below min", minimal + "[queue]\nmin_backoff = \"1m\"\nmax_backoff = \"30s\"\n", `queue.max_backoff: must not be less than min_backoff (1m0s)`},
		{"log format", "log_format = \"xml\"\n" + minimal, `log_format: must be text or json, not "xml"`},
	}
	t.Setenv("VAULT_ADDR", "")
	checkErrors(t, cases)
}

// checkErrors parses each case's config as c.toml and checks its error.
func checkErrors(t *testing.T, cases []struct{ name, toml, want string }) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.toml), "c.toml")
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "c.toml") {
				t.Errorf("error %q does not start with the file name", err)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err == nil || !strings.Contains(err.Error(), "nope.toml") {
		t.Errorf("error %v does not name the file", err)
	}
}

// validatesUnchanged checks that validating c again passes and changes
// nothing: validate only reads.
func validatesUnchanged(t *testing.T, data []byte, file string, c *Config) {
	t.Helper()
	again, err := Parse(data, file)
	if err != nil {
		t.Fatalf("second Parse: %v", err)
	}
	if err := again.validate(); err != nil {
		t.Fatalf("validating again: %v", err)
	}
	if !reflect.DeepEqual(again, c) {
		t.Errorf("validating again changed the config:\n got %+v\nwant %+v", again, c)
	}
}

// TestValidateChangesNothing: what Load fills in (auth, mechanism
// spelling, Vault addresses) is done before validation, which only reads.
func TestValidateChangesNothing(t *testing.T) {
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:8200")
	for name, data := range map[string]string{
		"minimal":    minimal,
		"mechanisms": "[[relay]]\naddress = \"a:1\"\ncredential = \"c\"\nmechanisms = [\"login\", \"Plain\"]\n",
		"vault":      minimal + "[credentials]\nsource = \"vault\"\n[credentials.vault]\naddress = \"https://v1:8200\"\naddresses = [\"https://v2:8200\"]\n",
		"vault_addr": minimal + "[credentials]\nsource = \"vault\"\n",
		"networks":   "[listen]\nallowed_networks = [\"10.0.0.1\", \"192.168.1.7/24\"]\n" + minimal,
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Parse([]byte(data), "c.toml")
			if err != nil {
				t.Fatal(err)
			}
			validatesUnchanged(t, []byte(data), "c.toml", c)
		})
	}
}

// FuzzParseConfig: the config loader never panics, and whatever it accepts
// validates again to the same result.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte("[listen]\naddress = \"127.0.0.1:0\"\n" + minimal))
	f.Add([]byte("[[relay]]\naddress = \"a:1\"\n[[relay]]\naddress = \"b:2\"\ntls = \"none\"\n"))
	f.Add([]byte(minimal + "[credentials]\nsource = \"vault\"\n[credentials.vault]\naddress = \"http://v:8200\"\n"))
	f.Add([]byte(minimal + "[queue]\nmin_backoff = \"1s\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(c.Relays) == 0 {
			t.Fatal("accepted a config without relays")
		}
		validatesUnchanged(t, data, "fuzz.toml", c)
	})
}
