package deliver

import (
	"net"

	"github.com/sealrelay/sealrelay/internal/heldwrites"
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
	out *heldwrites.Writer
}

// wireFlushSize is how much waits before it is sent without a read.
const wireFlushSize = 64 << 10

func newWireConn(c net.Conn) *wireConn {
	return &wireConn{Conn: c, out: heldwrites.New(c, wireFlushSize)}
}

func (c *wireConn) Write(p []byte) (int, error) { return c.out.Write(p) }

func (c *wireConn) Read(p []byte) (int, error) {
	if err := c.out.Flush(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}
