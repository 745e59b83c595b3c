package agent

import "github.com/prometheus/client_golang/prometheus"

// Registry returns the Prometheus registry holding the agent's metrics, for
// this package's tests (users read them at metrics_address).
func (a *Agent) Registry() *prometheus.Registry { return a.reg }
