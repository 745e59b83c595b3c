package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// registry exposes the counters each part keeps (their Stats methods) as
// Prometheus metrics. The parts know nothing of Prometheus.
func (a *Agent) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	counter := func(name, help string, f func() uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "sealrelay", Name: name, Help: help},
			func() float64 { return float64(f()) }))
	}
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "sealrelay", Name: name, Help: help}, f))
	}

	counter("smtpd_sessions_total", "Inbound SMTP connections accepted.", func() uint64 { return a.smtp.Stats().Sessions })
	counter("smtpd_accepted_total", "Messages acknowledged with 250 (durable in the spool).", func() uint64 { return a.smtp.Stats().Accepted })
	gauge("smtpd_sessions_open", "Inbound SMTP connections open now.", func() float64 { return float64(a.smtp.Stats().SessionsOpen) })
	counter("smtpd_connection_errors_total", "Inbound sessions ended by a connection error (a reset), not by QUIT, EOF or a timeout.",
		func() uint64 { return a.smtp.Stats().ConnectionErrors })
	reg.MustRegister(&rejectedCollector{a: a, desc: prometheus.NewDesc("sealrelay_smtpd_rejected_total",
		"Inbound commands or messages refused, by reason.", []string{"reason"}, nil)})

	counter("spool_accepted_total", "Messages written to the spool.", func() uint64 { return a.queue.Stats().Accepted })
	counter("spool_delivered_total", "Recipients delivered.", func() uint64 { return a.queue.Stats().Delivered })
	counter("spool_deferred_total", "Recipient attempts that failed temporarily.", func() uint64 { return a.queue.Stats().Deferred })
	counter("spool_failed_total", "Recipients that failed permanently or expired.", func() uint64 { return a.queue.Stats().Failed })
	counter("spool_bounced_total", "DSNs generated.", func() uint64 { return a.queue.Stats().Bounced })
	counter("spool_expired_total", "Recipients that expired at queue.max_lifetime.", func() uint64 { return a.queue.Stats().Expired })
	counter("spool_quarantined_total", "Damaged spool items moved aside at start.", func() uint64 { return a.queue.Stats().Quarantined })
	counter("spool_put_failures_total", "Messages that could not be made durable (answered 451).", func() uint64 { return a.queue.Stats().PutFailures })
	gauge("spool_queued", "Items in the spool now.", func() float64 { return float64(a.queue.Stats().Queued) })
	gauge("spool_held_items", "Items kept in a failed state because no DSN can be sent for them (null sender); `sealrelay queue list` shows them, `sealrelay queue delete` removes them.",
		func() float64 { return float64(a.queue.Stats().Held) })
	gauge("spool_buffered_bytes", "Memory held for the bodies of messages being received (at most queue.memory_budget).",
		func() float64 { return float64(a.queue.Stats().Buffered) })
	counter("spool_spilled_total", "Messages streamed to a file of their own as they arrived: too big for the journal, or beyond the memory budget.",
		func() uint64 { return a.queue.Stats().Spilled })

	counter("deliver_attempts_total", "Delivery attempts.", func() uint64 { return a.deliv.Stats().Attempts })
	counter("deliver_auth_ok_total", "Successful AUTH exchanges with a relay.", func() uint64 { return a.deliv.Stats().AuthOK })
	counter("deliver_auth_failures_total", "AUTH exchanges refused by a relay or broken.", func() uint64 { return a.deliv.Stats().AuthFailures })
	counter("deliver_auth_retries_total", "AUTH retried after a 535 and a credential refresh.", func() uint64 { return a.deliv.Stats().AuthRetries })
	counter("deliver_auth_fallbacks_total", "Sessions continued without AUTH under auth = enabled.", func() uint64 { return a.deliv.Stats().AuthFallbacks })
	counter("deliver_tls_failures_total", "STARTTLS missing or TLS handshakes or verification failed.", func() uint64 { return a.deliv.Stats().TLSFailures })
	counter("deliver_connection_failures_total", "Relays that could not be used for an attempt.", func() uint64 { return a.deliv.Stats().ConnectionFailures })
	counter("deliver_connections_opened_total", "Relay connections opened.", func() uint64 { return a.deliv.Stats().ConnectionsOpened })
	counter("deliver_connections_reused_total", "Pooled relay connections reused.", func() uint64 { return a.deliv.Stats().ConnectionsReused })

	counter("credentials_loads_total", "Successful credential reads from the source.", func() uint64 { return a.store.Stats().Loads })
	counter("credentials_load_failures_total", "Failed credential reads; the previous credentials were kept.", func() uint64 { return a.store.Stats().LoadFailures })
	counter("credentials_changes_total", "Credentials whose username or password changed.", func() uint64 { return a.store.Stats().Changes })
	gauge("credentials_ready", "1 if every credential is loaded.", func() float64 {
		if a.store.Ready() {
			return 1
		}
		return 0
	})
	return reg
}

// rejectedCollector exposes smtpd's per-reason refusal counts.
type rejectedCollector struct {
	a    *Agent
	desc *prometheus.Desc
}

func (c *rejectedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *rejectedCollector) Collect(ch chan<- prometheus.Metric) {
	for reason, n := range c.a.smtp.Stats().Rejected {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), string(reason))
	}
}
