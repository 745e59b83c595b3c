package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sealrelay/sealrelay/keys"
)

// validate checks values and cross-field rules, table by table, and
// reports the first error. It changes nothing: whatever a default or a
// spelling fills in is done before, by normalize.
func (c *Config) validate() error {
	for _, check := range []func() error{
		c.validateTop,
		c.validateListen,
		c.validateRelays,
		c.validateRoutes,
		c.validateSendmail,
		c.validateCredentials,
		c.validateInsecure,
		c.validateQueue,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// bad returns an Error for key, without a line.
func (c *Config) bad(key, format string, args ...any) error {
	return &Error{File: c.File, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// validateTop checks the keys outside any table.
func (c *Config) validateTop() error {
	if c.Hostname == "" {
		return c.bad("hostname", "empty, and the system host name is unknown")
	}
	if c.DataDir == "" {
		return c.bad("data_dir", "must be set")
	}
	if !slices.Contains([]string{"text", "json"}, c.LogFormat) {
		return c.bad("log_format", "must be text or json, not %q", c.LogFormat)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		return c.bad("log_level", "must be debug, info, warn or error, not %q", c.LogLevel)
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			return c.bad("metrics_address", "not host:port: %v", err)
		}
	}
	return nil
}

// validateListen checks [listen].
func (c *Config) validateListen() error {
	l := &c.Listen
	if _, _, err := net.SplitHostPort(l.Address); err != nil {
		return c.bad("listen.address", "not host:port: %q", l.Address)
	}
	for i, n := range l.AllowedNetworks {
		if _, ok := parseNetwork(n); !ok {
			return c.bad(fmt.Sprintf("listen.allowed_networks[%d]", i), "not a network in CIDR form (127.0.0.0/8): %q", n)
		}
	}
	if l.MaxMessageBytes <= 0 {
		return c.bad("listen.max_message_bytes", "must be positive")
	}
	if l.MaxRecipients <= 0 {
		return c.bad("listen.max_recipients", "must be positive")
	}
	if (l.TLSCert == "") != (l.TLSKey == "") {
		return c.bad("listen.tls_cert", "tls_cert and tls_key go together")
	}
	if l.ReadTimeout.Duration <= 0 || l.WriteTimeout.Duration <= 0 {
		return c.bad("listen.read_timeout", "read_timeout and write_timeout must be positive")
	}
	if l.IdleTimeout.Duration <= 0 {
		return c.bad("listen.idle_timeout", "must be positive")
	}
	if l.MaxSessions <= 0 {
		return c.bad("listen.max_sessions", "must be positive")
	}
	if l.MaxSessionsPerClient <= 0 {
		return c.bad("listen.max_sessions_per_client", "must be positive")
	}
	return nil
}

// parseNetwork reads an allowed_networks entry: a prefix in CIDR form, or
// a single address.
func parseNetwork(n string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(n)
	if err != nil {
		a, aerr := netip.ParseAddr(n)
		if aerr != nil {
			return netip.Prefix{}, false
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return p.Masked(), true
}

// validateRelays checks each [[relay]].
func (c *Config) validateRelays() error {
	if len(c.Relays) == 0 {
		return c.bad("relay", "at least one [[relay]] is needed")
	}
	names := map[string]bool{}
	for i := range c.Relays {
		r := &c.Relays[i]
		key := func(k string) string { return fmt.Sprintf("relay[%d].%s", i, k) }
		if names[r.Name] {
			return c.bad(key("name"), "relay name %q used twice", r.Name)
		}
		names[r.Name] = true
		host, port, err := net.SplitHostPort(r.Address)
		if err != nil || host == "" || port == "" {
			return c.bad(key("address"), "must be host:port, not %q", r.Address)
		}
		if !slices.Contains([]string{"starttls", "implicit", "none"}, r.TLS) {
			return c.bad(key("tls"), "must be starttls, implicit or none, not %q", r.TLS)
		}
		if !slices.Contains([]string{"required", "enabled", "disabled"}, r.Auth) {
			return c.bad(key("auth"), "must be required, enabled or disabled, not %q", r.Auth)
		}
		if r.AllowPlaintextAuth && r.TLS != "none" {
			return c.bad(key("allow_plaintext_auth"), "only meaningful with tls = \"none\"")
		}
		if err := c.validateMechanisms(i, r); err != nil {
			return err
		}
		if r.MaxConnections <= 0 {
			return c.bad(key("max_connections"), "must be positive")
		}
		if r.CAFile != "" {
			if _, err := os.Stat(r.CAFile); err != nil {
				return c.bad(key("ca_file"), "%v", err)
			}
		}
	}
	return nil
}

// validateMechanisms checks a relay's mechanisms and what AUTH would
// use: its credential, or for EXTERNAL its client certificate.
func (c *Config) validateMechanisms(i int, r *Relay) error {
	key := func(k string) string { return fmt.Sprintf("relay[%d].%s", i, k) }
	if r.ClientCertificate != "" && r.TLS == "none" {
		return c.bad(key("client_certificate"), "a client certificate is shown in the TLS handshake: it needs tls = \"starttls\" or \"implicit\"")
	}
	for j, m := range r.Mechanisms {
		if !slices.Contains(mechanisms, m) {
			return c.bad(fmt.Sprintf("relay[%d].mechanisms[%d]", i, j), "unsupported SASL mechanism %q (supported: %s)", m, strings.Join(mechanisms, ", "))
		}
	}
	if len(r.Mechanisms) == 0 {
		return c.bad(key("mechanisms"), "must name at least one mechanism")
	}
	if slices.Contains(r.Mechanisms, "EXTERNAL") {
		switch {
		case r.ClientCertificate == "":
			return c.bad(key("mechanisms"), "EXTERNAL authenticates with the client certificate: set client_certificate")
		case r.Credential != "":
			return c.bad(key("mechanisms"), "EXTERNAL authenticates with the client certificate alone: with it, leave credential empty")
		}
	}
	if r.Auth != "disabled" && r.Credential == "" && !r.externalAuth() {
		return c.bad(key("credential"), "auth = %q needs a credential entry name (or a client_certificate with EXTERNAL in mechanisms)", r.Auth)
	}
	return nil
}

// validateCredentials checks [credentials] and, for source = "vault",
// [credentials.vault].
func (c *Config) validateCredentials() error {
	cr := &c.Credentials
	if name, ok := strings.CutPrefix(cr.Identity, keys.CredentialPrefix); ok && !keys.ValidCredentialName(name) {
		return c.bad("credentials.identity", "%q does not name a systemd credential: NAME must be 1 to 255 printable ASCII characters without \"/\" or \":\", as in LoadCredentialEncrypted=NAME:FILE", cr.Identity)
	}
	switch cr.Source {
	case "age":
		if c.needsCredentials() {
			if cr.Identity == "" {
				return c.bad("credentials.identity", "must be set for source = \"age\"")
			}
			if cr.File == "" {
				return c.bad("credentials.file", "must be set for source = \"age\"")
			}
		}
		return nil
	case "vault":
		return c.validateVault()
	default:
		return c.bad("credentials.source", "must be age or vault, not %q", cr.Source)
	}
}

// validateVault checks [credentials.vault].
func (c *Config) validateVault() error {
	v := &c.Credentials.Vault
	if len(v.Addresses) == 0 {
		return c.bad("credentials.vault.address", "must be set (or VAULT_ADDR) for source = \"vault\"")
	}
	switch v.Auth {
	case "token":
	case "approle":
		if v.RoleIDFile == "" || v.SecretIDFile == "" {
			return c.bad("credentials.vault.role_id_file", "auth = \"approle\" needs role_id_file and secret_id_file")
		}
	case "kubernetes":
		if v.KubernetesRole == "" {
			return c.bad("credentials.vault.kubernetes_role", "auth = \"kubernetes\" needs kubernetes_role")
		}
	default:
		return c.bad("credentials.vault.auth", "must be token, approle or kubernetes, not %q", v.Auth)
	}
	if v.Sealed && c.Credentials.Identity == "" {
		return c.bad("credentials.identity", "sealed = true needs this server's identity to unseal values")
	}
	if v.PollInterval.Duration < time.Second {
		return c.bad("credentials.vault.poll_interval", "must be at least 1s")
	}
	return nil
}

// validateQueue checks [queue].
func (c *Config) validateQueue() error {
	q := &c.Queue
	if q.MinBackoff.Duration <= 0 {
		return c.bad("queue.min_backoff", "must be positive")
	}
	if q.MaxBackoff.Duration < q.MinBackoff.Duration {
		return c.bad("queue.max_backoff", "must not be less than min_backoff (%s)", q.MinBackoff)
	}
	if q.MaxLifetime.Duration <= 0 {
		return c.bad("queue.max_lifetime", "must be positive")
	}
	if q.Workers <= 0 {
		return c.bad("queue.workers", "must be positive")
	}
	if q.MemoryBudget <= 0 {
		return c.bad("queue.memory_budget", "must be a positive number of bytes")
	}
	return nil
}
