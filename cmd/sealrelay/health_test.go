package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// readiness is the body of /readyz.
type readiness struct {
	Status      string   `json:"status"`
	Failed      []string `json:"failed"`
	Spool       string   `json:"spool"`
	Credentials string   `json:"credentials"`
	Relays      []struct {
		Name   string     `json:"name"`
		State  string     `json:"state"`
		Since  *time.Time `json:"since"`
		Reason string     `json:"reason"`
	} `json:"relays"`
}

// getURL returns the status and body of a GET of url.
func getURL(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// readyz returns what /readyz at base answers, checking that its status
// code agrees with its body and that the body shows no secret or path.
func readyz(t *testing.T, base string, private ...string) readiness {
	t.Helper()
	code, body := getURL(t, base+"/readyz")
	var r readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	if want := map[string]int{"ready": 200, "unready": 503}[r.Status]; code != want {
		t.Fatalf("/readyz answered %d with status %q: %s", code, r.Status, body)
	}
	for _, p := range append(private, rigPass, rigUser) {
		if strings.Contains(body, p) {
			t.Fatalf("/readyz shows %q: %s", p, body)
		}
	}
	return r
}

// waitReady polls /readyz until it answers with the given status and
// failed checks.
func waitReady(t *testing.T, base, status string, failed []string, private ...string) readiness {
	t.Helper()
	var r readiness
	waitFor(t, 20*time.Second, "/readyz to say "+status+" "+strings.Join(failed, ","), func() bool {
		r = readyz(t, base, private...)
		return r.Status == status && slices.Equal(r.Failed, failed)
	})
	return r
}

// withMetrics turns the rig's metrics listener on in the config at path.
func withMetrics(t *testing.T, path string) {
	t.Helper()
	writeTestFile(t, path, "metrics_address = \"127.0.0.1:0\"\n"+readTestFile(t, path))
}

// TestReadyz: /healthz says the process is alive; /readyz turns unready,
// naming the check, while the credentials were never read (a broken
// credential file at start), while the spool cannot be written (a
// read-only bind mount over it), while the only relay is unusable, and
// while the agent drains; and ready again after each.
func TestReadyz(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	credFile := filepath.Join(dir, "credentials.age")
	goodCreds := readTestFile(t, credFile)
	writeTestFile(t, credFile, "-----BEGIN AGE ENCRYPTED FILE-----\nbm90IGFuIGFnZSBmaWxl\n-----END AGE ENCRYPTED FILE-----\n")
	up := startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	withMetrics(t, cfg)
	a := startAgent(t, cfg)
	base := strings.TrimSuffix(metricsURL(t, a), "/metrics")

	if code, body := getURL(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}

	// The credential file cannot be read and never could.
	r := waitReady(t, base, "unready", []string{"credentials"}, dir)
	if r.Credentials != "not loaded: 1 of 1 entries" || r.Spool != "ok" || len(r.Relays) != 1 || r.Relays[0].State != "untried" {
		t.Errorf("/readyz with a broken credential file = %+v", r)
	}
	if code, _ := getURL(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d while unready, want 200", code)
	}
	// A good file replaces it; the agent watches the file.
	tmp := credFile + ".new"
	writeTestFile(t, tmp, goodCreds)
	if err := os.Rename(tmp, credFile); err != nil {
		t.Fatal(err)
	}
	r = waitReady(t, base, "ready", nil, dir)
	if r.Credentials != "ok" {
		t.Errorf("/readyz credentials = %q, want ok", r.Credentials)
	}

	// The spool becomes read-only.
	spoolDir := filepath.Join(dir, "data", "spool")
	if out, err := exec.Command("mount", "--bind", spoolDir, spoolDir).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount the spool here (needs root on Linux): %v: %s", err, out)
	}
	mounted := true
	unmount := func() {
		if out, err := exec.Command("umount", spoolDir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", spoolDir, err, out)
		}
		mounted = false
	}
	t.Cleanup(func() {
		if mounted {
			unmount()
		}
	})
	if out, err := exec.Command("mount", "-o", "remount,bind,ro", spoolDir).CombinedOutput(); err != nil {
		t.Fatalf("remounting the spool read-only: %v: %s", err, out)
	}
	r = waitReady(t, base, "unready", []string{"spool"}, dir)
	if r.Spool != "cannot write: read-only file system" {
		t.Errorf("/readyz spool = %q", r.Spool)
	}
	unmount()
	waitReady(t, base, "ready", nil, dir)

	// The only relay goes away: the next attempt finds it unusable.
	addr, ca := up.Addr(), up.CA()
	up.Close()
	if err := send(a.Addr().String(), "app@client.test", "user@example.net", "<readyz@rig>"); err != nil {
		t.Fatal(err)
	}
	r = waitReady(t, base, "unready", []string{"relays"}, dir)
	if rs := r.Relays[0]; rs.Name != "up" || rs.State != "unusable" || rs.Reason != "connect" || rs.Since == nil {
		t.Errorf("/readyz relay = %+v, want up unusable for connect", rs)
	}
	// It comes back, and the queued message goes.
	up2, err := upstream.Start(upstream.Config{Addr: addr, CA: ca, Accounts: map[string]string{rigUser: rigPass},
		Behavior: upstream.Behavior{Stall: 1, StallDuration: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer up2.Close()
	if err := a.Queue().Retry(""); err != nil {
		t.Fatal(err)
	}
	r = waitReady(t, base, "ready", nil, dir)
	if rs := r.Relays[0]; rs.State != "usable" || rs.Reason != "" {
		t.Errorf("/readyz relay = %+v, want usable", rs)
	}

	// The relay stalls on the message's data: the delivery is in flight
	// when the agent is told to stop, and it drains.
	waitFor(t, 20*time.Second, "the delivery to stall at the relay", func() bool {
		for _, s := range up2.Sessions() {
			if s.MailIssued() {
				return true
			}
		}
		return false
	})
	stopped := make(chan error, 1)
	go func() { stopped <- a.stop() }()
	waitReady(t, base, "unready", []string{"stopping"}, dir)
	up2.Close() // ends the stall
	<-stopped
}

// TestReadyzDiskFull: with the spool on a real tmpfs that is full, /readyz
// says the spool cannot be written; with room again, it is ready.
func TestReadyzDiskFull(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", data).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on %s here (needs root on Linux): %v: %s", data, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", data).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", data, err, out)
		}
	})
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	withMetrics(t, cfg)
	a := startAgent(t, cfg)
	base := strings.TrimSuffix(metricsURL(t, a), "/metrics")
	waitReady(t, base, "ready", nil)

	filler := filepath.Join(data, "filler")
	f, err := os.OpenFile(filler, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the tmpfs: %v", err)
			}
			break
		}
	}
	f.Close()
	r := waitReady(t, base, "unready", []string{"spool"}, dir)
	if r.Spool != "cannot write: no space left on device" {
		t.Errorf("/readyz spool = %q", r.Spool)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitReady(t, base, "ready", nil, dir)
}

// refusingRig writes the files and config of a rig whose upstream defers
// recipients with "busy" in their address (451 4.2.0) and refuses those
// with "nobody" (550 5.1.1), and whose queue retries only after an hour:
// one attempt each while the test looks. It returns the config's path.
func refusingRig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{
		{Command: "RCPT", Contains: "busy", Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "mailbox busy"}},
		{Command: "RCPT", Contains: "nobody", Reply: upstream.ErrRejectRcpt},
	}}})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
	editConfig(t, cfg, `min_backoff = "200ms"`, `min_backoff = "1h"`)
	editConfig(t, cfg, `max_backoff = "1s"`, `max_backoff = "1h"`)
	return cfg
}

// TestQueueMetrics: /metrics shows the queue by state (a deferred message
// and a held one, with their recipients, ages and sizes), the delay of the
// delivered message, and the deferral by its reason, every reason being
// shown from the start.
func TestQueueMetrics(t *testing.T) {
	cfg := refusingRig(t)
	withMetrics(t, cfg)
	a := startAgent(t, cfg)
	url := metricsURL(t, a)

	for _, m := range []struct{ from, to string }{
		{"app@client.test", "user@example.net"},
		{"app@client.test", "busy@example.net"},
		{"", "nobody@example.net"},
	} {
		if err := send(a.Addr().String(), m.from, m.to, "<"+m.to+">"); err != nil {
			t.Fatal(err)
		}
	}
	var body string
	waitFor(t, 20*time.Second, "one deferred and one held message", func() bool {
		body = scrape(t, url)
		return strings.Contains(body, "sealrelay_queue_messages{state=\"deferred\"} 1\n") &&
			strings.Contains(body, "sealrelay_queue_messages{state=\"held\"} 1\n")
	})
	for _, want := range []string{
		"sealrelay_queue_messages{state=\"active\"} 0\n",
		"sealrelay_queue_messages{state=\"pending\"} 0\n",
		"sealrelay_queue_recipients{state=\"deferred\"} 1\n",
		"sealrelay_queue_recipients{state=\"held\"} 1\n",
		"sealrelay_queue_recipients{state=\"pending\"} 0\n",
		"sealrelay_queue_message_age_seconds_bucket{state=\"deferred\",le=\"+Inf\"} 1\n",
		"sealrelay_queue_message_age_seconds_count{state=\"held\"} 1\n",
		"sealrelay_queue_message_age_seconds_count{state=\"pending\"} 0\n",
		"sealrelay_queue_message_size_bytes_bucket{state=\"deferred\",le=\"1024\"} 1\n",
		"sealrelay_queue_message_size_bytes_count{state=\"held\"} 1\n",
		"sealrelay_delivery_delay_seconds_count 1\n",
		"sealrelay_delivery_delay_seconds_bucket{le=\"+Inf\"} 1\n",
		"sealrelay_delivery_deferrals_total{reason=\"relay_4xx\"} 1\n",
		"sealrelay_delivery_deferrals_total{reason=\"auth\"} 0\n",
		"sealrelay_delivery_deferrals_total{reason=\"credentials_unavailable\"} 0\n",
		"sealrelay_queue_oldest_message_age_seconds{state=\"pending\"} 0\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The oldest deferred message has an age, and the delay was measured.
	for _, re := range []string{
		`sealrelay_queue_oldest_message_age_seconds\{state="deferred"\} [0-9.e+-]+\n`,
		`sealrelay_delivery_delay_seconds_sum [0-9.e+-]+\n`,
	} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("/metrics lacks %s", re)
		}
	}
	if strings.Contains(body, "sealrelay_queue_oldest_message_age_seconds{state=\"deferred\"} 0\n") {
		t.Error("the oldest deferred message has age 0")
	}
}

// logFields parses the lines of a log, text (key=value) or JSON, into
// maps of their fields as strings.
func logFields(t *testing.T, log string, isJSON bool) []map[string]string {
	t.Helper()
	var out []map[string]string
	kv := regexp.MustCompile(`([A-Za-z_.]+)=("(?:[^"\\]|\\.)*"|\S*)`)
	for line := range strings.Lines(log) {
		m := map[string]string{}
		if isJSON {
			var raw map[string]any
			if err := json.Unmarshal([]byte(line), &raw); err != nil {
				t.Fatalf("log line %q is not JSON: %v", line, err)
			}
			for k, v := range raw {
				m[k] = jsonText(v)
			}
		} else {
			for _, f := range kv.FindAllStringSubmatch(line, -1) {
				v := f[2]
				if strings.HasPrefix(v, `"`) {
					var err error
					if v, err = strconv.Unquote(v); err != nil {
						t.Fatalf("log line %q: %v", line, err)
					}
				}
				m[f[1]] = v
			}
		}
		out = append(out, m)
	}
	return out
}

// TestDeliveryLogLine: each delivery attempt writes one line per
// recipient, in the text and the JSON log alike, with the queue ID, the
// recipient, the relay, the status (sent, deferred, bounced, held), the
// attempt, the delay, the enhanced status code, the relay's reply code,
// and the reason or the relay's reply; and no line shows the credential.
func TestDeliveryLogLine(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) { testDeliveryLogLine(t, format) })
	}
}

func testDeliveryLogLine(t *testing.T, format string) {
	cfg := refusingRig(t)
	writeTestFile(t, cfg, "log_format = \""+format+"\"\n"+readTestFile(t, cfg))
	p := startProcess(t, cfg)

	msgs := []struct{ from, to, status string }{
		{"app@client.test", "user@example.net", "sent"},
		{"app@client.test", "busy@example.net", "deferred"},
		{"app@client.test", "nobody@example.net", "bounced"},
		{"", "nobody-either@example.net", "held"},
	}
	for _, m := range msgs {
		if err := send(p.addr, m.from, m.to, "<"+m.to+">"); err != nil {
			t.Fatal(err)
		}
	}
	byRcpt := map[string]map[string]string{}
	waitFor(t, 20*time.Second, "a delivery line for each message", func() bool {
		for _, f := range logFields(t, p.stderr.String(), format == "json") {
			if f["msg"] == "delivery attempt" {
				byRcpt[f["to"]] = f
			}
		}
		return len(byRcpt) >= len(msgs)+1 // and the bounce's DSN to app@client.test
	})

	idRE := regexp.MustCompile(`^[0-9a-f]{24}$`)
	// In the text log, seconds with 3 decimals; in JSON, a number.
	delayRE := regexp.MustCompile(`^[0-9]+\.[0-9]{3}$`)
	if format == "json" {
		delayRE = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,3})?$`)
		if n := len(regexp.MustCompile(`"delay":[0-9.]+[,}]`).FindAllString(p.stderr.String(), -1)); n < len(msgs) {
			t.Errorf("%d JSON lines with a numeric delay, want at least %d", n, len(msgs))
		}
	}
	for _, m := range msgs {
		f := byRcpt[m.to]
		want := map[string]string{
			"msg": "delivery attempt", "component": "spool", "to": m.to, "relay": "up", "status": m.status, "attempt": "1",
		}
		switch m.status {
		case "sent":
			want["level"], want["dsn"], want["code"] = "INFO", "2.0.0", "250"
		case "deferred":
			want["level"], want["dsn"], want["code"], want["reason"] = "INFO", "4.2.0", "451", "relay_4xx"
		default:
			want["level"], want["dsn"], want["code"], want["reason"] = "WARN", "5.1.1", "550", "relay_5xx"
		}
		for k, v := range want {
			if f[k] != v {
				t.Errorf("%s line: %s = %q, want %q (line %v)", m.to, k, f[k], v, f)
			}
		}
		if !idRE.MatchString(f["id"]) {
			t.Errorf("%s line: id = %q, want a queue ID", m.to, f["id"])
		}
		if !delayRE.MatchString(f["delay"]) {
			t.Errorf("%s line: delay = %q, want seconds with 3 decimals", m.to, f["delay"])
		}
		switch m.status {
		case "sent":
			if !strings.HasPrefix(f["reply"], "250 2.0.0 ") || f["err"] != "" || f["reason"] != "" {
				t.Errorf("sent line: reply %q err %q reason %q, want the relay's 250 2.0.0 and no error", f["reply"], f["err"], f["reason"])
			}
		default:
			refusal := "550 5.1.1 No such user here"
			if m.status == "deferred" {
				refusal = "451 4.2.0 mailbox busy"
			}
			if f["reply"] != "" || !strings.Contains(f["err"], "RCPT TO:<"+m.to+">: "+refusal) {
				t.Errorf("%s line: reply %q err %q, want the relay's %s", m.to, f["reply"], f["err"], refusal)
			}
		}
	}
	// The queue ID follows a message: the sent line's ID is the one
	// `queue list` would have shown, and the DSN for the bounce has its own.
	if dsn := byRcpt["app@client.test"]; dsn["status"] != "sent" || dsn["id"] == byRcpt["nobody@example.net"]["id"] {
		t.Errorf("the DSN's line = %v, want sent under its own ID", dsn)
	}
	if out := p.stderr.String(); strings.Contains(out, rigPass) {
		t.Error("the log shows the password")
	}
}

// jsonText is a JSON log value as the text form would show it.
func jsonText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
