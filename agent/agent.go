package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/agent/deliver"
	"github.com/sealrelay/sealrelay/agent/maildrop"
	"github.com/sealrelay/sealrelay/agent/smtpd"
	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/roots"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/oauth"
)

// Agent is one running sealrelay: listener, spool, delivery and the
// credential store.
type Agent struct {
	cfg   *config.Config
	log   *slog.Logger
	src   secrets.Source
	store *secrets.Store
	queue *spool.Queue
	deliv *deliver.Deliverer
	smtp  *smtpd.Server
	ln    net.Listener
	reg   *prometheus.Registry
	drop  *maildrop.Pickup

	tokens *oauth.Tokens  // access tokens of oauth2 credentials, in memory
	keeper *refreshKeeper // what becomes of rotated refresh tokens

	closeOnce sync.Once
	svc       atomic.Pointer[service] // set while Run runs under systemd (service.go)
	attempts  attemptMetrics          // delivery delay and deferrals (metrics.go)
	draining  atomic.Bool             // Run is stopping: /readyz says so
}

// Options are the parts of an Agent that do not come from the config file.
type Options struct {
	Logger *slog.Logger
}

// New builds an Agent from cfg and a credential source (which the caller
// chooses: an age file or Vault). It opens the spool, loading and scheduling
// what is queued, and binds the listener, but starts nothing: call Run.
func New(cfg *config.Config, src secrets.Source, opt Options) (*Agent, error) {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{cfg: cfg, log: log, src: src}

	relays, err := DeliverRelays(cfg)
	if err != nil {
		return nil, err
	}
	a.store = secrets.NewStore(src, cfg.CredentialNames(), secrets.StoreOptions{
		PollInterval: cfg.Credentials.Vault.PollInterval.Duration,
		Logger:       log.With("component", "credentials"),
	})
	a.keeper = newRefreshKeeper(src, a.store, log.With("component", "oauth2"))
	a.tokens = a.keeper.newTokens()
	a.deliv, err = deliver.New(deliver.Options{
		Hostname:    cfg.Hostname,
		Relays:      relays,
		Routes:      DeliverRoutes(cfg),
		Credentials: a.store,
		Tokens:      a.tokens,
		Logger:      log.With("component", "deliver"),
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}

	var tlsConf *tls.Config
	if cfg.Listen.TLSCert != "" {
		tlsConf, err = smtpd.LoadTLS(cfg.Listen.TLSCert, cfg.Listen.TLSKey)
		if err != nil {
			a.deliv.Close()
			return nil, fmt.Errorf("%s: listen.tls_cert: %w", cfg.File, err)
		}
	}

	a.queue, err = spool.Open(spool.Options{
		Dir:          cfg.SpoolDir(),
		Hostname:     cfg.Hostname,
		MinBackoff:   cfg.Queue.MinBackoff.Duration,
		MaxBackoff:   cfg.Queue.MaxBackoff.Duration,
		MaxLifetime:  cfg.Queue.MaxLifetime.Duration,
		Workers:      cfg.Queue.Workers,
		DrainTimeout: cfg.Queue.DrainTimeout.Duration,
		MemoryBudget: cfg.Queue.MemoryBudget,
		Logger:       log.With("component", "spool"),
	})
	if err != nil {
		a.deliv.Close()
		return nil, err
	}

	if a.drop, err = newPickup(cfg, a.queue, log); err != nil {
		a.closeParts()
		return nil, err
	}

	a.smtp, err = smtpd.New(smtpd.Options{
		Hostname:             cfg.Hostname,
		AllowedNetworks:      cfg.Listen.Networks(),
		MaxMessageBytes:      cfg.Listen.MaxMessageBytes,
		MaxRecipients:        cfg.Listen.MaxRecipients,
		ReadTimeout:          cfg.Listen.ReadTimeout.Duration,
		WriteTimeout:         cfg.Listen.WriteTimeout.Duration,
		IdleTimeout:          cfg.Listen.IdleTimeout.Duration,
		MaxSessions:          cfg.Listen.MaxSessions,
		MaxSessionsPerClient: cfg.Listen.MaxSessionsPerClient,
		TLSConfig:            tlsConf,
		Logger:               log.With("component", "smtpd"),
	}, a.queue)
	if err != nil {
		a.closeParts()
		return nil, err
	}

	a.ln, err = net.Listen("tcp", cfg.Listen.Address)
	if err != nil {
		a.closeParts()
		return nil, fmt.Errorf("%s: listen.address: %w", cfg.File, err)
	}
	a.attempts = newAttemptMetrics()
	a.reg = a.registry()
	return a, nil
}

// Addr is the listener's address (useful when the config said port 0).
func (a *Agent) Addr() net.Addr { return a.ln.Addr() }

// Store returns the credential store.
func (a *Agent) Store() *secrets.Store { return a.store }

// Queue returns the spool.
func (a *Agent) Queue() *spool.Queue { return a.queue }

// Deliverer returns the delivery code.
func (a *Agent) Deliverer() *deliver.Deliverer { return a.deliv }

// Listener returns the inbound SMTP server.
func (a *Agent) Listener() *smtpd.Server { return a.smtp }

// Reload re-reads every credential (SIGHUP). On failure the old credentials
// stay in use; the error says why.
func (a *Agent) Reload(ctx context.Context) error {
	defer a.reloading()()
	if len(a.store.Names()) == 0 {
		return nil
	}
	return a.store.Load(ctx)
}

// Run serves until ctx ends, then stops accepting, lets sessions in
// progress and in-flight deliveries finish (bounded by queue.drain_timeout),
// and returns. A credential source that cannot be read at start does not
// stop the agent: mail is accepted and spooled, and deliveries that need a
// credential are deferred until it can be read.
func (a *Agent) Run(ctx context.Context) error {
	defer a.closeParts()
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	var wg sync.WaitGroup
	goBG := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}

	if len(a.store.Names()) > 0 {
		if err := a.store.Start(bg); err != nil {
			a.log.Error("credential source not ready; deliveries are deferred until it is", "source", a.src.String(), "err", err)
		}
		if err := a.store.Load(ctx); err == nil {
			a.log.Info("credentials loaded", "source", a.src.String(), "entries", len(a.store.Names()))
		}
		goBG(func() { a.store.Run(bg) })
		goBG(func() { a.reportGenerations(bg) })
	}

	var metricsSrv *http.Server
	if a.cfg.MetricsAddress != "" {
		ml, err := net.Listen("tcp", a.cfg.MetricsAddress)
		if err != nil {
			return fmt.Errorf("%s: metrics_address: %w", a.cfg.File, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
		h := &health{a: a}
		mux.HandleFunc("GET /healthz", h.healthz)
		mux.HandleFunc("GET /readyz", h.readyz)
		mux.HandleFunc("GET /generations", a.serveGenerations)
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		goBG(func() { metricsSrv.Serve(ml) }) //nolint:errcheck // ends with Shutdown
		a.log.Info("metrics listening", "address", ml.Addr().String())
	}

	ctl, err := a.listenControl()
	if err != nil {
		return err
	}
	goBG(func() { a.serveControl(bg, ctl) })

	qctx, stopQueue := context.WithCancel(context.WithoutCancel(ctx))
	queueDone := make(chan struct{})
	go func() { a.queue.Run(qctx, observed{a.deliv, a.attempts}); close(queueDone) }()

	// The maildrop's pickup stops before the spool does: it puts into it.
	dctx, stopDrop := context.WithCancel(bg)
	dropDone := make(chan struct{})
	go func() {
		if a.drop != nil {
			a.drop.Run(dctx)
		}
		close(dropDone)
	}()

	serveErr := make(chan error, 1)
	accept := watchAccept(a.ln)
	go func() { serveErr <- a.smtp.Serve(accept) }()
	a.log.Info("listening", "address", a.ln.Addr().String(), "relays", len(a.cfg.Relays), "spool", a.cfg.SpoolDir())
	svc := a.startService(bg, accept, queueDone)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			runErr = fmt.Errorf("listener: %w", err)
		}
	}
	a.draining.Store(true)
	svc.stopping()
	a.log.Info("stopping: no new connections; finishing sessions and deliveries in progress")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.Queue.DrainTimeout.Duration)
	a.smtp.Shutdown(sctx) //nolint:errcheck // best effort within the drain time
	cancel()
	stopDrop()
	<-dropDone
	stopQueue()
	<-queueDone
	ctl.Close()
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	stopBG()
	wg.Wait()
	a.log.Info("stopped")
	return runErr
}

// Close releases what New acquired, for an Agent that is not Run.
func (a *Agent) Close() error {
	a.closeParts()
	return nil
}

func (a *Agent) closeParts() {
	a.closeOnce.Do(func() {
		if a.ln != nil {
			a.ln.Close()
		}
		if a.deliv != nil {
			a.deliv.Close()
		}
		if a.tokens != nil {
			a.tokens.Close()
			a.keeper.close()
		}
		if a.queue != nil {
			a.queue.Close()
		}
	})
}

// DeliverRelays converts the [[relay]] tables of c for the delivery code,
// loading each ca_file.
func DeliverRelays(c *config.Config) ([]deliver.Relay, error) {
	var out []deliver.Relay
	for i, r := range c.Relays {
		pool, err := roots.Load(r.CAFile)
		if err != nil {
			return nil, &config.Error{File: c.File, Key: fmt.Sprintf("relay[%d].ca_file", i), Msg: err.Error()}
		}
		out = append(out, deliver.Relay{
			Name:               r.Name,
			Address:            r.Address,
			TLS:                deliver.TLSMode(r.TLS),
			Auth:               deliver.AuthPolicy(r.Auth),
			Credential:         r.Credential,
			ClientCertificate:  r.ClientCertificate,
			RootCAs:            pool,
			ServerName:         r.ServerName,
			AllowPlaintextAuth: r.AllowPlaintextAuth,
			Mechanisms:         r.Mechanisms,
			MaxConnections:     r.MaxConnections,
			IdleTimeout:        r.IdleTimeout.Duration,
			ConnectTimeout:     r.ConnectTimeout.Duration,
			CommandTimeout:     r.CommandTimeout.Duration,
			Limits:             deliverLimits(r.Limits),
		})
	}
	return out, nil
}

// DeliverRoutes converts the [[route]] tables of c for the delivery code.
func DeliverRoutes(c *config.Config) []deliver.Route {
	var out []deliver.Route
	for _, r := range c.Routes {
		out = append(out, deliver.Route{
			Name:             r.Name,
			Senders:          r.Senders,
			RecipientDomains: r.RecipientDomains,
			Relays:           r.Relays,
			Limits:           deliverLimits(r.Limits),
		})
	}
	return out
}

func deliverLimits(l config.Limits) deliver.Limits {
	return deliver.Limits{
		MessagesPerMinute:    l.MaxMessagesPerMinute,
		MessagesPerSecond:    l.MaxMessagesPerSecond,
		RecipientsPerMessage: l.MaxRecipientsPerMessage,
	}
}
