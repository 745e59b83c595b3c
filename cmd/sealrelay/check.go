package main

import (
	"fmt"
	"strings"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/agent/deliver"
)

// cmdCheck validates the config, unseals the credentials, and for each relay
// connects, does TLS and AUTH as its policy says, and quits: no mail is sent.
// One line per relay. It fails if the config or the credentials fail, or if
// a relay with auth = "required" or a client certificate fails.
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
	credFailed := false
	results, err := agent.Check(e.ctx, cfg, src, log, func(c agent.CredentialCheck) {
		if c.StartErr != nil {
			printError(e.stderr, fmt.Errorf("credentials: %w", c.StartErr))
		}
		if c.Err != nil {
			fmt.Fprintf(e.stdout, "credentials %s: FAILED: %v\n", c.Source, c.Err)
			printError(e.stderr, fmt.Errorf("credentials: %w", c.Err))
			credFailed = true
		} else {
			fmt.Fprintf(e.stdout, "credentials %s: ok (%s)\n", c.Source, strings.Join(c.Names, ", "))
		}
	})
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range results {
		if r.Token != nil {
			fmt.Fprintf(e.stdout, "relay %s (%s): %s\n", r.Relay, r.Address, r.Token)
		}
		fmt.Fprintln(e.stdout, r.String())
		if !r.OK && (r.Policy == deliver.AuthRequired || r.ClientCertificate != "") {
			failed++
		}
	}
	switch {
	case credFailed:
		return fmt.Errorf("check failed: credentials cannot be read")
	case failed > 0:
		return fmt.Errorf("check failed: %d relay(s) with auth = \"required\" or a client certificate cannot be used", failed)
	}
	return nil
}
