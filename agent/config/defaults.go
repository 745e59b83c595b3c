package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sealrelay/sealrelay/agent/deliver"
	"github.com/sealrelay/sealrelay/agent/smtpd"
	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/keys"
)

// Default returns a Config holding every default. It is the one place
// the agent's defaults are set: where a library package (smtpd, spool,
// deliver) has a default of its own for the same setting, Default takes
// that package's constant, so the two cannot differ. The documentation
// (docs/config.md, the README, sealrelay.toml(5)) is generated from it.
func Default() *Config {
	host, _ := os.Hostname()
	return &Config{
		Hostname:  host,
		DataDir:   "/var/lib/sealrelay",
		LogFormat: "text",
		LogLevel:  "info",
		Listen: Listen{
			Address:         "127.0.0.1:2525",
			AllowedNetworks: prefixes(smtpd.DefaultAllowedNetworks),
			MaxMessageBytes: smtpd.DefaultMaxMessageBytes,
			MaxRecipients:   smtpd.DefaultMaxRecipients,
			ReadTimeout:     dur(smtpd.DefaultTimeout),
			WriteTimeout:    dur(smtpd.DefaultTimeout),
			IdleTimeout:     dur(smtpd.DefaultIdleTimeout),

			MaxSessions:          smtpd.DefaultMaxSessions,
			MaxSessionsPerClient: smtpd.DefaultMaxSessionsPerClient,
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
			MinBackoff:   dur(spool.DefaultMinBackoff),
			MaxBackoff:   dur(spool.DefaultMaxBackoff),
			MaxLifetime:  dur(spool.DefaultMaxLifetime),
			Workers:      spool.DefaultWorkers,
			DrainTimeout: dur(spool.DefaultDrainTimeout),
			MemoryBudget: spool.DefaultMemoryBudget,
		},
	}
}

// defaultRelay returns the defaults of the i-th [[relay]] (from 0).
func defaultRelay(i int) Relay {
	return Relay{
		Name:           fmt.Sprintf("relay%d", i+1),
		TLS:            string(deliver.TLSStartTLS),
		Mechanisms:     slices.Clone(deliver.DefaultMechanisms),
		MaxConnections: deliver.DefaultMaxConnections,
		IdleTimeout:    dur(deliver.DefaultIdleTimeout),
		ConnectTimeout: dur(deliver.DefaultConnectTimeout),
		CommandTimeout: dur(deliver.DefaultCommandTimeout),
	}
}

func dur(d time.Duration) Duration { return Duration{d} }

// prefixes writes networks as allowed_networks does.
func prefixes(networks []netip.Prefix) []string {
	out := make([]string, len(networks))
	for i, p := range networks {
		out[i] = p.String()
	}
	return out
}

// resolve makes relative paths relative to the config file's directory.
func (c *Config) resolve(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.DataDir)
	abs(&c.Listen.TLSCert)
	abs(&c.Listen.TLSKey)
	if !strings.HasPrefix(c.Credentials.Identity, keys.CredentialPrefix) {
		abs(&c.Credentials.Identity)
	}
	abs(&c.Credentials.File)
	abs(&c.Credentials.Recipients)
	v := &c.Credentials.Vault
	for _, p := range []*string{&v.TokenFile, &v.RoleIDFile, &v.SecretIDFile, &v.JWTFile, &v.CAFile} {
		abs(p)
	}
	for i := range c.Relays {
		abs(&c.Relays[i].CAFile)
	}
}

// normalize fills in what depends on other keys or on the environment, and
// spells names one way, before validate: a route's relays (every relay
// when it names none), a relay's auth from whether it has a credential, SASL mechanism names in upper case, and Vault's
// addresses (address first, then addresses; VAULT_ADDR when neither is
// set).
func (c *Config) normalize() {
	c.normalizeRoutes()
	for i := range c.Relays {
		r := &c.Relays[i]
		for j, m := range r.Mechanisms {
			if up := strings.ToUpper(m); slices.Contains(mechanisms, up) {
				r.Mechanisms[j] = up
			}
		}
		if r.Auth == "" {
			r.Auth = string(deliver.AuthDisabled)
			if r.Credential != "" || r.externalAuth() {
				r.Auth = string(deliver.AuthRequired)
			}
		}
	}
	if c.Credentials.Source != "vault" {
		return
	}
	v := &c.Credentials.Vault
	if v.Address != "" {
		v.Addresses = append([]string{v.Address}, v.Addresses...)
	}
	if len(v.Addresses) == 0 {
		if env := os.Getenv("VAULT_ADDR"); env != "" {
			v.Addresses, v.addrFromEnv = []string{env}, true
		}
	}
}
