package agent

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealrelay/sealrelay/secrets"
)

// Generations: each agent says which generation of each credential it
// holds, never what the credential is (docs/credentials.md, "Rotation"),
// so that `sealrelay creds rotate` knows when every agent has switched:
//
//   - GET /generations on the metrics listener: a JSON object, one member
//     per credential the config names, each a secrets.Holding;
//   - the metrics sealrelay_credential_generation{name,generation} (1 for
//     the generation held), sealrelay_credential_generation_since_seconds
//     and sealrelay_credential_pooled_old_connections;
//   - with a source that takes reports (Vault), the same holdings written
//     under a path of the agent's own whenever they change, and every
//     reportRefresh.

// reportEvery is how often the holdings are compared with the last report.
const reportEvery = time.Second

// reportRefresh is how often a report is written even if nothing changed:
// its time says the agent is alive.
const reportRefresh = 5 * time.Minute

// generationReporter is a credential source that keeps what agents report
// (Vault).
type generationReporter interface {
	// AgentReportPath says where agent's report goes; "" if reports are
	// off.
	AgentReportPath(agent string) string
	WriteAgentReport(ctx context.Context, r secrets.AgentReport) error
}

// Generations returns, for each credential the config names, what the
// agent holds: generation, since when, whether it is loaded, and how many
// relay connections still rely on a replaced secret.
func (a *Agent) Generations() map[string]secrets.Holding {
	held := a.store.Holdings()
	old := a.deliv.OldConnections()
	out := make(map[string]secrets.Holding, len(a.store.Names()))
	for _, n := range a.store.Names() {
		h := held[n]
		h.PooledOld = old[n]
		out[n] = h
	}
	return out
}

func (a *Agent) serveGenerations(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(a.Generations()) //nolint:errcheck // the client went away
}

// reportGenerations writes the agent's holdings to the source, if it takes
// reports, until ctx ends: at start, whenever they change, and every
// reportRefresh. A failed write is logged once per change of state and
// tried again at the next look.
func (a *Agent) reportGenerations(ctx context.Context) {
	rep, ok := a.src.(generationReporter)
	if !ok || len(a.store.Names()) == 0 {
		return
	}
	path := rep.AgentReportPath(a.cfg.Hostname)
	if path == "" {
		return
	}
	a.log.Info("reporting credential generations", "agent", a.cfg.Hostname, "path", path)
	tick := time.NewTicker(reportEvery)
	defer tick.Stop()
	var (
		last    map[string]secrets.Holding
		written time.Time
		failing string
	)
	for {
		cur := a.Generations()
		if written.IsZero() || time.Since(written) >= reportRefresh || !sameHoldings(cur, last) {
			err := rep.WriteAgentReport(ctx, secrets.AgentReport{Agent: a.cfg.Hostname, Updated: time.Now().UTC(), Credentials: cur})
			switch {
			case err != nil && ctx.Err() == nil:
				if err.Error() != failing {
					attrs := []any{"path", path, "err", err.Error()}
					var h interface{ Hint() string }
					if errors.As(err, &h) && h.Hint() != "" {
						attrs = append(attrs, "hint", h.Hint())
					}
					a.log.Warn("cannot write this agent's generation report; a rotation waiting for it will name this agent", attrs...)
				}
				failing, written = err.Error(), time.Time{}
			case err == nil:
				if failing != "" {
					a.log.Info("generation report written again", "path", path)
				}
				failing, last, written = "", cur, time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func sameHoldings(x, y map[string]secrets.Holding) bool {
	return maps.EqualFunc(x, y, func(a, b secrets.Holding) bool {
		return a.Generation == b.Generation && a.Since.Equal(b.Since) && a.Loaded == b.Loaded && a.PooledOld == b.PooledOld
	})
}

// generationCollector exposes Generations as metrics.
type generationCollector struct {
	a                       *Agent
	generation, since, pool *prometheus.Desc
}

func newGenerationCollector(a *Agent) *generationCollector {
	name := []string{"name"}
	return &generationCollector{
		a: a,
		generation: prometheus.NewDesc("sealrelay_credential_generation",
			"1 for the generation of each credential the agent holds (a random id, not derived from the secret).", []string{"name", "generation"}, nil),
		since: prometheus.NewDesc("sealrelay_credential_generation_since_seconds",
			"When the agent began to hold the credential's current generation, in seconds since the epoch.", name, nil),
		pool: prometheus.NewDesc("sealrelay_credential_pooled_old_connections",
			"Relay connections, pooled or in use, that authenticated with a secret the agent no longer holds.", name, nil),
	}
}

func (c *generationCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.generation
	ch <- c.since
	ch <- c.pool
}

func (c *generationCollector) Collect(ch chan<- prometheus.Metric) {
	for n, h := range c.a.Generations() {
		ch <- prometheus.MustNewConstMetric(c.pool, prometheus.GaugeValue, float64(h.PooledOld), n)
		if !h.Loaded {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.generation, prometheus.GaugeValue, 1, n, h.Generation)
		ch <- prometheus.MustNewConstMetric(c.since, prometheus.GaugeValue, float64(h.Since.UnixNano())/1e9, n)
	}
}
