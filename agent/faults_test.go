package agent_test

// Fault tests on the spool's disk: a disk that fills up (a real small
// tmpfs where mounting is allowed, and the spool's failing-fsync seam
// everywhere), and spool files torn or corrupted while the agent was down.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/smtpd"
	"github.com/sealrelay/sealrelay/agent/spool"
	sealrig "github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// sendMail sends one message to the agent at addr and returns the server's
// error (an *smtp.SMTPError for a refusal), nil for a 250.
func sendMail(addr, from string, to []string, body string) error {
	return sealrig.Send(addr, "client.example", from, to, body)
}

// subjectOf returns the Subject header of a relayed message.
func subjectOf(data []byte) string {
	for _, line := range strings.Split(string(data), "\r\n") {
		if s, ok := strings.CutPrefix(line, "Subject: "); ok {
			return s
		}
		if line == "" {
			break
		}
	}
	return ""
}

// deferAll makes the upstream answer every message 451, so that accepted
// messages stay in the spool.
var deferAll = upstream.Behavior{Rules: []upstream.Rule{{Command: "DATA", Reply: upstream.ErrTempFail}}}

// TestDiskFullSeam fills the disk through the spool's test seam: every
// fsync fails with ENOSPC.
func TestDiskFullSeam(t *testing.T) {
	var full atomic.Bool
	r := startRig(t, rigOptions{hook: func(path string) error {
		if full.Load() {
			return syscall.ENOSPC
		}
		return nil
	}})
	diskFullScenario(t, r, func() { full.Store(true) }, func() { full.Store(false) })
}

// TestDiskFullTmpfs puts the spool on a real 1 MiB tmpfs and fills it
// with a file, then deletes the file. It needs to mount (root); elsewhere
// it skips and TestDiskFullSeam covers the same scenario.
func TestDiskFullTmpfs(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on %s here (needs root on Linux): %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	filler := filepath.Join(dir, "filler")
	r := startRig(t, rigOptions{dataDir: dir})
	// fill tops the tmpfs up: a failed journal append gives back the
	// space it took, which a later append could use.
	fill := func() {
		f, err := os.OpenFile(filler, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 4<<10)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("filling the tmpfs: %v", err)
				}
				return
			}
		}
	}
	free := func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
	diskFullScenario(t, r, fill, free)
}

// diskFullScenario: mail acknowledged before the disk fills stays queued
// (the upstream defers it) while the disk is full; while full, every
// message is answered 451 and never relayed; once space returns, without
// a restart, new mail is accepted and everything acknowledged is relayed,
// each message once.
func diskFullScenario(t *testing.T, r *rig, fill, free func()) {
	addr := r.agent.Addr().String()
	msg := func(subject string) string {
		return fmt.Sprintf("Subject: %s\r\nMessage-ID: <%s@test>\r\n\r\n%s\r\n", subject, subject, strings.Repeat(subject+" ", 200))
	}
	to := []string{"a@example.org"}
	r.up.SetBehavior(deferAll)

	var acked []string
	for _, s := range []string{"before-1", "before-2", "before-3"} {
		if err := sendMail(addr, "app@example.com", to, msg(s)); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		acked = append(acked, s)
	}
	qs := r.agent.Queue()
	waitFor(t, "the first delivery attempts", func() bool { return qs.Stats().Deferred >= 3 })
	// Deferred, the three leave the journal for files of their own.
	waitFor(t, "the deferred items' own files", func() bool {
		envs, _ := filepath.Glob(filepath.Join(r.dataDir, "spool", "*.env"))
		return len(envs) == 3
	})

	for i := 1; i <= 5; i++ {
		fill()
		s := fmt.Sprintf("full-%d", i)
		err := sendMail(addr, "app@example.com", to, msg(s))
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) ||
			se.Message != "temporary failure storing the message, try again later" {
			t.Fatalf("%s while the disk is full: %v, want 451 4.3.0", s, err)
		}
	}
	// The queued items are retried while the disk is full (their envelope
	// rewrites fail), and the agent goes on.
	waitFor(t, "retries while the disk is full", func() bool { return qs.Stats().Deferred >= 6 })
	if n := r.agent.Listener().Stats().Rejected[smtpd.ReasonPersist]; n != 5 {
		t.Errorf("listener counted %d persist failures, want 5", n)
	}
	if n := strings.Count(r.logs.String(), "queueing message failed, answered 451"); n != 5 {
		t.Errorf("%d log lines for the refused messages, want 5", n)
	}
	// Nothing of the refused messages is left in the spool: only files of
	// the acknowledged items (a move out of the journal that the full disk
	// cut short leaves its item in the journal, without files). A retry's
	// envelope rewrite may be in progress at any moment (its temporary file
	// exists until its fsync fails): look until one listing falls between
	// two of them.
	ackedFile := map[string]bool{}
	for _, in := range qs.List() {
		ackedFile[in.ID+".env"], ackedFile[in.ID+".msg"] = true, true
	}
	var files []string
	settled := func() bool {
		files = files[:0]
		entries, err := os.ReadDir(filepath.Join(r.dataDir, "spool"))
		if err != nil {
			t.Fatal(err)
		}
		ok := true
		for _, e := range entries {
			if e.Name() != "journal" { // small messages' records; checked by the relayed set below
				files = append(files, e.Name())
				ok = ok && ackedFile[e.Name()]
			}
		}
		return ok
	}
	for i := 0; i < 200 && !settled(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if len(ackedFile) != 6 || !settled() {
		t.Errorf("spool directory holds %v, want files of the 3 acknowledged items only (%d queued)", files, len(ackedFile)/2)
	}

	free()
	for _, s := range []string{"after-1", "after-2", "after-3"} {
		if err := sendMail(addr, "app@example.com", to, msg(s)); err != nil {
			t.Fatalf("%s after space returned: %v", s, err)
		}
		acked = append(acked, s)
	}
	r.up.SetBehavior(upstream.Behavior{})
	if err := r.up.WaitMessages(len(acked), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	r.waitSettled(t)

	var got []string
	for _, m := range r.up.Messages() {
		got = append(got, subjectOf(m.Data))
	}
	slices.Sort(got)
	slices.Sort(acked)
	if !slices.Equal(got, acked) {
		t.Errorf("the upstream received %v, want each acknowledged message once: %v", got, acked)
	}
}

var tornSeed = flag.Uint64("torn.seed", 0, "seed for TestTornSpool (0: a fresh one, logged)")

// queuedItem is what a test put in the spool.
type queuedItem struct {
	from string
	to   []string
	body string
}

// queueItems queues n messages in a spool at spoolDir with the agent
// stopped. With deferOnce, each is then tried once and deferred, which
// gives it files of its own; without, they stay in the journal.
func queueItems(t *testing.T, rng *rand.Rand, spoolDir string, n int, seed uint64, deferOnce bool) (map[string]queuedItem, []string) {
	t.Helper()
	q, err := spool.Open(spool.Options{Dir: spoolDir, Hostname: "sealrelay.test", Logger: slog.New(slog.DiscardHandler),
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	items := map[string]queuedItem{}
	var ids []string
	for i := range n {
		it := queuedItem{from: fmt.Sprintf("app%d@example.com", i)}
		for j := range 1 + rng.IntN(3) {
			it.to = append(it.to, fmt.Sprintf("rcpt%d-%d@example.org", i, j))
		}
		line := fmt.Sprintf("line of message %d\r\n", i)
		it.body = fmt.Sprintf("Subject: item %d\r\nMessage-ID: <%d.%d@test>\r\n\r\n%s",
			i, i, seed, strings.Repeat(line, 1+rng.IntN(200)))
		id, err := q.Put(context.Background(), it.from, it.to, strings.NewReader(it.body))
		if err != nil {
			t.Fatal(err)
		}
		items[id] = it
		ids = append(ids, id)
	}
	if deferOnce {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { q.Run(ctx, deferEvery{}); close(done) }()
		deadline := time.Now().Add(30 * time.Second)
		for {
			tried := 0
			for _, in := range q.List() {
				if in.Attempts > 0 {
					tried++
				}
			}
			if tried == n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d items tried", tried, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	return items, ids
}

// deferEvery is a spool.Deliverer that defers every recipient.
type deferEvery struct{}

func (deferEvery) Deliver(_ context.Context, d *spool.Delivery) []spool.RcptResult {
	out := make([]spool.RcptResult, len(d.To))
	for i, r := range d.To {
		out[i] = spool.RcptResult{Rcpt: r, Status: spool.Temporary, Err: errors.New("451 4.3.0 not now")}
	}
	return out
}

// tornDamage is one way to damage an item while the agent is down. Each
// makes the item detectably damaged: TestTornSpool requires that every
// damaged item be quarantined.
type tornDamage struct {
	name   string
	suffix string // the file damaged: ".env" or ".msg"
	apply  func(rng *rand.Rand, b []byte) []byte
}

var tornDamages = []tornDamage{
	// A torn write: the envelope cut short, at least its closing brace
	// gone (cutting only the final newline leaves a valid envelope).
	{"envelope truncated", ".env", func(rng *rand.Rand, b []byte) []byte {
		return b[:rng.IntN(len(b)-1)]
	}},
	// A block that never reached the disk: zeros in the middle.
	{"envelope block zeroed", ".env", func(rng *rand.Rand, b []byte) []byte {
		return zeroRange(rng, b)
	}},
	{"message truncated", ".msg", func(rng *rand.Rand, b []byte) []byte {
		return b[:rng.IntN(len(b))]
	}},
	{"message with garbage appended", ".msg", func(rng *rand.Rand, b []byte) []byte {
		junk := make([]byte, 1+rng.IntN(512))
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		return append(b, junk...)
	}},
	// The same size, different content: only a checksum can tell.
	{"message block zeroed", ".msg", func(rng *rand.Rand, b []byte) []byte {
		return zeroRange(rng, b)
	}},
	{"message byte flipped", ".msg", func(rng *rand.Rand, b []byte) []byte {
		i := rng.IntN(len(b))
		b[i] ^= byte(1 + rng.IntN(255))
		return b
	}},
}

// zeroRange zeroes 1 to 512 bytes of b from a random offset.
func zeroRange(rng *rand.Rand, b []byte) []byte {
	off := rng.IntN(len(b))
	n := min(1+rng.IntN(512), len(b)-off)
	clear(b[off : off+n])
	return b
}

// TestTornSpool builds a spool of intact items while the agent is down,
// damages a random third of them (envelope or message, truncated or
// corrupted at random offsets; the seed is logged and -torn.seed replays
// it), then starts the agent with the upstream up. Every damaged item is
// quarantined with a log line naming it; every intact item is relayed
// once, exactly as queued.
func TestTornSpool(t *testing.T) {
	const n = 200
	seed := *tornSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -torn.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5ea1))

	dataDir := t.TempDir()
	spoolDir := filepath.Join(dataDir, "spool")
	// Deferred once, every item has its own .env and .msg files.
	items, ids := queueItems(t, rng, spoolDir, n, seed, true)

	// Damage a third of the items, each kind of damage in turn.
	damaged := map[string]string{} // id -> what was done
	for k, i := range rng.Perm(n)[:n/3] {
		id := ids[i]
		d := tornDamages[k%len(tornDamages)]
		path := filepath.Join(spoolDir, id+d.suffix)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		orig := bytes.Clone(b)
		b = d.apply(rng, b)
		if bytes.Equal(b, orig) {
			t.Fatalf("%s of %s changed nothing", d.name, path)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		damaged[id] = d.name
	}

	r := startRig(t, rigOptions{dataDir: dataDir})
	intact := n - len(damaged)
	if err := r.up.WaitMessages(intact, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	r.waitSettled(t)

	if s := r.agent.Queue().Stats(); s.Quarantined != uint64(len(damaged)) {
		t.Errorf("quarantined %d items, want the %d damaged", s.Quarantined, len(damaged))
	}
	logs := r.logs.String()
	for id, what := range damaged {
		var line string
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "quarantined damaged item") && strings.Contains(l, "id="+id) {
				line = l
			}
		}
		if line == "" || !strings.Contains(line, filepath.Join(spoolDir, id)) {
			t.Errorf("%s (%s): no log line naming its files; line %q", id, what, line)
		}
		for _, suffix := range []string{".env", ".msg"} {
			if _, err := os.Stat(filepath.Join(spoolDir, "quarantine", id+suffix)); err != nil {
				t.Errorf("%s (%s): %s not in quarantine: %v", id, what, suffix, err)
			}
		}
	}

	checkRelayedIntact(t, r, items, damaged)
	if t.Failed() {
		t.Logf("damage: %v", damaged)
	}
}

// TestTornJournal is TestTornSpool for messages still in the journal: a
// random third of the records get a flipped byte or a zeroed block inside
// their message, and the segment is cut short inside one of its last
// records (the seed is logged; -torn.seed replays it). Every damaged record
// is skipped with a log line naming its segment and item, a copy of the
// segment goes to quarantine, and every intact item is relayed once,
// exactly as queued.
func TestTornJournal(t *testing.T) {
	const n = 200
	seed := *tornSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -torn.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x70a1))
	dataDir := t.TempDir()
	spoolDir := filepath.Join(dataDir, "spool")
	items, ids := queueItems(t, rng, spoolDir, n, seed, false)

	segs, _ := filepath.Glob(filepath.Join(spoolDir, "journal", "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("journal segments %v, want one", segs)
	}
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	// where returns the offset of item i's Message-ID, inside its message.
	where := func(i int) int {
		off := bytes.Index(data, fmt.Appendf(nil, "<%d.%d@test>", i, seed))
		if off < 0 {
			t.Fatalf("message %d not found in the segment", i)
		}
		return off
	}
	damaged := map[string]string{}
	for k, i := range rng.Perm(n - 10)[:n/3] {
		at := where(i) + 5 + rng.IntN(20)
		if k%2 == 0 {
			data[at] ^= 1 << rng.IntN(8)
			damaged[ids[i]] = "byte flipped"
		} else {
			clear(data[at : at+1+rng.IntN(16)])
			damaged[ids[i]] = "block zeroed"
		}
	}
	cut := n - 1 - rng.IntN(10)
	data = data[:where(cut)+rng.IntN(30)]
	for i := cut; i < n; i++ {
		damaged[ids[i]] = "cut off"
	}
	if err := os.WriteFile(segs[0], data, 0o600); err != nil {
		t.Fatal(err)
	}

	r := startRig(t, rigOptions{dataDir: dataDir})
	intact := n - len(damaged)
	if err := r.up.WaitMessages(intact, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	r.waitSettled(t)

	logs := r.logs.String()
	reported := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "damaged journal record skipped") && strings.Contains(l, filepath.Base(segs[0])) {
			reported++
		}
	}
	wantReported := 1 // the record cut in two
	for id, what := range damaged {
		if what == "cut off" {
			continue
		}
		wantReported++
		if !strings.Contains(logs, "id="+id) {
			t.Errorf("%s (%s): no log line naming it", id, what)
		}
	}
	if reported != wantReported {
		t.Errorf("%d damaged-record log lines, want %d", reported, wantReported)
	}
	if s := r.agent.Queue().Stats(); s.Quarantined != uint64(wantReported) {
		t.Errorf("quarantined %d, want %d", s.Quarantined, wantReported)
	}
	if _, err := os.Stat(filepath.Join(spoolDir, "quarantine", "journal-"+filepath.Base(segs[0]))); err != nil {
		t.Errorf("no copy of the damaged segment in quarantine: %v", err)
	}

	checkRelayedIntact(t, r, items, damaged)
}

// checkRelayedIntact checks that the upstream got every intact item once,
// exactly as queued, and no damaged one.
func checkRelayedIntact(t *testing.T, r *rig, items map[string]queuedItem, damaged map[string]string) {
	t.Helper()
	seen := map[string]bool{}
	byFrom := map[string]string{}
	for id, it := range items {
		byFrom[it.from] = id
	}
	for _, m := range r.up.Messages() {
		id, ok := byFrom[m.From]
		it := items[id]
		switch {
		case !ok:
			t.Errorf("relayed a message nobody queued: <%s> %v", m.From, m.To)
		case damaged[id] != "":
			t.Errorf("relayed damaged item %s (%s)", id, damaged[id])
		case seen[id]:
			t.Errorf("relayed %s twice", id)
		case !slices.Equal(m.To, it.to) || string(m.Data) != it.body:
			t.Errorf("%s relayed as <%s> %v %q, queued as %v %q", id, m.From, m.To, m.Data, it.to, it.body)
		}
		seen[id] = true
	}
	if intact := len(items) - len(damaged); len(seen) != intact {
		t.Errorf("relayed %d distinct items, want the %d intact", len(seen), intact)
	}
}
