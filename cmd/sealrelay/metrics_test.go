package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestMetrics: with metrics_address set, /metrics serves the agent's
// counters in Prometheus form, and they count what happened.
func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	writeTestFile(t, cfg, "metrics_address = \"127.0.0.1:0\"\n"+readTestFile(t, cfg))
	a := startAgent(t, cfg)
	if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<metrics@rig>"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitMessages(1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	url := metricsURL(t, a)
	var body string
	waitFor(t, 10*time.Second, "the delivery to be counted", func() bool {
		body = scrape(t, url)
		return strings.Contains(body, "sealrelay_spool_delivered_total 1\n")
	})
	for _, want := range []string{
		"sealrelay_smtpd_accepted_total 1\n",
		"sealrelay_deliver_auth_ok_total 1\n",
		"sealrelay_deliver_auth_fallbacks_total 0\n",
		"sealrelay_credentials_ready 1\n",
		"sealrelay_spool_queued 0\n",
		"# HELP sealrelay_spool_put_failures_total",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, rigPass) || strings.Contains(body, rigUser) {
		t.Error("/metrics shows the credential")
	}
}

// metricsURL returns the URL of the /metrics of a, whose config sets
// metrics_address, once the agent has logged where it listens.
func metricsURL(t *testing.T, a *runningAgent) string {
	t.Helper()
	var addr string
	waitFor(t, 5*time.Second, "the metrics address in the log", func() bool {
		m := regexp.MustCompile(`msg="metrics listening" address=(\S+)`).FindStringSubmatch(a.logs.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return "http://" + addr + "/metrics"
}

// scrape returns what url serves.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}
