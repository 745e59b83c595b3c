// Package sdnotifytest plays systemd's side of the sd_notify protocol for
// tests: a unixgram socket that records each datagram a process sends to
// $NOTIFY_SOCKET, with the time it arrived.
package sdnotifytest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Message is one datagram: its lines, as KEY=VALUE assignments.
type Message struct {
	At    time.Time
	Lines []string
}

// Has reports whether the message holds the assignment kv ("READY=1").
func (m Message) Has(kv string) bool {
	for _, l := range m.Lines {
		if l == kv {
			return true
		}
	}
	return false
}

// Value returns the value of key in the message ("" if absent).
func (m Message) Value(key string) string {
	for _, l := range m.Lines {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	return ""
}

// Socket is a notify socket. Its methods are safe for concurrent use.
type Socket struct {
	// Path is the value for NOTIFY_SOCKET.
	Path string

	conn *net.UnixConn
	mu   sync.Mutex
	msgs []Message
	more chan struct{} // closed and replaced at each message
}

// Listen opens a notify socket in a fresh short directory (socket paths
// are limited to 107 bytes) and closes it when the test ends.
func Listen(t testing.TB) *Socket {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Socket{Path: filepath.Join(dir, "notify"), more: make(chan struct{})}
	s.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	go s.read()
	return s
}

func (s *Socket) read() {
	buf := make([]byte, 4096)
	for {
		n, _, err := s.conn.ReadFromUnix(buf)
		if err != nil {
			return
		}
		m := Message{At: time.Now(), Lines: strings.Split(strings.TrimRight(string(buf[:n]), "\n"), "\n")}
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		close(s.more)
		s.more = make(chan struct{})
		s.mu.Unlock()
	}
}

// Messages returns every message so far, oldest first.
func (s *Socket) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Count returns how many messages so far hold kv.
func (s *Socket) Count(kv string) int {
	n := 0
	for _, m := range s.Messages() {
		if m.Has(kv) {
			n++
		}
	}
	return n
}

// WaitFor waits up to d for the first message after the first `from`
// messages that holds kv, and returns it and its position. ok is false if
// none came in time.
func (s *Socket) WaitFor(kv string, from int, d time.Duration) (m Message, pos int, ok bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		for i := from; i < len(s.msgs); i++ {
			if s.msgs[i].Has(kv) {
				m := s.msgs[i]
				s.mu.Unlock()
				return m, i, true
			}
		}
		more := s.more
		s.mu.Unlock()
		select {
		case <-more:
		case <-deadline.C:
			return Message{}, 0, false
		}
	}
}
