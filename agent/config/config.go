package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/sealrelay/sealrelay/agent/spool"
)

// maxConfigFile caps the size of a config file.
const maxConfigFile = 1 << 20

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

	networks []netip.Prefix
}

// Networks returns the parsed allowed_networks.
func (l *Listen) Networks() []netip.Prefix { return l.networks }

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

func dur(d time.Duration) Duration { return Duration{d} }

// Default returns a Config holding every default.
func Default() *Config {
	host, _ := os.Hostname()
	return &Config{
		Hostname:  host,
		DataDir:   "/var/lib/sealrelay",
		LogFormat: "text",
		LogLevel:  "info",
		Listen: Listen{
			Address:         "127.0.0.1:2525",
			AllowedNetworks: []string{"127.0.0.0/8", "::1/128"},
			MaxMessageBytes: 36700160,
			MaxRecipients:   100,
			ReadTimeout:     dur(5 * time.Minute),
			WriteTimeout:    dur(5 * time.Minute),
			IdleTimeout:     dur(time.Minute),

			MaxSessions:          100,
			MaxSessionsPerClient: 20,
		},
		Credentials: Credentials{
			Source:   "age",
			Identity: "/etc/sealrelay/identity.txt",
			File:     "/etc/sealrelay/credentials.age",
			Vault: Vault{
				Mount:           "secret",
				Path:            "sealrelay",
				Auth:            "token",
				AppRoleMount:    "approle",
				JWTFile:         "/var/run/secrets/kubernetes.io/serviceaccount/token",
				KubernetesMount: "kubernetes",
				PollInterval:    dur(30 * time.Second),
				Timeout:         dur(10 * time.Second),
			},
		},
		Queue: Queue{
			MinBackoff:   dur(30 * time.Second),
			MaxBackoff:   dur(30 * time.Minute),
			MaxLifetime:  dur(120 * time.Hour),
			Workers:      20,
			DrainTimeout: dur(30 * time.Second),
			MemoryBudget: spool.DefaultMemoryBudget,
		},
	}
}

func defaultRelay(i int) Relay {
	return Relay{
		Name:           fmt.Sprintf("relay%d", i+1),
		TLS:            "starttls",
		Mechanisms:     []string{"PLAIN", "LOGIN"},
		MaxConnections: 10,
		IdleTimeout:    dur(30 * time.Second),
		ConnectTimeout: dur(30 * time.Second),
		CommandTimeout: dur(5 * time.Minute),
	}
}

// Error is an error in a config file, naming the file, the line
// where known, and the key.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Key == "" {
		return loc + ": " + e.Msg
	}
	return loc + ": " + e.Key + ": " + e.Msg
}

// Load reads, defaults and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(data, path)
}

// Parse parses and validates config data; file names it in errors.
// Relative paths in the config are taken relative to the file's directory.
func Parse(data []byte, file string) (*Config, error) {
	if len(data) > maxConfigFile {
		return nil, &Error{File: file, Msg: fmt.Sprintf("larger than %d bytes", maxConfigFile)}
	}
	c := Default()
	c.File, c.raw = file, data
	// Relays are decoded raw first, so that each gets its defaults before
	// its own keys are applied.
	var raw struct {
		Relays []toml.Primitive `toml:"relay"`
	}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw)
	if err != nil {
		return nil, tomlError(file, err)
	}
	md2, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		return nil, tomlError(file, err)
	}
	c.Relays = nil
	for i, p := range raw.Relays {
		r := defaultRelay(i)
		if err := md.PrimitiveDecode(p, &r); err != nil {
			return nil, tomlError(file, err)
		}
		c.Relays = append(c.Relays, r)
	}
	for _, k := range md2.Undecoded() {
		return nil, &Error{File: file, Key: k.String(), Msg: "unknown key"}
	}
	if err := c.resolve(filepath.Dir(file)); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// tomlError turns a TOML decoding error into an Error with a line and
// key. Config files hold no secrets, so quoting values is fine.
func tomlError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: file, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
	}
	return &Error{File: file, Msg: err.Error()}
}

// resolve makes relative paths relative to the config file's directory.
func (c *Config) resolve(dir string) error {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.DataDir)
	abs(&c.Listen.TLSCert)
	abs(&c.Listen.TLSKey)
	abs(&c.Credentials.Identity)
	abs(&c.Credentials.File)
	abs(&c.Credentials.Recipients)
	v := &c.Credentials.Vault
	for _, p := range []*string{&v.TokenFile, &v.RoleIDFile, &v.SecretIDFile, &v.JWTFile, &v.CAFile} {
		abs(p)
	}
	for i := range c.Relays {
		abs(&c.Relays[i].CAFile)
	}
	return nil
}

// validate checks values and cross-field rules.
func (c *Config) validate() error {
	bad := func(key, format string, args ...any) error {
		return &Error{File: c.File, Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	if c.Hostname == "" {
		return bad("hostname", "empty, and the system host name is unknown")
	}
	if c.DataDir == "" {
		return bad("data_dir", "must be set")
	}
	if !slices.Contains([]string{"text", "json"}, c.LogFormat) {
		return bad("log_format", "must be text or json, not %q", c.LogFormat)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		return bad("log_level", "must be debug, info, warn or error, not %q", c.LogLevel)
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			return bad("metrics_address", "not host:port: %v", err)
		}
	}

	l := &c.Listen
	if _, _, err := net.SplitHostPort(l.Address); err != nil {
		return bad("listen.address", "not host:port: %q", l.Address)
	}
	l.networks = nil
	for i, n := range l.AllowedNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			a, aerr := netip.ParseAddr(n)
			if aerr != nil {
				return bad(fmt.Sprintf("listen.allowed_networks[%d]", i), "not a network in CIDR form (127.0.0.0/8): %q", n)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		l.networks = append(l.networks, p.Masked())
	}
	if l.MaxMessageBytes <= 0 {
		return bad("listen.max_message_bytes", "must be positive")
	}
	if l.MaxRecipients <= 0 {
		return bad("listen.max_recipients", "must be positive")
	}
	if (l.TLSCert == "") != (l.TLSKey == "") {
		return bad("listen.tls_cert", "tls_cert and tls_key go together")
	}
	if l.ReadTimeout.Duration <= 0 || l.WriteTimeout.Duration <= 0 {
		return bad("listen.read_timeout", "read_timeout and write_timeout must be positive")
	}
	if l.IdleTimeout.Duration <= 0 {
		return bad("listen.idle_timeout", "must be positive")
	}
	if l.MaxSessions <= 0 {
		return bad("listen.max_sessions", "must be positive")
	}
	if l.MaxSessionsPerClient <= 0 {
		return bad("listen.max_sessions_per_client", "must be positive")
	}

	if len(c.Relays) == 0 {
		return bad("relay", "at least one [[relay]] is needed")
	}
	names := map[string]bool{}
	for i := range c.Relays {
		r := &c.Relays[i]
		key := func(k string) string { return fmt.Sprintf("relay[%d].%s", i, k) }
		if names[r.Name] {
			return bad(key("name"), "relay name %q used twice", r.Name)
		}
		names[r.Name] = true
		host, port, err := net.SplitHostPort(r.Address)
		if err != nil || host == "" || port == "" {
			return bad(key("address"), "must be host:port, not %q", r.Address)
		}
		if !slices.Contains([]string{"starttls", "implicit", "none"}, r.TLS) {
			return bad(key("tls"), "must be starttls, implicit or none, not %q", r.TLS)
		}
		if r.Auth == "" {
			r.Auth = "disabled"
			if r.Credential != "" {
				r.Auth = "required"
			}
		}
		if !slices.Contains([]string{"required", "enabled", "disabled"}, r.Auth) {
			return bad(key("auth"), "must be required, enabled or disabled, not %q", r.Auth)
		}
		if r.Auth != "disabled" && r.Credential == "" {
			return bad(key("credential"), "auth = %q needs a credential entry name", r.Auth)
		}
		if r.AllowPlaintextAuth && r.TLS != "none" {
			return bad(key("allow_plaintext_auth"), "only meaningful with tls = \"none\"")
		}
		for j, m := range r.Mechanisms {
			r.Mechanisms[j] = strings.ToUpper(m)
			if !slices.Contains([]string{"PLAIN", "LOGIN"}, r.Mechanisms[j]) {
				return bad(fmt.Sprintf("relay[%d].mechanisms[%d]", i, j), "unsupported SASL mechanism %q (PLAIN and LOGIN are supported)", m)
			}
		}
		if len(r.Mechanisms) == 0 {
			return bad(key("mechanisms"), "must name at least one mechanism")
		}
		if r.MaxConnections <= 0 {
			return bad(key("max_connections"), "must be positive")
		}
		if r.CAFile != "" {
			if _, err := os.Stat(r.CAFile); err != nil {
				return bad(key("ca_file"), "%v", err)
			}
		}
	}

	cr := &c.Credentials
	switch cr.Source {
	case "age":
		if c.needsCredentials() {
			if cr.Identity == "" {
				return bad("credentials.identity", "must be set for source = \"age\"")
			}
			if cr.File == "" {
				return bad("credentials.file", "must be set for source = \"age\"")
			}
		}
	case "vault":
		v := &cr.Vault
		if v.Address != "" {
			v.Addresses = append([]string{v.Address}, v.Addresses...)
		}
		if len(v.Addresses) == 0 {
			if env := os.Getenv("VAULT_ADDR"); env != "" {
				v.Addresses, v.addrFromEnv = []string{env}, true
			} else {
				return bad("credentials.vault.address", "must be set (or VAULT_ADDR) for source = \"vault\"")
			}
		}
		switch v.Auth {
		case "token":
		case "approle":
			if v.RoleIDFile == "" || v.SecretIDFile == "" {
				return bad("credentials.vault.role_id_file", "auth = \"approle\" needs role_id_file and secret_id_file")
			}
		case "kubernetes":
			if v.KubernetesRole == "" {
				return bad("credentials.vault.kubernetes_role", "auth = \"kubernetes\" needs kubernetes_role")
			}
		default:
			return bad("credentials.vault.auth", "must be token, approle or kubernetes, not %q", v.Auth)
		}
		if v.Sealed && cr.Identity == "" {
			return bad("credentials.identity", "sealed = true needs this server's identity to unseal values")
		}
		if v.PollInterval.Duration < time.Second {
			return bad("credentials.vault.poll_interval", "must be at least 1s")
		}
	default:
		return bad("credentials.source", "must be age or vault, not %q", cr.Source)
	}
	if err := c.validateInsecure(); err != nil {
		return err
	}

	q := &c.Queue
	if q.MinBackoff.Duration <= 0 {
		return bad("queue.min_backoff", "must be positive")
	}
	if q.MaxBackoff.Duration < q.MinBackoff.Duration {
		return bad("queue.max_backoff", "must not be less than min_backoff (%s)", q.MinBackoff)
	}
	if q.MaxLifetime.Duration <= 0 {
		return bad("queue.max_lifetime", "must be positive")
	}
	if q.Workers <= 0 {
		return bad("queue.workers", "must be positive")
	}
	if q.MemoryBudget <= 0 {
		return bad("queue.memory_budget", "must be a positive number of bytes")
	}
	return nil
}

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
