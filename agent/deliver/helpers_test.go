package deliver

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/secrets"
)

const (
	testUser = "relay-account@example.com"
	testPass = "s3cret-Relay-Passw0rd"
	newPass  = "r0tated-Relay-Passw0rd"
)

// fakeCreds stands in for *secrets.Store: Get returns the entry set for
// the name with setNamed, else cur (or getErr); Refresh counts its calls
// and switches cur to next when next is set.
type fakeCreds struct {
	mu        sync.Mutex
	cur       secrets.Credential
	getErr    error
	next      *secrets.Credential
	refreshes int
	named     map[string]secrets.Credential
}

// setNamed makes Get(name) return c (one that IsZero: unavailable).
func (f *fakeCreds) setNamed(name string, c secrets.Credential) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.named == nil {
		f.named = map[string]secrets.Credential{}
	}
	f.named[name] = c
}

func newCreds(pass string) *fakeCreds {
	return &fakeCreds{cur: secrets.NewCredential("primary", testUser, pass, "v1")}
}

func (f *fakeCreds) Get(name string) (secrets.Credential, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.named[name]; ok {
		if c.IsZero() {
			return secrets.Credential{}, &secrets.UnavailableError{Name: name}
		}
		return c, nil
	}
	if f.getErr != nil {
		return secrets.Credential{}, f.getErr
	}
	return f.cur, nil
}

func (f *fakeCreds) Refresh(_ context.Context, name string, stale secrets.Credential) (secrets.Credential, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshes++
	if f.next != nil {
		f.cur = *f.next
	}
	return f.cur, nil
}

func (f *fakeCreds) set(c secrets.Credential) {
	f.mu.Lock()
	f.cur = c
	f.mu.Unlock()
}

func (f *fakeCreds) refreshCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refreshes
}

// syncBuffer is a log sink the test reads while the code writes to it.
type syncBuffer = testlib.LogBuf

func startUpstream(t testing.TB, cfg upstream.Config) *upstream.Server {
	t.Helper()
	if cfg.Accounts == nil {
		cfg.Accounts = map[string]string{testUser: testPass}
	}
	return testlib.StartUpstream(t, cfg)
}

// relayTo returns a relay for u that trusts u's CA.
func relayTo(u *upstream.Server, auth AuthPolicy) Relay {
	return Relay{
		Name:           "up",
		Address:        u.Addr(),
		Auth:           auth,
		Credential:     "primary",
		RootCAs:        u.CertPool(),
		CommandTimeout: 10 * time.Second,
		ConnectTimeout: 5 * time.Second,
	}
}

type harness struct {
	d     *Deliverer
	creds *fakeCreds
	logs  *syncBuffer
}

func newDeliverer(t testing.TB, creds *fakeCreds, relays ...Relay) harness {
	t.Helper()
	logs := &syncBuffer{}
	d, err := New(Options{
		Hostname:    "agent.test",
		Relays:      relays,
		Credentials: creds,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return harness{d: d, creds: creds, logs: logs}
}

var msgSeq atomic.Int64

func body(id string) string {
	return "Message-ID: <" + id + "@test>\r\nSubject: hello\r\n\r\nline one\r\n.\r\n..dots\r\nlast\r\n"
}

// message returns a delivery of a small message to rcpts.
func message(rcpts ...string) *spool.Delivery {
	id := fmt.Sprintf("m%d", msgSeq.Add(1))
	b := body(id)
	return &spool.Delivery{
		ID: id, From: "app@example.com", To: rcpts, Size: int64(len(b)), Attempt: 1, Received: time.Now(),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(b)), nil },
	}
}

// secretForms are the password and its PLAIN and LOGIN encodings.
func secretForms(passwords ...string) []string {
	var out []string
	for _, p := range passwords {
		out = append(out, p,
			base64.StdEncoding.EncodeToString([]byte("\x00"+testUser+"\x00"+p)),
			base64.StdEncoding.EncodeToString([]byte(p)))
	}
	return out
}

// assertNoSecrets fails if the logs or any result error hold a secret form.
func assertNoSecrets(t *testing.T, h harness, res []spool.RcptResult, extra ...string) {
	t.Helper()
	texts := []string{h.logs.String()}
	for _, r := range res {
		if r.Err != nil {
			texts = append(texts, r.Err.Error(), fmt.Sprintf("%+v", r.Err))
		}
	}
	texts = append(texts, extra...)
	for _, s := range secretForms(testPass, newPass) {
		for _, txt := range texts {
			if strings.Contains(txt, s) {
				t.Errorf("a secret form %q... leaked into %q", s[:4], txt)
			}
		}
	}
}

func statuses(res []spool.RcptResult) string {
	var s []string
	for _, r := range res {
		s = append(s, r.Status.String())
	}
	return strings.Join(s, ",")
}

// waitSessionsEnded waits until the upstream has n sessions and all ended.
func waitSessionsEnded(t *testing.T, u *upstream.Server, n int) []upstream.Session {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ss := u.Sessions()
		ok := len(ss) >= n
		for _, s := range ss {
			ok = ok && !s.End.IsZero()
		}
		if ok {
			return ss
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d ended sessions, have %+v", n, ss)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
