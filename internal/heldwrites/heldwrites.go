// Package heldwrites holds what is written to a connection until its owner
// flushes it, and then sends it in one write: a protocol that reads a reply
// after all it sends flushes before each read, and so makes one system call
// of what would be many (the lines of a reply, the TLS records of a
// message). It promises that nothing is sent after a failed send: the
// first error sticks.
package heldwrites

import (
	"io"
	"sync"
)

// Writer holds writes to its destination. The zero value is not usable:
// make one with New. It is safe for concurrent use.
type Writer struct {
	mu    sync.Mutex
	dst   io.Writer
	limit int
	buf   *[]byte // what waits; nil when nothing does
	err   error   // the first error sending it
}

// New returns a Writer to dst that sends on its own once limit bytes wait.
func New(dst io.Writer, limit int) *Writer { return &Writer{dst: dst, limit: limit} }

// bufs are the buffers writes wait in; one is taken while something waits.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxPooled is the largest buffer given back to the pool.
const maxPooled = 256 << 10

// Write holds p, and sends what waits if that is limit bytes or more.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if w.buf == nil {
		w.buf = bufs.Get().(*[]byte)
	}
	*w.buf = append(*w.buf, p...)
	if len(*w.buf) >= w.limit {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush sends what waits, in one write.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

func (w *Writer) flushLocked() error {
	if w.err != nil {
		return w.err
	}
	if w.buf == nil {
		return nil
	}
	_, err := w.dst.Write(*w.buf)
	if cap(*w.buf) <= maxPooled {
		*w.buf = (*w.buf)[:0]
		bufs.Put(w.buf)
	}
	w.buf, w.err = nil, err
	return err
}
