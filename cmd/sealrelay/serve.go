package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
)

// defaultConfig is where serve, check and queue look without -c.
const defaultConfig = "/etc/sealrelay/sealrelay.toml"

// configFlag defines -c, the agent's config, for serve, check and queue.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("c", defaultConfig, "the agent's config file `CONFIG`")
}

func cmdServe(e *env, args []string) error {
	fs := newFlags("serve")
	cfgPath := configFlag(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("serve takes no arguments")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg, e.stderr)
	warnInsecure(cfg, log)
	src, err := openSource(cfg, log)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, src, agent.Options{Logger: log})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading credentials")
				if err := a.Reload(ctx); err != nil {
					log.Warn("credential reload failed; keeping the credentials in use", "err", err)
				} else {
					log.Info("credentials reloaded")
				}
			}
		}
	}()
	return a.Run(ctx)
}
