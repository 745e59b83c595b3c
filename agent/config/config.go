package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"
)

// maxConfigFile caps the size of a config file.
const maxConfigFile = 1 << 20

// mechanisms are the SASL mechanisms a relay may name.
var mechanisms = []string{"PLAIN", "LOGIN"}

// Config is the agent's configuration (sealrelay.toml). It holds no secret:
// only the names of files and Vault paths where secrets are.
//
// Load fills defaults, parses the file, and validates; each default is
// written next to its field.
type Config struct {
	File string `toml:"-"` // the file it was loaded from, for errors
	raw  []byte // its content, to find the line of a key in errors

	Hostname       string `toml:"hostname"`        // EHLO name; default os.Hostname()
	DataDir        string `toml:"data_dir"`        // spool under DataDir/spool; default /var/lib/sealrelay
	LogFormat      string `toml:"log_format"`      // text | json; default text
	LogLevel       string `toml:"log_level"`       // debug | info | warn | error; default info
	MetricsAddress string `toml:"metrics_address"` // Prometheus /metrics listener; default "" (off)

	Listen      Listen      `toml:"listen"`
	Relays      []Relay     `toml:"relay"`
	Credentials Credentials `toml:"credentials"`
	Queue       Queue       `toml:"queue"`
}

// Listen is the [listen] table: the inbound SMTP listener.
type Listen struct {
	Address         string   `toml:"address"`           // default 127.0.0.1:2525
	AllowedNetworks []string `toml:"allowed_networks"`  // default ["127.0.0.0/8", "::1/128"]
	MaxMessageBytes int64    `toml:"max_message_bytes"` // default 36700160 (35 MiB)
	MaxRecipients   int      `toml:"max_recipients"`    // default 100
	TLSCert         string   `toml:"tls_cert"`          // PEM; enables STARTTLS with tls_key
	TLSKey          string   `toml:"tls_key"`
	ReadTimeout     Duration `toml:"read_timeout"`  // each read, of a command or of a message; default 5m
	WriteTimeout    Duration `toml:"write_timeout"` // each reply; default 5m
	IdleTimeout     Duration `toml:"idle_timeout"`  // wait for the next command (capped by read_timeout); default 60s

	MaxSessions          int `toml:"max_sessions"`            // open connections; 421 4.7.0 above it; default 100
	MaxSessionsPerClient int `toml:"max_sessions_per_client"` // from one client IP; default 20
}

// Networks returns the parsed allowed_networks of a validated config.
func (l *Listen) Networks() []netip.Prefix {
	var out []netip.Prefix
	for _, n := range l.AllowedNetworks {
		if p, ok := parseNetwork(n); ok {
			out = append(out, p)
		}
	}
	return out
}

// Relay is one [[relay]]: an upstream relay host. Relays are tried in
// the order they appear.
type Relay struct {
	Name               string   `toml:"name"`                 // default relayN
	Address            string   `toml:"address"`              // host:port, required
	TLS                string   `toml:"tls"`                  // starttls | implicit | none; default starttls
	Auth               string   `toml:"auth"`                 // required | enabled | disabled; default required with a credential, else disabled
	Credential         string   `toml:"credential"`           // entry name in the credential source
	CAFile             string   `toml:"ca_file"`              // extra trusted roots (PEM)
	ServerName         string   `toml:"server_name"`          // TLS name if it differs from the address host
	AllowPlaintextAuth bool     `toml:"allow_plaintext_auth"` // AUTH without TLS (loopback only); default false
	Mechanisms         []string `toml:"mechanisms"`           // SASL preference; default ["PLAIN", "LOGIN"]
	MaxConnections     int      `toml:"max_connections"`      // default 10
	IdleTimeout        Duration `toml:"idle_timeout"`         // pooled connection idle limit; default 30s
	ConnectTimeout     Duration `toml:"connect_timeout"`      // default 30s
	CommandTimeout     Duration `toml:"command_timeout"`      // default 5m

	// InsecurePlaintextAuthToRemote lets allow_plaintext_auth send the
	// password in clear to a relay that is not on loopback; default false.
	InsecurePlaintextAuthToRemote bool `toml:"insecure_plaintext_auth_to_remote"`
}

// Credentials is the [credentials] table.
type Credentials struct {
	Source     string `toml:"source"`     // age | vault; default age
	Identity   string `toml:"identity"`   // this server's age identity; default /etc/sealrelay/identity.txt
	File       string `toml:"file"`       // sealed credential file; default /etc/sealrelay/credentials.age
	Recipients string `toml:"recipients"` // recipient list, for `creds set --vault` with sealed values
	Vault      Vault  `toml:"vault"`
}

// Vault is the [credentials.vault] table.
type Vault struct {
	Address         string   `toml:"address"`   // https://vault.example.com:8200
	Addresses       []string `toml:"addresses"` // several nodes, tried in order
	Mount           string   `toml:"mount"`     // KV v2 mount; default secret
	Path            string   `toml:"path"`      // entries at <mount>/data/<path>/NAME; default sealrelay
	Auth            string   `toml:"auth"`      // token | approle | kubernetes; default token
	TokenFile       string   `toml:"token_file"`
	RoleIDFile      string   `toml:"role_id_file"`
	SecretIDFile    string   `toml:"secret_id_file"`
	SecretIDWrapped bool     `toml:"secret_id_wrapped"` // secret_id_file holds a response-wrapping token
	AppRoleMount    string   `toml:"approle_mount"`     // default approle
	KubernetesRole  string   `toml:"kubernetes_role"`
	JWTFile         string   `toml:"jwt_file"`         // default /var/run/secrets/kubernetes.io/serviceaccount/token
	KubernetesMount string   `toml:"kubernetes_mount"` // default kubernetes
	CAFile          string   `toml:"ca_file"`
	PollInterval    Duration `toml:"poll_interval"` // default 30s
	Sealed          bool     `toml:"sealed"`        // passwords are age-sealed to the recipient list
	Timeout         Duration `toml:"timeout"`       // per request; default 10s
	// InsecureHTTP allows an http:// address to a Vault that is not on
	// loopback (the token crosses the network in clear); default false.
	InsecureHTTP bool `toml:"insecure_http"`

	addrFromEnv bool // Addresses is VAULT_ADDR
}

// Queue is the [queue] table.
type Queue struct {
	MinBackoff   Duration `toml:"min_backoff"`   // default 30s
	MaxBackoff   Duration `toml:"max_backoff"`   // default 30m
	MaxLifetime  Duration `toml:"max_lifetime"`  // default 120h
	Workers      int      `toml:"workers"`       // concurrent deliveries; default 20
	DrainTimeout Duration `toml:"drain_timeout"` // SIGTERM waits this long for deliveries; default 30s
	// MemoryBudget bounds the memory held for messages being received, in
	// bytes; beyond it they stream to disk as they arrive. Default 32 MiB.
	MemoryBudget int64 `toml:"memory_budget"`
}

// Duration is a time.Duration written as a string ("30s", "5m").
type Duration struct{ time.Duration }

// UnmarshalTOML accepts only strings: a bare number would be ambiguous.
func (d *Duration) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("a duration is a string such as \"30s\" or \"5m\", not %T", v)
	}
	p, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (use a number with a unit: \"30s\", \"5m\", \"2h\")", s)
	}
	if p < 0 {
		return fmt.Errorf("negative duration %q", s)
	}
	d.Duration = p
	return nil
}

// MarshalText writes the duration as a string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// needsCredentials reports whether any relay uses a credential.
func (c *Config) needsCredentials() bool {
	for _, r := range c.Relays {
		if r.Credential != "" {
			return true
		}
	}
	return false
}

// CredentialNames returns the credential entry names the relays use.
func (c *Config) CredentialNames() []string {
	var names []string
	for _, r := range c.Relays {
		if r.Credential != "" && !slices.Contains(names, r.Credential) {
			names = append(names, r.Credential)
		}
	}
	return names
}

// SpoolDir is where the queue lives.
func (c *Config) SpoolDir() string { return filepath.Join(c.DataDir, "spool") }
