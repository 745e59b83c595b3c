package spool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPutMemoryBudget: many Puts of large messages arriving slowly at the
// same time hold at most Options.MemoryBudget bytes of buffers between
// them; what does not fit is written to each message's own file as it
// arrives, and every message is stored intact. The messages are below the
// journal's size limit, so only the budget sends them to disk.
func TestPutMemoryBudget(t *testing.T) {
	const (
		sessions = 32
		size     = 768 << 10
		piece    = 16 << 10
		budgetB  = 256 << 10
	)
	h := journalHarness(t, Options{MemoryBudget: budgetB})
	bodies := make([][]byte, sessions)
	writers := make([]*io.PipeWriter, sessions)
	ids := make([]string, sessions)
	errs := make([]error, sessions)
	var wg sync.WaitGroup
	for i := range sessions {
		line := fmt.Sprintf("session %02d: 0123456789abcdefghijklmnopqrstuvwxyz\r\n", i)
		bodies[i] = []byte(strings.Repeat(line, size/len(line)+1)[:size])
		pr, pw := io.Pipe()
		writers[i] = pw
		wg.Go(func() {
			ids[i], errs[i] = h.q.Put(context.Background(), "alice@example.com", []string{fmt.Sprintf("r%02d@example.org", i)}, pr)
		})
	}
	// feed hands every session the next bytes of its message, in turn, so
	// that all are in the middle of their message at once. A pipe write
	// returns once Put has read it.
	feed := func(from, to int) {
		for off := from; off < to; off += piece {
			for i, w := range writers {
				if _, err := w.Write(bodies[i][off : off+piece]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	onDisk := func() int64 {
		var n int64
		tmps, _ := filepath.Glob(filepath.Join(h.dir, "*"+msgSuffix+tmpSuffix))
		for _, p := range tmps {
			if fi, err := os.Stat(p); err == nil {
				n += fi.Size()
			}
		}
		return n
	}

	feed(0, size/2)
	// Half of each message has been read: what is not in memory (at most
	// the budget, and a spare buffer per session between a read and its
	// write) is on disk, in the messages' own temporary files.
	fed := int64(sessions * size / 2)
	for deadline := time.Now().Add(20 * time.Second); onDisk()+budgetB < fed; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes read by the Puts, %d of them on disk: more than the budget (%d) is held in memory", fed, onDisk(), budgetB)
		}
	}
	if used := h.q.mem.used.Load(); used > budgetB {
		t.Errorf("%d bytes of buffers reserved, budget %d", used, budgetB)
	}
	small := h.put("carol@example.com", "dave@example.org") // a small message still goes through

	feed(size/2, size)
	for _, w := range writers {
		w.Close()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	s := h.q.Stats()
	if peak := h.q.mem.peak.Load(); peak > budgetB || peak == 0 {
		t.Errorf("at most %d bytes of buffers were held at once, want between 1 and the budget %d", peak, budgetB)
	}
	if used := h.q.mem.used.Load(); used != 0 || s.Buffered != 0 {
		t.Errorf("%d bytes of buffers still reserved (Stats.Buffered %d) after every Put returned", used, s.Buffered)
	}
	if s.Spilled < sessions-budgetB/chunkSize || s.Spilled > sessions+1 {
		t.Errorf("%d messages spilled to their own files, want at least %d of %d", s.Spilled, sessions-budgetB/chunkSize, sessions)
	}
	if tmps, _ := filepath.Glob(filepath.Join(h.dir, "*"+tmpSuffix)); len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}

	// Every message is durable and intact: after a crash, each is
	// delivered byte for byte.
	crash(h.q)
	h2 := journalHarness(t, Options{Dir: h.dir})
	d := &fakeDeliverer{respond: all(Delivered, nil)}
	h2.run(d)
	h2.waitProcessed(append(ids, small)...)
	got := map[string]string{}
	for _, c := range d.deliveries() {
		got[c.To[0]] = c.Body
	}
	for i := range sessions {
		if b := got[fmt.Sprintf("r%02d@example.org", i)]; b != string(bodies[i]) {
			t.Errorf("message %d delivered with %d bytes, differing from the %d sent", i, len(b), len(bodies[i]))
		}
	}
	if got["dave@example.org"] != testMessage {
		t.Errorf("the small message was delivered as %q", got["dave@example.org"])
	}
	if q := h2.q.Stats().Quarantined; q != 0 {
		t.Errorf("%d items quarantined", q)
	}
}

// TestJournalSizeLimit: a message of exactly journalMaxMessage bytes goes
// to the journal from its buffers; one byte more spills to its own file.
func TestJournalSizeLimit(t *testing.T) {
	h := journalHarness(t, Options{})
	put := func(n int) string {
		body := bytes.Repeat([]byte("x"), n)
		id, err := h.q.Put(context.Background(), "alice@example.com", []string{"bob@example.org"}, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	in := put(journalMaxMessage)
	if files := spoolFiles(t, h.dir); len(files) != 0 || h.q.Stats().Spilled != 0 {
		t.Errorf("a message of %d bytes got files %v (spilled %d), want the journal", journalMaxMessage, files, h.q.Stats().Spilled)
	}
	out := put(journalMaxMessage + 1)
	if files := spoolFiles(t, h.dir); len(files) != 2 || h.q.Stats().Spilled != 1 {
		t.Errorf("a message of %d bytes: files %v (spilled %d), want its own two", journalMaxMessage+1, files, h.q.Stats().Spilled)
	}
	crash(h.q)
	h2 := journalHarness(t, Options{Dir: h.dir})
	for id, size := range map[string]int64{in: journalMaxMessage, out: journalMaxMessage + 1} {
		if got := h2.info(id).Size; got != size {
			t.Errorf("%s after restart: %d bytes, want %d", id, got, size)
		}
	}
}
