package spool

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// journalHarness is a harness whose small messages go through the journal.
func journalHarness(t *testing.T, opt Options) *harness {
	t.Helper()
	harnessJournal = true
	defer func() { harnessJournal = false }()
	return newHarness(t, opt)
}

// spoolFiles lists the item files (.msg, .env) in dir.
func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if _, _, ok := itemFile(de.Name()); ok {
			out = append(out, de.Name())
		}
	}
	return out
}

// segments lists the journal's segment files.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, journalDir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, filepath.Join(dir, journalDir, de.Name()))
	}
	return out
}

func TestJournalPutIsDurableAcrossRestart(t *testing.T) {
	h := journalHarness(t, Options{})
	var ids []string
	for i := range 3 {
		ids = append(ids, h.put("alice@example.com", fmt.Sprintf("bob%d@example.org", i)))
	}
	if f := spoolFiles(t, h.dir); len(f) != 0 {
		t.Errorf("journaled messages made files of their own: %v", f)
	}
	crash(h.q)

	h2 := journalHarness(t, Options{Dir: h.dir})
	got := listedIDs(h2.q)
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		t.Fatalf("after restart: %v, want %v", got, ids)
	}
	d := &fakeDeliverer{respond: all(Delivered, nil)}
	h2.run(d)
	h2.waitProcessed(ids...)
	for _, c := range d.deliveries() {
		if c.Body != testMessage {
			t.Errorf("delivered body of %s = %q", c.ID, c.Body)
		}
	}
}

// TestJournalGroupCommit: Puts that arrive while a commit is syncing share
// the next one: 64 Puts, 2 fdatasyncs.
func TestJournalGroupCommit(t *testing.T) {
	const n = 64
	var syncs atomic.Int64
	release := make(chan struct{})
	setBeforeSync(t, func(p string) error {
		if strings.HasSuffix(p, segSuffix) && syncs.Add(1) == 1 {
			<-release // hold the first commit
		}
		return nil
	})
	h := journalHarness(t, Options{})
	put := func(i int) {
		body := fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i)
		if _, err := h.q.Put(context.Background(), "a@example.com", []string{"b@example.org"}, strings.NewReader(body)); err != nil {
			t.Errorf("Put %d: %v", i, err)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { put(0) }) // its commit is held in fdatasync
	for syncs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < n; i++ {
		wg.Go(func() { put(i) })
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(h.q.j.reqs) < n-1 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d Puts waiting", len(h.q.j.reqs))
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if got := syncs.Load(); got != 2 {
		t.Errorf("%d Puts made %d fdatasyncs, want 2 (one for the first, one for the %d that waited)", n, got, n-1)
	}
	crash(h.q)
	if got := len(journalHarness(t, Options{Dir: h.dir}).q.List()); got != n {
		t.Errorf("after restart %d items, want %d", got, n)
	}
}

// TestJournalDoneIsNotReloaded: a delivered item is not delivered again
// after a restart, and its segment is deleted once sealed.
func TestJournalDoneIsNotReloaded(t *testing.T) {
	h := journalHarness(t, Options{})
	d := &fakeDeliverer{respond: all(Delivered, nil)}
	h.run(d)
	id := h.put("alice@example.com", "bob@example.org")
	h.waitProcessed(id)
	if err := h.q.j.barrier(); err != nil {
		t.Fatal(err)
	}
	old := segments(t, h.dir)
	crash(h.q)
	h2 := journalHarness(t, Options{Dir: h.dir})
	if got := h2.q.List(); len(got) != 0 {
		t.Fatalf("a delivered item came back: %+v", got)
	}
	for _, s := range old {
		if _, err := os.Stat(s); err == nil {
			t.Errorf("segment %s with nothing live survived the restart", s)
		}
	}
}

// TestJournalDeferredMovesOut: a deferred item gets files of its own,
// which win over its journal record after a restart.
func TestJournalDeferredMovesOut(t *testing.T) {
	h := journalHarness(t, Options{})
	d := &fakeDeliverer{respond: all(Temporary, fmt.Errorf("451 4.3.0 try later"))}
	h.run(d)
	id := h.put("alice@example.com", "bob@example.org")
	h.waitProcessed(id)
	files := spoolFiles(t, h.dir)
	if !slices.Equal(files, []string{id + envSuffix, id + msgSuffix}) {
		t.Fatalf("files after a deferral = %v", files)
	}
	b, err := os.ReadFile(filepath.Join(h.dir, id+msgSuffix))
	if err != nil || string(b) != testMessage {
		t.Fatalf("moved message = %q, %v", b, err)
	}
	crash(h.q)
	h2 := journalHarness(t, Options{Dir: h.dir})
	got := h2.q.List()
	if len(got) != 1 || got[0].ID != id || got[0].Attempts != 1 || got[0].LastError != "451 4.3.0 try later" {
		t.Fatalf("after restart = %+v, want the item once, with its attempt recorded", got)
	}
}

// TestJournalTornTail: a record cut short at the end of a segment (a write
// that never completed, so never acknowledged, or a file cut short) is
// skipped and reported, and the records before it load.
func TestJournalTornTail(t *testing.T) {
	h := journalHarness(t, Options{})
	a := h.put("alice@example.com", "bob@example.org")
	b := h.put("alice@example.com", "carol@example.org")
	crash(h.q)
	seg := segments(t, h.dir)[0]
	rec := messageRecord([]byte(`{"version":1}`), [][]byte{[]byte("a message that was being written")})
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	raw := rec.bytes()
	f.Write(raw[:len(raw)-7])
	f.Close()

	h2 := journalHarness(t, Options{Dir: h.dir})
	got := listedIDs(h2.q)
	want := []string{a, b}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("after a torn tail: %v, want %v", got, want)
	}
	if n := h2.q.Stats().Quarantined; n != 1 {
		t.Errorf("a torn tail was reported %d times, want once", n)
	}
	if l := h2.logs.Lines("damaged journal record skipped", filepath.Base(seg), "incomplete record"); len(l) != 1 {
		t.Errorf("log lines about the torn tail: %q", l)
	}
}

// threeInASegment puts three messages (to a@, b@ and c@example.org) into
// one journal segment, crashes the queue, and returns the segment's path
// and bytes with the three IDs.
func threeInASegment(t *testing.T) (h *harness, seg string, data []byte, a, b, c string) {
	t.Helper()
	h = journalHarness(t, Options{})
	a = h.put("alice@example.com", "a@example.org")
	b = h.put("alice@example.com", "b@example.org")
	c = h.put("alice@example.com", "c@example.org")
	crash(h.q)
	seg = segments(t, h.dir)[0]
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	return h, seg, data, a, b, c
}

// messageOffset is where, in a segment's bytes, the message of the record
// addressed to rcpt says "numbers" (the body h.put writes).
func messageOffset(data []byte, rcpt string) int {
	i := bytes.Index(data, []byte(`"address":"`+rcpt+`"`))
	return i + bytes.Index(data[i:], []byte("numbers"))
}

// TestJournalDamagedRecord: a record damaged in the middle of a segment is
// reported, a copy of the segment is kept in quarantine, and the good
// records around it are loaded.
func TestJournalDamagedRecord(t *testing.T) {
	h, seg, data, a, b, c := threeInASegment(t)
	data[messageOffset(data, "b@example.org")] ^= 0x20
	os.WriteFile(seg, data, 0o600)

	h2 := journalHarness(t, Options{Dir: h.dir})
	got := listedIDs(h2.q)
	want := []string{a, c}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("loaded %v, want %v (not %s)", got, want, b)
	}
	if n := h2.q.Stats().Quarantined; n != 1 {
		t.Errorf("quarantined %d, want 1", n)
	}
	copyPath := filepath.Join(h.dir, quarantineDir, "journal-"+filepath.Base(seg))
	if _, err := os.Stat(copyPath); err != nil {
		t.Errorf("no copy in quarantine: %v", err)
	}
	if l := h2.logs.Lines("damaged journal record skipped", filepath.Base(seg), "id="+b, "checksum mismatch"); len(l) != 1 {
		t.Errorf("log lines about the damage: %q", l)
	}
}

// TestJournalDamagedBeforeTornTail: a damaged record right before a torn
// last record: both are reported, the damaged one by its checksum and the
// torn one as incomplete (the scanner once took the torn record's header,
// whose length runs past the end, for garbage and stopped).
func TestJournalDamagedBeforeTornTail(t *testing.T) {
	h, seg, data, a, b, c := threeInASegment(t)
	data[messageOffset(data, "b@example.org")] ^= 0x20
	// Cut inside c's message: its envelope still reads.
	os.WriteFile(seg, data[:messageOffset(data, "c@example.org")], 0o600)

	h2 := journalHarness(t, Options{Dir: h.dir})
	got := listedIDs(h2.q)
	if !slices.Equal(got, []string{a}) {
		t.Errorf("loaded %v, want only %s", got, a)
	}
	if l := h2.logs.Lines("damaged journal record skipped", "id="+b, "checksum mismatch"); len(l) != 1 {
		t.Errorf("log lines about the damaged record: %q", l)
	}
	if l := h2.logs.Lines("damaged journal record skipped", "id="+c, "incomplete record"); len(l) != 1 {
		t.Errorf("log lines about the torn last record: %q", l)
	}
	if n := h2.q.Stats().Quarantined; n != 2 {
		t.Errorf("quarantined %d, want 2", n)
	}
}

// TestJournalBigMessageGetsFiles: a message larger than the journal takes
// is streamed to files of its own.
func TestJournalBigMessageGetsFiles(t *testing.T) {
	h := journalHarness(t, Options{})
	body := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n", journalMaxMessage/64+10)
	id, err := h.q.Put(context.Background(), "a@example.com", []string{"b@example.org"}, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(h.dir, id+msgSuffix))
	if err != nil || string(b) != body {
		t.Fatalf("message file: %d bytes, %v; want %d", len(b), err, len(body))
	}
	d := &fakeDeliverer{respond: all(Delivered, nil)}
	h.run(d)
	h.waitProcessed(id)
	if got := d.deliveries()[0].Body; got != body {
		t.Errorf("delivered %d bytes, want %d", len(got), len(body))
	}
}

// TestJournalSyncFailure: a failed fdatasync fails the Puts of that commit
// (nothing acknowledged), the segment is cut back and left, and the next
// Put works in a new segment.
func TestJournalSyncFailure(t *testing.T) {
	var fail atomic.Bool
	setBeforeSync(t, func(p string) error {
		if strings.HasSuffix(p, segSuffix) && fail.Load() {
			return syscall.ENOSPC
		}
		return nil
	})
	h := journalHarness(t, Options{})
	a := h.put("alice@example.com", "a@example.org")
	fail.Store(true)
	_, err := h.q.Put(context.Background(), "alice@example.com", []string{"b@example.org"}, strings.NewReader(testMessage))
	if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "journal ") {
		t.Fatalf("Put during the failure: %v", err)
	}
	fail.Store(false)
	c := h.put("alice@example.com", "c@example.org")
	if n := len(segments(t, h.dir)); n != 2 {
		t.Errorf("%d segments, want 2 (the failed one sealed, a new one)", n)
	}
	crash(h.q)
	got := listedIDs(journalHarness(t, Options{Dir: h.dir}).q)
	want := []string{a, c}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("after restart %v, want only the acknowledged %v", got, want)
	}
}

// TestJournalSegmentsCollected: sealed segments whose items are all done
// are deleted, oldest first.
func TestJournalSegmentsCollected(t *testing.T) {
	defer func(old int64) { maxSegmentBytes = old }(maxSegmentBytes)
	maxSegmentBytes = 4 << 10 // about three messages per segment
	h := journalHarness(t, Options{})
	d := &fakeDeliverer{respond: all(Delivered, nil)}
	h.run(d)
	var ids []string
	for i := range 20 {
		ids = append(ids, h.put("alice@example.com", fmt.Sprintf("r%d@example.org", i)))
	}
	h.waitProcessed(ids...)
	if err := h.q.j.barrier(); err != nil {
		t.Fatal(err)
	}
	if n := len(segments(t, h.dir)); n > 1 {
		t.Errorf("%d segments left after every item was delivered, want at most the current one", n)
	}
}

// TestJournalDelete: Delete removes a journaled item for good.
func TestJournalDelete(t *testing.T) {
	h := journalHarness(t, Options{})
	a := h.put("alice@example.com", "a@example.org")
	b := h.put("alice@example.com", "b@example.org")
	if err := h.q.Delete(a); err != nil {
		t.Fatal(err)
	}
	if err := h.q.j.barrier(); err != nil {
		t.Fatal(err)
	}
	crash(h.q)
	got := journalHarness(t, Options{Dir: h.dir}).q.List()
	if len(got) != 1 || got[0].ID != b {
		t.Errorf("after Delete and restart: %+v, want only %s", got, b)
	}
}

// TestReadDirSeesJournal: `queue list` shows journaled items too.
func TestReadDirSeesJournal(t *testing.T) {
	h := journalHarness(t, Options{})
	a := h.put("alice@example.com", "a@example.org")
	infos, err := ReadDir(h.dir)
	if err != nil || len(infos) != 1 || infos[0].ID != a || infos[0].Recipients[0].Address != "a@example.org" {
		t.Errorf("ReadDir = %+v, %v", infos, err)
	}
}

// FuzzScanSegment: the segment reader takes any bytes without panicking,
// and what it loads is a checked envelope whose message matches it.
func FuzzScanSegment(f *testing.F) {
	env := newEnvelope("189cab0a10fa62000769ea34", t0, "a@example.com", []string{"b@example.org"}, int64(len(testMessage)), nil)
	data, _ := env.marshal()
	good := messageRecord(data, [][]byte{[]byte(testMessage)}).bytes()
	f.Add(good)
	f.Add(append(append([]byte{}, good...), encodeRecord(kindDone, []byte(env.ID)).bytes()...))
	f.Add(good[:len(good)-3])
	f.Add([]byte("SRJ1"))
	f.Add(encodeRecord(kindMoved, []byte("x")).bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &journalScan{entries: map[string]*jentry{}}
		seg := &segment{path: "fuzz.seg"}
		s.parseSegment(seg, data)
		for id, e := range s.entries {
			if e.env.ID != id || e.loc.off < 0 || e.loc.off+e.env.Size > int64(len(data)) {
				t.Fatalf("entry %s out of range: %+v", id, e.loc)
			}
		}
	})
}

// TestWriteAll: more buffers than one writev takes, some empty, arrive in
// order and whole.
func TestWriteAll(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "w"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var bufs [][]byte
	var want []byte
	for i := range 3000 {
		b := []byte(fmt.Sprintf("%d,", i))
		if i%7 == 0 {
			b = nil
		}
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	if err := writeAll(f, bufs); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got, want) {
		t.Fatalf("wrote %d bytes, want %d in order", len(got), len(want))
	}
}
