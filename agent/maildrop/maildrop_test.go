package maildrop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// recQueue records what the pickup puts.
type recQueue struct {
	mu   sync.Mutex
	msgs []queued
	fail error
}

type queued struct {
	from string
	to   []string
	body string
}

func (q *recQueue) Put(_ context.Context, from string, to []string, body io.Reader) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		return "", q.fail
	}
	q.msgs = append(q.msgs, queued{from, to, string(b)})
	return fmt.Sprintf("id%d", len(q.msgs)), nil
}

func (q *recQueue) all() []queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.msgs)
}

// checkAddr stands in for the listener's address check: it refuses what
// has no '@' or holds a space.
func checkAddr(addr string, rcpt bool) (string, error) {
	if !strings.Contains(addr, "@") || strings.ContainsAny(addr, " \t") {
		return "", errors.New("invalid address")
	}
	return addr, nil
}

// rig is a maildrop made by Prepare in a fresh data directory, and a
// pickup for it that the test runs.
type rig struct {
	t    *testing.T
	dir  string
	q    *recQueue
	p    *Pickup
	logs *testlib.LogBuf
}

func newRig(t *testing.T, rules ...Rule) *rig {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(data, 0o711); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(data, "maildrop")
	if _, err := Prepare(dir); err != nil {
		t.Fatal(err)
	}
	pol, err := NewPolicy("host.example", rules, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, dir: dir, q: &recQueue{}, logs: &testlib.LogBuf{}}
	r.p = NewPickup(Options{Dir: dir, Hostname: "host.example", Policy: pol, Queue: r.q, Check: checkAddr,
		MaxMessageBytes: 1 << 20, MaxRecipients: 5, Rescan: time.Hour,
		Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	return r
}

// run runs the pickup until the test ends.
func (r *rig) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.p.Run(ctx); close(done) }()
	r.t.Cleanup(func() {
		cancel()
		<-done
		if r.t.Failed() {
			r.t.Logf("pickup log:\n%s", r.logs.String())
		}
	})
}

// scan runs one pass over the maildrop and waits for it.
func (r *rig) scan() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.p.Run(ctx); close(done) }()
	waitFor(r.t, "the maildrop to be empty of message files", func() bool { return len(r.messageFiles()) == 0 })
	cancel()
	<-done
}

func (r *rig) messageFiles() []string {
	var out []string
	ents, _ := os.ReadDir(r.dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") && !strings.HasPrefix(e.Name(), badPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ptr(s string) *string { return &s }

// TestPrepareModes: the maildrop is made 3733 with the agent's owner and
// group, whatever the umask.
func TestPrepareModes(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "maildrop")
	p, err := Prepare(dir)
	if err != nil || !p.Created {
		t.Fatalf("Prepare: %+v %v", p, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := modeString(fi.Mode()); got != "3733" {
		t.Errorf("mode %s, want 3733", got)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid() {
		t.Errorf("owner %d:%d", st.Uid, st.Gid)
	}
	if p, err := Prepare(dir); err != nil || p.Created {
		t.Errorf("second Prepare: %+v %v", p, err)
	}
}

// TestPrepareRefuses: a maildrop that would let users read, replace or
// remove each other's mail is refused, with the reason and the fix.
func TestPrepareRefuses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a directory's owner needs root")
	}
	cases := []struct {
		name  string
		setup func(dir string) error
		want  string
	}{
		{"no set-gid", func(d string) error { return os.Chmod(d, fs.ModeSticky|0o733) }, "lacks the set-gid bit (mode 1733)"},
		{"no sticky", func(d string) error { return os.Chmod(d, fs.ModeSetgid|0o733) }, "is writable by group or others without the sticky bit (mode 2733)"},
		{"listable", func(d string) error { return os.Chmod(d, Mode|0o004) }, "can be listed by others (mode 3737)"},
		{"other owner", func(d string) error { return os.Chown(d, 65534, -1) }, "belongs to uid 65534, not to uid 0"},
		{"other group", func(d string) error { return os.Chown(d, -1, 65534) }, "has group 65534, not the agent's group 0"},
		{"symlink", func(d string) error {
			if err := os.Remove(d); err != nil {
				return err
			}
			return os.Symlink("/tmp", d)
		}, "is a symlink"},
		{"file", func(d string) error {
			if err := os.Remove(d); err != nil {
				return err
			}
			return os.WriteFile(d, nil, 0o600)
		}, "is not a directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "maildrop")
			if _, err := Prepare(dir); err != nil {
				t.Fatal(err)
			}
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			_, err := Prepare(dir)
			var de *DirError
			if !errors.As(err, &de) || !strings.Contains(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), "refusing to use it") {
				t.Fatalf("error %v, want a DirError with %q", err, tc.want)
			}
			if !strings.Contains(de.Hint(), "chmod 3733 "+dir) {
				t.Errorf("hint %q", de.Hint())
			}
		})
	}
}

// TestSubmitAndTake: a message left by Submit is taken into the queue
// with the sender the policy gives, qualified recipients, and the headers
// the agent adds (Received always; From, Date and Message-ID only when
// missing); then its file is gone.
func TestSubmitAndTake(t *testing.T) {
	r := newRig(t)
	msg := "Subject: hello\r\nMessage-ID: <keep@app.example>\r\n\r\nbody line\r\n"
	name, err := Submit(r.dir, Envelope{FullName: "Cron Daemon", Recipients: []string{"root", "ops@example.com", "ops@example.com"}}, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(r.dir, name))
	if err != nil || fi.Mode().Perm() != 0o640 || !strings.HasPrefix(name, "m.") || len(name) != 34 {
		t.Fatalf("drop file %s: %v %v", name, fi, err)
	}
	if _, err := Submit(r.dir, Envelope{Sender: ptr("app@example.com"), Recipients: []string{"a@example.com"}}, []byte("just a body\r\n")); err != nil {
		t.Fatal(err)
	}
	r.scan()
	got := r.q.all()
	if len(got) != 2 {
		t.Fatalf("queued %d, want 2", len(got))
	}
	slices.SortFunc(got, func(a, b queued) int { return strings.Compare(a.to[0], b.to[0]) })
	m := got[1]
	if m.from != "root@host.example" || !slices.Equal(m.to, []string{"root@host.example", "ops@example.com"}) {
		t.Errorf("envelope %q -> %q", m.from, m.to)
	}
	if !strings.HasPrefix(m.body, "Received: by host.example (sealrelay sendmail, from userid 0 root);\r\n\t") ||
		!strings.Contains(m.body, "\r\nFrom: \"Cron Daemon\" <root@host.example>\r\n") ||
		!strings.Contains(m.body, "\r\nDate: ") || strings.Contains(m.body, "Message-ID: <"+strings.TrimPrefix(name, "m.")) ||
		!strings.HasSuffix(m.body, "\r\n"+msg) {
		t.Errorf("message:\n%s", m.body)
	}
	// The second was all body, and asked for a sender root may give.
	m = got[0]
	if m.from != "app@example.com" || !strings.Contains(m.body, "\r\nMessage-ID: <") || !strings.HasSuffix(m.body, "\r\n\r\njust a body\r\n") {
		t.Errorf("headerless message from %q:\n%s", m.from, m.body)
	}
	if st := r.p.Stats(); st.Taken != 2 || st.Rejected != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestPickupWatches: a message that arrives while the pickup runs is
// taken at once, without waiting for a rescan.
func TestPickupWatches(t *testing.T) {
	r := newRig(t)
	r.run()
	time.Sleep(50 * time.Millisecond) // the first scan, of an empty maildrop
	if _, err := Submit(r.dir, Envelope{Recipients: []string{"a@example.com"}}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message to be taken", func() bool { return len(r.q.all()) == 1 })
}

// TestSpoolFailureKeepsFile: when the spool cannot take a message, its
// file stays for the next pass; nothing is lost or refused.
func TestSpoolFailureKeepsFile(t *testing.T) {
	r := newRig(t)
	r.q.fail = errors.New("disk full")
	if _, err := Submit(r.dir, Envelope{Recipients: []string{"a@example.com"}}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.p.Run(ctx); close(done) }()
	waitFor(t, "the failure to be logged", func() bool { return strings.Contains(r.logs.String(), "cannot queue a message; will try again") })
	cancel()
	<-done
	if n := len(r.messageFiles()); n != 1 {
		t.Fatalf("%d message files left, want the one", n)
	}
	r.q.fail = nil
	r.scan()
	if len(r.q.all()) != 1 {
		t.Error("the message was not taken once the spool worked again")
	}
}

// TestStaleTemporaryFiles: a temporary file a sendmail left behind is
// removed once it is old; a fresh one (a sendmail still writing) is not.
func TestStaleTemporaryFiles(t *testing.T) {
	r := newRig(t)
	old, fresh := filepath.Join(r.dir, ".m.1.tmp-1"), filepath.Join(r.dir, ".m.2.tmp-2")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	r.scan()
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temporary file removed: %v", err)
	}
}

// TestPrepareCannotSetMode: where the set-gid bit may not be set (systemd's
// RestrictSUIDSGID=), Prepare leaves no maildrop (sendmail then says there
// is none) and says how to make one.
func TestPrepareCannotSetMode(t *testing.T) {
	chmodSeam = func(string, fs.FileMode) error { return syscall.EPERM }
	defer func() { chmodSeam = os.Chmod }()
	dir := filepath.Join(t.TempDir(), "maildrop")
	_, err := Prepare(dir)
	var ce *CreateError
	if !errors.As(err, &ce) || err.Error() != "cannot create maildrop "+dir+" with mode 3733: operation not permitted" {
		t.Fatalf("error %v", err)
	}
	if want := fmt.Sprintf("make it as root, then restart the agent: install -d -m 3733 -o %d -g %d %s", os.Geteuid(), os.Getegid(), dir); !strings.HasPrefix(ce.Hint(), want) {
		t.Errorf("hint %q, want it to start %q", ce.Hint(), want)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a half-made maildrop was left: %v", err)
	}
}
