package rig

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/secrets"
)

// Send plays an application: one message over plain SMTP to addr, on a
// connection of its own, introduced as helo. It returns the error of the
// transaction (an *smtp.SMTPError for a refusal); nil means 250.
func Send(addr, helo, from string, to []string, msg string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello(helo); err != nil {
		return err
	}
	if err := c.SendMail(from, to, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// StartAgent builds the agent from cfg and src as `sealrelay serve` does,
// and runs it until stop is called (or ctx ends); stop returns what Run
// returned, and may be called more than once.
func StartAgent(ctx context.Context, cfg *config.Config, src secrets.Source, log *slog.Logger) (a *agent.Agent, stop func() error, err error) {
	a, err = agent.New(cfg, src, agent.Options{Logger: log})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return a, sync.OnceValue(func() error { cancel(); return <-done }), nil
}

// Poll checks cond every 20 ms until it holds, or fails when ctx ends.
func Poll(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("rig: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
