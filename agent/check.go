package agent

import (
	"context"
	"log/slog"

	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/agent/deliver"
	"github.com/sealrelay/sealrelay/secrets"
)

// CredentialCheck is what Check found of the credentials.
type CredentialCheck struct {
	Source   string   // the source, as its String describes it
	StartErr error    // starting the source failed (Vault: the first login)
	Err      error    // loading the entries failed; nil when they loaded
	Names    []string // the entries the config names
}

// Check tries what serve would use, and sends no mail: it starts src and
// loads the credentials cfg names (src is nil when it names none), then
// connects to each relay, does TLS and AUTH as the relay's policy says, and
// quits. creds, if not nil, is told about the credentials before any relay
// is tried. Check returns one result per relay; its error means the delivery
// could not be set up from cfg.
func Check(ctx context.Context, cfg *config.Config, src secrets.Source, log *slog.Logger, creds func(CredentialCheck)) ([]deliver.CheckResult, error) {
	relays, err := DeliverRelays(cfg)
	if err != nil {
		return nil, err
	}
	var dc deliver.Credentials
	var tokens deliver.Tokens
	if src != nil {
		store := secrets.NewStore(src, cfg.CredentialNames(), secrets.StoreOptions{Logger: log})
		cc := CredentialCheck{Source: src.String(), StartErr: store.Start(ctx)}
		cc.Err = store.Load(ctx)
		cc.Names = store.Names()
		if creds != nil {
			creds(cc)
		}
		dc = store
		keeper := newRefreshKeeper(src, store, log)
		tk := keeper.newTokens()
		defer keeper.close()
		defer tk.Close()
		tokens = tk
	}
	d, err := deliver.New(deliver.Options{Hostname: cfg.Hostname, Relays: relays, Credentials: dc, Tokens: tokens, Logger: log})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	return d.Check(ctx), nil
}
