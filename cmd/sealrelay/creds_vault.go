package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/secrets/vault"
)

// vaultFromConfig loads the agent config named by -c and logs in to the
// Vault it names.
func vaultFromConfig(e *env, c *credsFlags) (*config.Config, *vault.Source, func(), error) {
	if *c.config == "" {
		return nil, nil, nil, usagef("creds %s --vault needs -c CONFIG", c.sub)
	}
	if *c.file != "" || *c.identity != "" {
		return nil, nil, nil, usagef("creds %s --vault takes the Vault and identity from -c CONFIG, not -f or -i", c.sub)
	}
	cfg, err := config.Load(*c.config)
	if err != nil {
		return nil, nil, nil, err
	}
	if cfg.Credentials.Source != "vault" {
		return nil, nil, nil, fmt.Errorf("%s: credentials.source is %q, not \"vault\"", cfg.File, cfg.Credentials.Source)
	}
	for _, s := range cfg.InsecureSettings() {
		fmt.Fprintf(e.stderr, "sealrelay: warning: %s\n", s)
	}
	src, err := openVault(cfg, newLogger(cfg, io.Discard))
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithCancel(e.ctx)
	if err := src.Start(ctx); err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return cfg, src, cancel, nil
}

// credsSetVault writes the entry req describes to Vault, its secrets
// sealed to the recipient list when the config says sealed = true.
func credsSetVault(e *env, c *credsFlags, req *setRequest) error {
	cfg, src, stop, err := vaultFromConfig(e, c)
	if err != nil {
		return err
	}
	defer stop()
	rl, err := vaultRecipients(cfg, c)
	if err != nil {
		return err
	}
	cred, err := req.build(e)
	if err != nil {
		return err
	}
	version, err := src.PutCredential(e.ctx, cred, rl)
	if err != nil {
		return err
	}
	how := "unsealed (Vault's access control protects it)"
	if rl != nil {
		how = "sealed to " + describe(rl)
	}
	fmt.Fprintf(e.stderr, "sealrelay: wrote entry %q (%s) to %s as version %d, %s\n", req.name, summary(cred), src, version, how)
	return nil
}

// credsListVault prints the Vault entries: names, kinds, usernames,
// generations, versions and non-secret fields, never a secret.
func credsListVault(e *env, c *credsFlags) error {
	if *c.recipients != "" {
		return usagef("creds list takes no -R")
	}
	_, src, stop, err := vaultFromConfig(e, c)
	if err != nil {
		return err
	}
	defer stop()
	list, err := src.List(e.ctx)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintf(e.stderr, "sealrelay: %s holds no entries\n", src)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tUSERNAME\tGENERATION\tVERSION\tSEALED\tDETAILS")
	for _, en := range list {
		state := map[bool]string{true: "yes", false: "no"}[en.Sealed]
		kind, detail := string(en.Public.Kind()), details(en.Public)
		switch {
		case en.Deleted:
			state, kind, detail = "(deleted)", "-", ""
		case en.Err != nil:
			kind, detail = "?", "invalid: "+en.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", en.Name, kind, dash(en.Username), dash(en.Public.Generation), en.Version, state, detail)
		warn(e, en.Public)
	}
	return tw.Flush()
}
