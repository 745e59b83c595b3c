package main

import (
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets/rotate"
)

// rotateFlags are the flags only creds rotate takes.
type rotateFlags struct {
	resume, abort *bool
}

// defineRotateFlags defines them.
func defineRotateFlags(fs *flag.FlagSet) *rotateFlags {
	return &rotateFlags{
		resume: fs.Bool("resume", false, "rotate: continue the unfinished rotation of NAME from where it stopped"),
		abort:  fs.Bool("abort", false, "rotate: roll the unfinished rotation of NAME back: the previous entry back, the new secret retired at the relay"),
	}
}

// credsRotate rotates one entry (docs/credentials.md, "Rotation"): the
// config's [rotation] table gives the fleet, the hooks and the password
// policy; the entry is the age file of -f (read with -i, sealed to -R) or,
// with --vault, the Vault the config names.
func credsRotate(e *env, args []string) error {
	flags, c := newCredsFlags("rotate")
	rf := defineRotateFlags(flags)
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	name, err := entryName("rotate", pos)
	if err != nil {
		return err
	}
	if *rf.resume && *rf.abort {
		return usagef("creds rotate takes --resume or --abort, not both")
	}
	if *c.config == "" {
		return usagef("creds rotate needs -c CONFIG: its [rotation] table names the fleet and the hooks")
	}
	var r *rotate.Rotation
	if *c.vault {
		cfg, src, stop, err := vaultFromConfig(e, c)
		if err != nil {
			return err
		}
		defer stop()
		rl, err := vaultRecipients(cfg, c)
		if err != nil {
			return err
		}
		r = newRotation(cfg, name, &rotate.Vault{Source: src, Recipients: rl})
		v := cfg.Credentials.Vault
		dir := cfg.Rotation.StateDir
		if dir == "" {
			dir = cfg.DataDir
		}
		r.StatePath = filepath.Join(dir, "vault-"+strings.ReplaceAll(v.Mount+"-"+v.Path, "/", "-")+".rotate-"+name+".json")
		if len(cfg.Rotation.Fleet) == 0 {
			r.Fleet = &rotate.ReportFleet{Where: "the agents reporting to " + v.Mount + "/" + v.AgentsPath, Reports: src.AgentReports}
		}
	} else {
		if err := c.require("f", "R", "i"); err != nil {
			return err
		}
		cfg, err := config.Load(*c.config)
		if err != nil {
			return err
		}
		rl, id, err := loadKeys(e, c)
		if err != nil {
			return err
		}
		r = newRotation(cfg, name, &rotate.AgeFile{Path: *c.file, Recipients: rl, Identity: id})
		dir := cfg.Rotation.StateDir
		if dir == "" {
			dir = filepath.Dir(*c.file)
		}
		r.StatePath = filepath.Join(dir, filepath.Base(*c.file)+".rotate-"+name+".json")
	}
	if r.Fleet == nil {
		return usagef("%s: rotation.fleet is empty: list the agents' metrics_address, so the rotation knows when they all hold the new secret", *c.config)
	}
	r.Out = e.stderr
	switch {
	case *rf.resume:
		err = r.Resume(e.ctx)
	case *rf.abort:
		err = r.Abort(e.ctx)
	default:
		err = r.Start(e.ctx)
	}
	if err != nil {
		return fmt.Errorf("rotate %s: %w", name, err)
	}
	return nil
}

// newRotation is a rotation of name with the config's [rotation] settings
// and, if it lists one, its fleet.
func newRotation(cfg *config.Config, name string, b rotate.Backend) *rotate.Rotation {
	rc := cfg.Rotation
	r := &rotate.Rotation{
		Name:     name,
		Backend:  b,
		Hooks:    rotate.Hooks{Make: rc.MakeHook, Set: rc.SetHook, Retire: rc.RetireHook, Timeout: rc.HookTimeout.Duration},
		Password: rotate.Password{Length: rc.PasswordLength, Alphabet: rc.PasswordAlphabet},
		Wait:     rc.WaitTimeout.Duration,
		Poll:     rc.PollInterval.Duration,
	}
	if len(rc.Fleet) > 0 {
		r.Fleet = &rotate.HTTPFleet{Addrs: rc.Fleet}
	}
	return r
}

// vaultRecipients loads the recipient list Vault's secrets are sealed to
// (-R, else credentials.recipients) when sealed = true; nil otherwise.
func vaultRecipients(cfg *config.Config, c *credsFlags) (*keys.RecipientList, error) {
	if !cfg.Credentials.Vault.Sealed {
		if *c.recipients != "" {
			return nil, usagef("%s: credentials.vault.sealed is off: the secrets are stored unsealed, so -R makes no sense", cfg.File)
		}
		return nil, nil
	}
	path := *c.recipients
	if path == "" {
		path = cfg.Credentials.Recipients
	}
	if path == "" {
		return nil, usagef("%s: credentials.vault.sealed is on: give -R RECIPIENTS or set credentials.recipients", cfg.File)
	}
	return keys.LoadRecipients(path)
}
