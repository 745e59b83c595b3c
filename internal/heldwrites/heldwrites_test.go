package heldwrites

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// rec records the writes that reach it; with fail set, each fails.
type rec struct {
	writes []string
	fail   error
}

func (r *rec) Write(p []byte) (int, error) {
	if r.fail != nil {
		return 0, r.fail
	}
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

// Writes wait for Flush, or for limit bytes, and go out in one piece.
func TestHeldUntilFlushOrLimit(t *testing.T) {
	r := &rec{}
	w := New(r, 100)
	w.Write([]byte("250-one\r\n"))
	w.Write([]byte("250 two\r\n"))
	if len(r.writes) != 0 {
		t.Fatalf("sent before Flush: %q", r.writes)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil { // nothing waits: nothing sent
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("x"), 60))
	w.Write(bytes.Repeat([]byte("y"), 60)) // 120 bytes: over the limit
	want := []string{"250-one\r\n250 two\r\n", string(bytes.Repeat([]byte("x"), 60)) + string(bytes.Repeat([]byte("y"), 60))}
	if !slices.Equal(r.writes, want) {
		t.Fatalf("writes = %q, want %q", r.writes, want)
	}
}

// After a failed send nothing more goes out, and every call says why.
func TestErrorSticks(t *testing.T) {
	boom := errors.New("connection reset by peer")
	r := &rec{fail: boom}
	w := New(r, 100)
	w.Write([]byte("QUIT\r\n"))
	if err := w.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush = %v, want the send's error", err)
	}
	r.fail = nil
	if _, err := w.Write([]byte(".\r\n")); !errors.Is(err, boom) {
		t.Errorf("Write after a failed send = %v, want the first error", err)
	}
	if err := w.Flush(); !errors.Is(err, boom) {
		t.Errorf("Flush after a failed send = %v, want the first error", err)
	}
	if len(r.writes) != 0 {
		t.Errorf("sent after the failure: %q", r.writes)
	}
}
