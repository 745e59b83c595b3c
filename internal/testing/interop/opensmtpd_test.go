package interop

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/agent/deliver"
	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/peers/opensmtpdtest"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestSealrelayToOpenSMTPD: sealrelay's delivery against a real OpenSMTPD
// (plain listener, no AUTH: 6.8.0p2 cannot do TLS with Debian 12's
// OpenSSL), which answers a second EHLO on one session with 503 5.5.1.
// Transactions that end without data (every recipient refused) alternate
// with valid messages on pooled connections: every valid message reaches
// OpenSMTPD and, through it, the upstream behind it; none is bounced.
func TestSealrelayToOpenSMTPD(t *testing.T) {
	if err := opensmtpdtest.Available(); err != nil {
		t.Fatal(err)
	}
	up := testlib.StartUpstream(t, upstream.Config{TLS: upstream.NoTLS})
	smtpd, err := opensmtpdtest.Start(opensmtpdtest.Config{Domain: "example.net", Relayhost: up.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		smtpd.Close()
		if t.Failed() {
			t.Logf("opensmtpd log:\n%s", smtpd.Log())
		}
	})
	logs := &testlib.LogBuf{}
	d, err := deliver.New(deliver.Options{
		Hostname: "sealrelay.test",
		Relays:   []deliver.Relay{{Name: "opensmtpd", Address: smtpd.Addr, TLS: deliver.TLSNone, Auth: deliver.AuthDisabled, MaxConnections: 2}},
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	ctx := context.Background()
	valid := 0
	for round := range 4 {
		for range 2 {
			valid++
			res := d.Deliver(ctx, delivery(fmt.Sprintf("<osmtpd.%d@sealrelay.test>", valid), "user@example.net"))
			if res[0].Status != spool.Delivered {
				t.Errorf("round %d: valid message %d: %s %v", round, valid, res[0].Status, res[0].Err)
			}
		}
		res := d.Deliver(ctx, delivery(fmt.Sprintf("<refused.%d@sealrelay.test>", round), "nobody@elsewhere.test"))
		if res[0].Status != spool.Permanent || !strings.Contains(res[0].Err.Error(), "550") {
			t.Fatalf("round %d: a recipient OpenSMTPD refuses: %s %v", round, res[0].Status, res[0].Err)
		}
	}
	if err := up.WaitMessages(valid, 60*time.Second); err != nil {
		t.Fatalf("OpenSMTPD relayed %d of %d valid messages: %v", up.Count(), valid, err)
	}
	if st := d.Stats(); st.Failed != 4 || st.Delivered != uint64(valid) {
		t.Errorf("stats = %+v, want %d delivered and only the 4 refused recipients failed", st, valid)
	}
	if strings.Contains(smtpd.Log(), "Already identified") {
		t.Errorf("sealrelay said EHLO twice on a session:\n%s", smtpd.Log())
	}
	if t.Failed() {
		t.Logf("sealrelay log:\n%s", logs)
	}
}

// delivery is a spooled message to rcpt.
func delivery(msgID, rcpt string) *spool.Delivery {
	body := "From: app@sealrelay.test\r\nTo: " + rcpt + "\r\nSubject: strict relay\r\nMessage-ID: " + msgID + "\r\n\r\nhello\r\n"
	return &spool.Delivery{
		ID: msgID, From: "app@sealrelay.test", To: []string{rcpt}, Size: int64(len(body)), Attempt: 1, Received: time.Now(),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
	}
}
