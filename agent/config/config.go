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
var mechanisms = []string{"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "EXTERNAL"}

// Config is the agent's configuration (sealrelay.toml). It holds no secret:
// only the names of files and Vault paths where secrets are.
//
// Load starts from Default, applies the file, fills what depends on other
// keys (normalize), and validates. The struct tags document each key: doc
// is its description, default describes a default that Default computes
// rather than holds, example is a TOML value for the generated example
// where the default is empty or computed, and unit = "bytes" marks a size.
// Reference reads them; the values come from Default alone.
type Config struct {
	File string `toml:"-"` // the file it was loaded from, for errors
	raw  []byte // its content, to find the line of a key in errors

	Hostname       string `toml:"hostname" default:"the system host name" example:"\"relay1.example.com\"" doc:"This host's name: in greetings, EHLO, Received headers and DSNs."`
	DataDir        string `toml:"data_dir" doc:"The agent's own directory, for the spool and the control socket. It must belong to the user the agent runs as and be writable by no one else."`
	LogFormat      string `toml:"log_format" doc:"The format of the log on standard error: text or json."`
	LogLevel       string `toml:"log_level" doc:"The least severe level logged: debug, info, warn or error."`
	MetricsAddress string `toml:"metrics_address" doc:"The host:port serving /metrics (Prometheus), /healthz, /readyz and /generations (the credential generations held, for creds rotate); empty: none."`

	Listen      Listen      `toml:"listen" doc:"The inbound SMTP listener for local applications."`
	Relays      []Relay     `toml:"relay" doc:"An upstream relay host. At least one is needed; several are tried in order (failover)."`
	Routes      []Route     `toml:"route" example:"commented" doc:"A route: which relays take the mail of some senders or recipient domains. Optional; the first route that matches a recipient wins. Without routes, every relay in order takes all mail. With routes, one of them must be the default route, with neither senders nor recipient_domains."`
	Sendmail    Sendmail    `toml:"sendmail" doc:"The sendmail command: what local users may submit through the maildrop."`
	Credentials Credentials `toml:"credentials" doc:"Where the relay credentials are, and this server's key."`
	Queue       Queue       `toml:"queue" doc:"The spool's retries, and how long a message may wait."`
	Rotation    Rotation    `toml:"rotation" example:"commented" doc:"What sealrelay creds rotate needs: the agents to wait for, the hooks that set and retire a secret at the relay, and how new passwords are made. The agent itself reads none of it."`
}

// Listen is the [listen] table: the inbound SMTP listener.
type Listen struct {
	Address         string   `toml:"address" doc:"The host:port the listener binds."`
	AllowedNetworks []string `toml:"allowed_networks" doc:"The client networks that may send, in CIDR form. An address alone is one host. Others get 550 5.7.1."`
	MaxMessageBytes int64    `toml:"max_message_bytes" unit:"bytes" doc:"The largest message accepted, as sent. A larger one gets 552 5.3.4."`
	MaxRecipients   int      `toml:"max_recipients" doc:"The most recipients of one message. Above it, 452 4.5.3."`
	TLSCert         string   `toml:"tls_cert" doc:"A PEM certificate chain; with tls_key, STARTTLS is offered."`
	TLSKey          string   `toml:"tls_key" doc:"The PEM private key of tls_cert."`
	ReadTimeout     Duration `toml:"read_timeout" doc:"Bounds each read, of a command line or of a piece of a message."`
	WriteTimeout    Duration `toml:"write_timeout" doc:"Bounds each reply."`
	IdleTimeout     Duration `toml:"idle_timeout" doc:"How long a session may wait between commands. The wait for a command is the shorter of this and read_timeout; then 421 4.4.2 and close."`

	MaxSessions          int `toml:"max_sessions" doc:"The most connections open at once. Above it, 421 4.7.0 and close."`
	MaxSessionsPerClient int `toml:"max_sessions_per_client" doc:"The most connections open at once from one client IP address. Above it, 421 4.7.0 and close."`
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
	Name               string   `toml:"name" default:"relay1, relay2 ... by position" example:"\"primary\"" doc:"The relay's name in logs and in check's report."`
	Address            string   `toml:"address" default:"none, it must be set" example:"\"smtp.example.com:587\"" doc:"The relay's host:port."`
	TLS                string   `toml:"tls" doc:"starttls (mandatory), implicit (TLS from the first byte) or none. With starttls, a relay that does not offer STARTTLS gets no mail."`
	Auth               string   `toml:"auth" default:"required with a credential (or with EXTERNAL and a client_certificate), else disabled" example:"\"required\"" doc:"required, enabled or disabled. Under required, sealrelay authenticates or defers the message (it never bounces it for that); under enabled, it authenticates if it can, else goes on without; under disabled, it never sends AUTH."`
	Credential         string   `toml:"credential" example:"\"primary\"" doc:"The entry holding this relay's login, in the file or Vault. Empty: none."`
	ClientCertificate  string   `toml:"client_certificate" doc:"An entry of kind certificate: the TLS client certificate and key shown to the relay when it asks for one, read from the store at each handshake (a rotated one is used from the next connection on). Empty: none. With EXTERNAL in mechanisms and no credential, AUTH EXTERNAL uses it."`
	CAFile             string   `toml:"ca_file" doc:"PEM roots trusted for the relay, besides the system's."`
	ServerName         string   `toml:"server_name" doc:"The name the relay's certificate must hold, if not address's host."`
	AllowPlaintextAuth bool     `toml:"allow_plaintext_auth" doc:"Allow AUTH without TLS (with tls = \"none\"), to loopback only. Loopback is 127.0.0.0/8, ::1 and localhost."`
	Mechanisms         []string `toml:"mechanisms" doc:"The SASL mechanisms sealrelay may use: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256 (a password or ses entry), XOAUTH2, OAUTHBEARER (an oauth2 entry), EXTERNAL (the client certificate). Of those the relay offers, the strongest is used: SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, then PLAIN and LOGIN in the order listed."`
	MaxConnections     int      `toml:"max_connections" doc:"The most connections open to this relay; they are reused."`
	IdleTimeout        Duration `toml:"idle_timeout" doc:"A pooled connection unused this long is closed."`
	ConnectTimeout     Duration `toml:"connect_timeout" doc:"Bounds the TCP connect."`
	CommandTimeout     Duration `toml:"command_timeout" doc:"Bounds each reply and the TLS handshake. The reply to the message data may take twice as long."`

	InsecurePlaintextAuthToRemote bool `toml:"insecure_plaintext_auth_to_remote" doc:"Allow allow_plaintext_auth off loopback too. The password then crosses the network in clear; serve and check warn of it at every start."`

	Limits
}

// Credentials is the [credentials] table.
type Credentials struct {
	Source     string `toml:"source" doc:"age (a sealed credential file) or vault."`
	Identity   string `toml:"identity" doc:"This server's age identity, which unseals the credentials: an identity file, or \"credential:NAME\" for the systemd credential NAME, read from $CREDENTIALS_DIRECTORY (LoadCredential= or LoadCredentialEncrypted=). A key held by an age plugin (an AGE-PLUGIN-... line) is used through age-plugin-NAME on $PATH. Used with source = \"age\", and with sealed Vault values."`
	File       string `toml:"file" doc:"The sealed credential file, with source = \"age\"."`
	Recipients string `toml:"recipients" doc:"The recipient list, for creds set --vault with sealed values, and for the agent to seal a refresh token the identity provider rotated before it writes it back to Vault."`
	Vault      Vault  `toml:"vault" doc:"With source = \"vault\": the Vault holding the credentials. Entry NAME is read from <mount>/data/<path>/NAME, with the keys username and password."`
}

// Vault is the [credentials.vault] table.
type Vault struct {
	Address           string   `toml:"address" doc:"Vault's address, as https://host:port. Without address and addresses, VAULT_ADDR is used."`
	Addresses         []string `toml:"addresses" doc:"More nodes of the cluster, tried in order after address."`
	Mount             string   `toml:"mount" doc:"The KV v2 mount."`
	Path              string   `toml:"path" doc:"The folder under the mount that holds the entries."`
	Auth              string   `toml:"auth" doc:"How to log in: token, approle or kubernetes."`
	TokenFile         string   `toml:"token_file" doc:"With auth = \"token\": the token's file (0600); empty: VAULT_TOKEN."`
	RoleIDFile        string   `toml:"role_id_file" doc:"With auth = \"approle\": the role ID's file (0600)."`
	SecretIDFile      string   `toml:"secret_id_file" doc:"With auth = \"approle\": the secret ID's file (0600)."`
	SecretIDWrapped   bool     `toml:"secret_id_wrapped" doc:"secret_id_file holds a response-wrapping token. It is unwrapped at the first login, and the secret ID kept in memory only."`
	AppRoleMount      string   `toml:"approle_mount" doc:"Where the AppRole auth method is mounted."`
	KubernetesRole    string   `toml:"kubernetes_role" doc:"With auth = \"kubernetes\": the Vault role to log in as."`
	JWTFile           string   `toml:"jwt_file" doc:"With auth = \"kubernetes\": the service account token."`
	KubernetesMount   string   `toml:"kubernetes_mount" doc:"Where the Kubernetes auth method is mounted."`
	CAFile            string   `toml:"ca_file" doc:"PEM roots trusted for Vault, besides the system's."`
	PollInterval      Duration `toml:"poll_interval" doc:"How often each entry's version is checked (at least 1s). A new version is fetched at once."`
	Sealed            bool     `toml:"sealed" doc:"Passwords in Vault are age-sealed to the recipient list. Only the servers on the list can use them."`
	Timeout           Duration `toml:"timeout" doc:"Bounds each request to Vault."`
	InsecureHTTP      bool     `toml:"insecure_http" doc:"Allow http:// to a Vault off loopback. The token and the credentials then cross the network in clear; serve and check warn of it at every start."`
	AgentsPath        string   `toml:"agents_path" default:"path + \"-agents\"" example:"\"sealrelay-agents\"" doc:"The folder under the mount where each agent writes which credential generations it holds, at <mount>/data/<agents_path>/<hostname>, for creds rotate to wait on. The agent's Vault policy must allow create and update there."`
	ReportGenerations bool     `toml:"report_generations" doc:"Write this agent's generation report under agents_path. Off: a rotation must reach the agent through rotation.fleet."`

	addrFromEnv bool // Addresses is VAULT_ADDR
}

// Queue is the [queue] table.
type Queue struct {
	MinBackoff   Duration `toml:"min_backoff" doc:"The delay before the first retry. Retries back off exponentially, with jitter."`
	MaxBackoff   Duration `toml:"max_backoff" doc:"The longest delay between retries."`
	MaxLifetime  Duration `toml:"max_lifetime" doc:"How long a recipient may stay pending. Then it fails, and the sender gets a DSN."`
	Workers      int      `toml:"workers" doc:"The most deliveries at once."`
	DrainTimeout Duration `toml:"drain_timeout" doc:"How long SIGTERM waits for deliveries in progress."`
	MemoryBudget int64    `toml:"memory_budget" unit:"bytes" doc:"The memory for messages being received. Beyond it, they stream to disk as they arrive."`
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
func (c *Config) needsCredentials() bool { return len(c.CredentialNames()) > 0 }

// CredentialNames returns the credential entry names the relays use: each
// credential and client_certificate.
func (c *Config) CredentialNames() []string {
	var names []string
	for _, r := range c.Relays {
		for _, n := range []string{r.Credential, r.ClientCertificate} {
			if n != "" && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	return names
}

// externalAuth reports whether r authenticates with AUTH EXTERNAL: it
// lists EXTERNAL, has a client certificate and no credential.
func (r *Relay) externalAuth() bool {
	return r.Credential == "" && r.ClientCertificate != "" && slices.Contains(r.Mechanisms, "EXTERNAL")
}

// SpoolDir is where the queue lives.
func (c *Config) SpoolDir() string { return filepath.Join(c.DataDir, "spool") }
