package deliver

import (
	"bytes"
	"errors"
	"net"
	"slices"
	"testing"
)

// recConn records the writes that reach the connection and answers reads
// with "250 ok\r\n"; with fail set, every write fails with it.
type recConn struct {
	net.Conn // nil: only Read, Write and Close are called
	writes   []string
	fail     error
	closed   bool
}

func (c *recConn) Write(p []byte) (int, error) {
	if c.fail != nil {
		return 0, c.fail
	}
	c.writes = append(c.writes, string(p))
	return len(p), nil
}

func (c *recConn) Read(p []byte) (int, error) { return copy(p, "250 ok\r\n"), nil }
func (c *recConn) Close() error               { c.closed = true; return nil }

// What is written waits for the next read and goes out in one write;
// past wireFlushSize it goes out without one.
func TestWireConnHoldsWritesUntilRead(t *testing.T) {
	rc := &recConn{}
	c := newWireConn(rc)
	for _, s := range []string{"MAIL FROM:<a@example.com>\r\n", "RCPT TO:<b@example.org>\r\n", "DATA\r\n"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if len(rc.writes) != 0 {
		t.Fatalf("sent before a read: %q", rc.writes)
	}
	if _, err := c.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	if want := []string{"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"}; !slices.Equal(rc.writes, want) {
		t.Fatalf("writes = %q, want %q", rc.writes, want)
	}
	// A body larger than wireFlushSize: sent once that much waits, the
	// rest with the next read.
	rc.writes = nil
	body := bytes.Repeat([]byte("x"), 16<<10)
	for range 5 {
		c.Write(body)
	}
	if len(rc.writes) != 1 || len(rc.writes[0]) != 4*len(body) {
		t.Fatalf("after 80 KB: %d writes (%v bytes)", len(rc.writes), lens(rc.writes))
	}
	c.Read(make([]byte, 64))
	if len(rc.writes) != 2 || len(rc.writes[1]) != len(body) {
		t.Fatalf("after the read: %d writes (%v bytes)", len(rc.writes), lens(rc.writes))
	}
}

// After a failed write nothing more is sent: not a later command, not the
// final dot of a message.
func TestWireConnErrorSticks(t *testing.T) {
	boom := errors.New("connection reset by peer")
	rc := &recConn{fail: boom}
	c := newWireConn(rc)
	c.Write(bytes.Repeat([]byte("x"), wireFlushSize))
	rc.fail = nil
	if _, err := c.Write([]byte(".\r\n")); !errors.Is(err, boom) {
		t.Errorf("Write after a failed write: %v, want the first error", err)
	}
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, boom) {
		t.Errorf("Read after a failed write: %v, want the first error", err)
	}
	if len(rc.writes) != 0 {
		t.Errorf("sent after the failure: %q", rc.writes)
	}
}

// Close closes at once and sends nothing that waits.
func TestWireConnCloseDrops(t *testing.T) {
	rc := &recConn{}
	c := newWireConn(rc)
	c.Write([]byte("QUIT\r\n"))
	c.Close()
	if !rc.closed || len(rc.writes) != 0 {
		t.Errorf("closed %v, writes %q", rc.closed, rc.writes)
	}
}

func lens(ss []string) []int {
	var n []int
	for _, s := range ss {
		n = append(n, len(s))
	}
	return n
}
