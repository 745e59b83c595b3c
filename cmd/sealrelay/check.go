package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/agent/deliver"
	"github.com/sealrelay/sealrelay/secrets"
)

// cmdCheck validates the config, unseals the credentials, and for each relay
// connects, does TLS and AUTH as its policy says, and quits: no mail is sent.
// One line per relay. It fails if the config or the credentials fail, or if
// a relay with auth = "required" fails.
func cmdCheck(e *env, args []string) error {
	fs := newFlags("check")
	cfgPath := configFlag(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("check takes no arguments")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "config %s: ok (%d relays)\n", cfg.File, len(cfg.Relays))
	log := newLogger(cfg, e.stderr)
	warnInsecure(cfg, log)
	src, err := openSource(cfg, log)
	if err != nil {
		return err
	}
	relays, err := agent.DeliverRelays(cfg)
	if err != nil {
		return err
	}
	var creds deliver.Credentials
	credFailed := false
	if src != nil {
		if st, ok := src.(agent.Starter); ok {
			if err := st.Start(e.ctx); err != nil {
				printError(e.stderr, fmt.Errorf("credentials: %w", err))
			}
		}
		store := secrets.NewStore(src, cfg.CredentialNames(), secrets.StoreOptions{Logger: log})
		if err := store.Load(e.ctx); err != nil {
			fmt.Fprintf(e.stdout, "credentials %s: FAILED: %v\n", src, err)
			printError(e.stderr, fmt.Errorf("credentials: %w", err))
			credFailed = true
		} else {
			fmt.Fprintf(e.stdout, "credentials %s: ok (%s)\n", src, strings.Join(store.Names(), ", "))
		}
		creds = store
	}
	d, err := deliver.New(deliver.Options{Hostname: cfg.Hostname, Relays: relays, Credentials: creds, Logger: log})
	if err != nil {
		return err
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	failed := 0
	for _, r := range d.Check(ctx) {
		fmt.Fprintln(e.stdout, r.String())
		if !r.OK && r.Policy == deliver.AuthRequired {
			failed++
		}
	}
	switch {
	case credFailed:
		return fmt.Errorf("check failed: credentials cannot be read")
	case failed > 0:
		return fmt.Errorf("check failed: %d relay(s) with auth = \"required\" cannot be used", failed)
	}
	return nil
}
