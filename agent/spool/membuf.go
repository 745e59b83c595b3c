package spool

import (
	"crypto/sha256"
	"hash"
	"io"
	"sync"
	"sync/atomic"

	"github.com/sealrelay/sealrelay/internal/safeio"
)

// Memory for messages being received is bounded, whatever their size and
// however many arrive at once: a message is received into chunks of
// chunkSize bytes, each reserved against the queue's budget
// (Options.MemoryBudget) before it is used. A message that grows past
// journalMaxMessage, or that needs a chunk the budget cannot give, spills:
// what it holds is written to its own temporary file, its chunks go back,
// and the rest streams to the file through one spare buffer of its own
// (spareSize bytes, outside the budget) as it arrives. So the memory held
// for message bodies is at most the budget plus spareSize per message
// being received. A message that stays in its chunks is appended to the
// journal straight from them (writev), with no copy.

const (
	chunkSize = 16 << 10 // one buffer of a message in memory
	spareSize = 8 << 10  // the buffer a spilled message streams through
)

var (
	chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}
	sparePool = sync.Pool{New: func() any { b := make([]byte, spareSize); return &b }}
)

// budget bounds the bytes of message chunks held at once.
type budget struct {
	limit int64
	used  atomic.Int64
	peak  atomic.Int64 // the most ever used (for tests and metrics)
}

// reserve takes n bytes from the budget, or reports that they are not
// there.
func (b *budget) reserve(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			for p := b.peak.Load(); u+n > p && !b.peak.CompareAndSwap(p, u+n); p = b.peak.Load() {
			}
			return true
		}
	}
}

func (b *budget) release(n int64) { b.used.Add(-n) }

// inbound is a message being received.
type inbound struct {
	mem    *budget
	chunks []*[]byte  // reserved; filled in order
	n      int        // bytes in chunks
	first  [4]*[]byte // chunks' first backing array: no allocation for small messages

	st    *store
	path  string       // of the message's own file, if it spills
	file  *safeio.File // the message's own file, once spilled
	sum   hash.Hash    // SHA-256 of what went to file
	size  int64        // bytes in file
	spare *[]byte

	intoSpare bool // the last buffer handed out by space is spare
}

// newInbound starts receiving a message whose own file, if it needs one,
// is path in st.
func newInbound(mem *budget, st *store, path string) *inbound {
	m := &inbound{mem: mem, st: st, path: path}
	m.chunks = m.first[:0]
	return m
}

// space returns where the next bytes are read into.
func (m *inbound) space() []byte {
	if m.file == nil {
		if fill := m.n - (len(m.chunks)-1)*chunkSize; len(m.chunks) > 0 && fill < chunkSize {
			m.intoSpare = false
			return (*m.chunks[len(m.chunks)-1])[fill:]
		}
		if m.n < journalMaxMessage && m.mem.reserve(chunkSize) {
			c := chunkPool.Get().(*[]byte)
			m.chunks = append(m.chunks, c)
			m.intoSpare = false
			return *c
		}
	}
	// Read into the spare buffer: if the message ends here, it never
	// needed more than its chunks; if not, it spills.
	if m.spare == nil {
		m.spare = sparePool.Get().(*[]byte)
	}
	m.intoSpare = true
	return *m.spare
}

// took records that p, the start of what space returned, was filled.
func (m *inbound) took(p []byte) error {
	if !m.intoSpare {
		m.n += len(p)
		return nil
	}
	if m.file == nil {
		if err := m.spill(); err != nil {
			return err
		}
	}
	return m.write(p)
}

// readFrom receives the message from r until EOF. An error of r comes
// back as a *bodyError wrapping it; others name the file.
func (m *inbound) readFrom(r io.Reader) error {
	for {
		p := m.space()
		n, err := r.Read(p)
		if n > 0 {
			if werr := m.took(p[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &bodyError{err}
		}
	}
}

// bodyError is an error of the message's reader (the sender), not of the
// spool.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading message body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// spill moves the message to its own file, giving its chunks back.
func (m *inbound) spill() error {
	f, err := m.st.create(m.path)
	if err != nil {
		return err
	}
	m.file, m.sum = f, sha256.New()
	for _, p := range m.appendParts(nil) {
		if err := m.write(p); err != nil {
			return err
		}
	}
	m.releaseChunks()
	return nil
}

func (m *inbound) write(p []byte) error {
	if _, err := m.file.Write(p); err != nil {
		return err
	}
	m.sum.Write(p)
	m.size += int64(len(p))
	return nil
}

// appendParts appends the bytes held in chunks, in order, to parts.
func (m *inbound) appendParts(parts [][]byte) [][]byte {
	rest := m.n
	for _, c := range m.chunks {
		k := min(rest, chunkSize)
		parts = append(parts, (*c)[:k])
		rest -= k
	}
	return parts
}

func (m *inbound) releaseChunks() {
	for _, c := range m.chunks {
		chunkPool.Put(c)
	}
	m.mem.release(int64(len(m.chunks)) * chunkSize)
	m.chunks, m.n = m.chunks[:0], 0
}

// close gives back everything the message holds; a file not committed is
// removed.
func (m *inbound) close() {
	m.releaseChunks()
	if m.spare != nil {
		sparePool.Put(m.spare)
		m.spare = nil
	}
	if m.file != nil {
		m.file.Abort()
		m.file = nil
	}
}
