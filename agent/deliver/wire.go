package deliver

import (
	"net"
	"sync"
)

// wireConn is the TCP connection to a relay, below TLS: it holds what is
// written until the next read (or until wireFlushSize bytes wait), and
// then sends it in one system call. An SMTP client reads a reply after
// everything it sends, so nothing waits longer than that; a message body,
// which TLS hands down in 16 KB records, goes out in a few writes instead
// of one per record, and the last of it together with the final dot.
//
// The first write error sticks: every later Write and Read returns it, so
// nothing (not the final dot) is ever sent after part of the stream was
// lost. Close closes at once and drops what waits: it is also how a
// command is aborted, and an aborted session's last bytes do not matter
// (a TLS close_notify after QUIT is one of them).
type wireConn struct {
	net.Conn
	buf *[]byte // what waits to be sent; nil when nothing does
	err error   // the first write error
}

// wireFlushSize is how much waits before it is sent without a read.
const wireFlushSize = 64 << 10

var wireBufs = sync.Pool{New: func() any { b := make([]byte, 0, wireFlushSize+16<<10); return &b }}

func (c *wireConn) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.buf == nil {
		c.buf = wireBufs.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	if len(*c.buf) >= wireFlushSize {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *wireConn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// flush sends what waits.
func (c *wireConn) flush() error {
	if c.err != nil {
		return c.err
	}
	if c.buf == nil {
		return nil
	}
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	wireBufs.Put(c.buf)
	c.buf = nil
	c.err = err
	return err
}
