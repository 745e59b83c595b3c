package main

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
	"github.com/sealrelay/sealrelay/secrets/vault"
)

// openSource builds the credential source the config names. It returns nil
// when no relay uses a credential. This is the one place that chooses a
// Source: the agent packages only see the secrets.Source interface.
func openSource(cfg *config.Config, log *slog.Logger) (secrets.Source, error) {
	if len(cfg.CredentialNames()) == 0 {
		return nil, nil
	}
	cr := cfg.Credentials
	switch cr.Source {
	case "age":
		id, err := loadIdentity(cfg, log)
		if err != nil {
			return nil, err
		}
		return agefile.NewSource(cr.File, id), nil
	case "vault":
		return openVault(cfg, log)
	}
	return nil, fmt.Errorf("%s: credentials.source: unknown source %q", cfg.File, cr.Source)
}

// loadIdentity loads the server identity credentials.identity names (a
// file, or "credential:NAME" from $CREDENTIALS_DIRECTORY) and logs where it
// came from and its public key: never key material.
func loadIdentity(cfg *config.Config, log *slog.Logger) (*keys.Identity, error) {
	id, err := keys.LoadRef(cfg.Credentials.Identity)
	if err != nil {
		return nil, fmt.Errorf("%s: credentials.identity: %w", cfg.File, err)
	}
	log.Info("server identity", "source", id.Source(), "public_key", id.PublicKey())
	return id, nil
}

// openVault builds the Vault source; the identity is loaded only when
// values are sealed.
func openVault(cfg *config.Config, log *slog.Logger) (*vault.Source, error) {
	cr := cfg.Credentials
	v := cr.Vault
	var id *keys.Identity
	var rl *keys.RecipientList
	if v.Sealed {
		var err error
		if id, err = loadIdentity(cfg, log); err != nil {
			return nil, err
		}
		// To seal refresh tokens the provider rotates, written back.
		if cr.Recipients != "" {
			if rl, err = keys.LoadRecipients(cr.Recipients); err != nil {
				return nil, fmt.Errorf("%s: credentials.recipients: %w", cfg.File, err)
			}
		}
	}
	src, err := vault.New(vault.Config{
		Addresses:       v.Addresses,
		Mount:           v.Mount,
		Path:            v.Path,
		Auth:            v.Auth,
		TokenFile:       v.TokenFile,
		RoleIDFile:      v.RoleIDFile,
		SecretIDFile:    v.SecretIDFile,
		SecretIDWrapped: v.SecretIDWrapped,
		AppRoleMount:    v.AppRoleMount,
		KubernetesRole:  v.KubernetesRole,
		JWTFile:         v.JWTFile,
		KubernetesMount: v.KubernetesMount,
		CAFile:          v.CAFile,
		Sealed:          v.Sealed,
		Identity:        id,
		Recipients:      rl,
		Timeout:         v.Timeout.Duration,
		AgentsPath:      v.AgentsPath,
		Report:          v.ReportGenerations,
		Logger:          log.With("component", "vault"),
	})
	if err != nil {
		return nil, fmt.Errorf("%s: credentials.vault: %w", cfg.File, err)
	}
	return src, nil
}

// warnInsecure logs each insecure option the config uses (a secret
// crossing the network in clear): serve and check call it at every start.
func warnInsecure(cfg *config.Config, log *slog.Logger) {
	for _, s := range cfg.InsecureSettings() {
		log.Warn("insecure setting: a secret crosses the network in clear",
			"file", s.File, "line", s.Line, "key", s.Key, "detail", s.Msg)
	}
}

// newLogger returns the agent's structured logger writing to w in the
// config's format and level.
func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel)) //nolint:errcheck // validated by the config
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			a.Value = slog.StringValue(a.Value.Time().UTC().Format(time.RFC3339Nano))
		}
		return a
	}}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
