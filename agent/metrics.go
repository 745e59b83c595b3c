package agent

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sealrelay/sealrelay/agent/deliver"
	"github.com/sealrelay/sealrelay/agent/spool"
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
	reg.MustRegister(newQueueCollector(a.queue), a.attempts.delay, a.attempts.deferrals, newGenerationCollector(a))

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

	counter("oauth2_token_requests_total", "Requests to OAuth2 token endpoints (access tokens are reused until shortly before they expire).",
		func() uint64 { return a.tokens.Stats().Requests })
	counter("oauth2_token_failures_total", "Token requests that gave no access token: the endpoint refused or did not answer.",
		func() uint64 { return a.tokens.Stats().Failures })
	counter("oauth2_token_refreshes_ahead_total", "Token requests made in the background while the current token was still in use.",
		func() uint64 { return a.tokens.Stats().AheadOfTime })
	counter("oauth2_refresh_token_rotations_total", "New refresh tokens an identity provider returned (written back to Vault, else kept in memory).",
		func() uint64 { return a.tokens.Stats().Rotations })

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

// Queue metrics, read from the spool at each scrape, as postfix_exporter's
// showq metrics give them for Postfix: messages and recipients by state
// (active, pending, deferred, held), and the age and size of the messages
// in each state.
var (
	queueAgeBuckets  = []float64{60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 48 * 3600, 120 * 3600}
	queueSizeBuckets = prometheus.ExponentialBuckets(1024, 4, 8) // 1 KiB to 16 MiB
	// delayBuckets are for the delay from receipt to delivery: most mail
	// goes within a second, deferred mail within minutes to days.
	delayBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600}
)

// queueCollector exposes spool.Census.
type queueCollector struct {
	q                       *spool.Queue
	messages, recipients    *prometheus.Desc
	age, size, oldest       *prometheus.Desc
	ageBuckets, sizeBuckets []float64
}

func newQueueCollector(q *spool.Queue) *queueCollector {
	state := []string{"state"}
	return &queueCollector{
		q:          q,
		messages:   prometheus.NewDesc("sealrelay_queue_messages", "Messages in the queue, by state: active (being delivered), pending (not yet tried), deferred (waiting for a retry), held (failed, no DSN possible).", state, nil),
		recipients: prometheus.NewDesc("sealrelay_queue_recipients", "Recipients still to deliver in the queue's messages, by the message's state; for held messages, the failed recipients.", state, nil),
		age:        prometheus.NewDesc("sealrelay_queue_message_age_seconds", "Time since each queued message was received, by state.", state, nil),
		size:       prometheus.NewDesc("sealrelay_queue_message_size_bytes", "Size of each queued message, by state.", state, nil),
		oldest:     prometheus.NewDesc("sealrelay_queue_oldest_message_age_seconds", "Age of the oldest message in each state; 0 when there is none.", state, nil),
		ageBuckets: queueAgeBuckets, sizeBuckets: queueSizeBuckets,
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.messages, c.recipients, c.age, c.size, c.oldest} {
		ch <- d
	}
}

// stateCensus adds up the items in one state.
type stateCensus struct {
	messages, recipients int
	age, size            histogram
	oldest               float64
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	by := map[spool.ItemState]*stateCensus{}
	for _, st := range spool.ItemStates() {
		by[st] = &stateCensus{age: newHistogram(c.ageBuckets), size: newHistogram(c.sizeBuckets)}
	}
	c.q.Census(func(it spool.CensusItem) {
		s := by[it.State]
		age := max(now.Sub(it.Received).Seconds(), 0)
		s.messages++
		s.recipients += it.Recipients
		s.age.observe(age)
		s.size.observe(float64(it.Size))
		s.oldest = max(s.oldest, age)
	})
	for st, s := range by {
		l := string(st)
		ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(s.messages), l)
		ch <- prometheus.MustNewConstMetric(c.recipients, prometheus.GaugeValue, float64(s.recipients), l)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, s.oldest, l)
		ch <- s.age.metric(c.age, l)
		ch <- s.size.metric(c.size, l)
	}
}

// histogram counts observations into fixed buckets, for a histogram
// computed afresh at each scrape.
type histogram struct {
	upper  []float64
	counts []uint64 // per bucket, not cumulative
	n      uint64
	sum    float64
}

func newHistogram(upper []float64) histogram {
	return histogram{upper: upper, counts: make([]uint64, len(upper))}
}

func (h *histogram) observe(v float64) {
	h.n++
	h.sum += v
	if i, _ := slices.BinarySearch(h.upper, v); i < len(h.upper) {
		h.counts[i]++
	}
}

func (h *histogram) metric(d *prometheus.Desc, label string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.upper))
	var cum uint64
	for i, u := range h.upper {
		cum += h.counts[i]
		buckets[u] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.n, h.sum, buckets, label)
}

// attemptMetrics are what delivery attempts show: the delay from receipt
// to delivery, and the deferrals by reason.
type attemptMetrics struct {
	delay     prometheus.Histogram
	deferrals *prometheus.CounterVec
}

func newAttemptMetrics() attemptMetrics {
	m := attemptMetrics{
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "sealrelay", Name: "delivery_delay_seconds",
			Help: "Time from a message's receipt to its delivery, for each recipient delivered.", Buckets: delayBuckets}),
		deferrals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sealrelay", Name: "delivery_deferrals_total",
			Help: "Recipient attempts that failed temporarily, by reason."}, []string{"reason"}),
	}
	for _, r := range deliver.Reasons() {
		m.deferrals.WithLabelValues(r)
	}
	return m
}

// observed is the Deliverer the spool runs: d, with each attempt's
// results counted in m.
type observed struct {
	d spool.Deliverer
	m attemptMetrics
}

func (o observed) Deliver(ctx context.Context, del *spool.Delivery) []spool.RcptResult {
	res := o.d.Deliver(ctx, del)
	now := time.Now()
	for _, r := range res {
		switch r.Status {
		case spool.Delivered:
			o.m.delay.Observe(max(now.Sub(del.Received).Seconds(), 0))
		case spool.Temporary:
			o.m.deferrals.WithLabelValues(knownReason(r.Reason)).Inc()
		}
	}
	return res
}

// knownReason maps a result's reason to a metric label: one of
// deliver.Reasons(), or "other" for anything else, so that the label set
// stays bounded whatever a Deliverer returns.
func knownReason(reason string) string {
	if slices.Contains(deliver.Reasons(), reason) {
		return reason
	}
	return deliver.ReasonOther
}
