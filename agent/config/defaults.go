package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sealrelay/sealrelay/agent/spool"
)

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
}

// normalize fills in what depends on other keys or on the environment, and
// spells names one way, before validate: a relay's auth from whether it
// has a credential, SASL mechanism names in upper case, and Vault's
// addresses (address first, then addresses; VAULT_ADDR when neither is
// set).
func (c *Config) normalize() {
	for i := range c.Relays {
		r := &c.Relays[i]
		if r.Auth == "" {
			r.Auth = "disabled"
			if r.Credential != "" {
				r.Auth = "required"
			}
		}
		for j, m := range r.Mechanisms {
			if up := strings.ToUpper(m); slices.Contains(mechanisms, up) {
				r.Mechanisms[j] = up
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
