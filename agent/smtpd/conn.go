package smtpd

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sealrelay/sealrelay/internal/heldwrites"
)

// conn wraps every accepted connection, below go-smtp and below TLS. It
// gives the connection an id and a client address, counts errors in a row,
// turns an HTTP request line away before go-smtp sees it, counts idle
// timeouts, lets the server end reads (on too many errors, or at
// shutdown) without racing go-smtp's own writes, holds replies until the
// next read and reads ahead in a message (fewer system calls).
type conn struct {
	net.Conn
	srv  *Server
	id   string
	addr netip.Addr // client address, unmapped; invalid for non-IP peers

	// stopReads, once set, is returned by every Read.
	stopReads atomic.Pointer[error]

	// firstLine is used until the first line has been seen: it buffers
	// the start of the connection so that an HTTP request line can be
	// refused before go-smtp reads it.
	firstLine     []byte
	firstLineDone bool

	// raw reads the socket without waiting (for readAhead); nil if the
	// connection has no file descriptor.
	raw syscall.RawConn
	// ahead holds bytes read ahead and not yet returned, in aheadBuf.
	ahead    []byte
	aheadBuf *[]byte
	// out holds what was written and not yet sent (see Write).
	out *heldwrites.Writer

	mu             sync.Mutex
	errors         int  // errors in a row
	inData         int  // Data calls in progress
	closeAfterData bool // shutdown arrived during DATA
}

func newConn(c net.Conn, srv *Server) *conn {
	var b [8]byte
	rand.Read(b[:])
	cn := &conn{Conn: c, srv: srv, id: hex.EncodeToString(b[:]), addr: clientAddr(c), out: heldwrites.New(c, outFlushSize)}
	if sc, ok := c.(syscall.Conn); ok {
		cn.raw, _ = sc.SyscallConn()
	}
	return cn
}

// httpMethods are the request lines refused as the first line, followed by
// a space (Postfix refuses CONNECT, GET and POST with smtpd_forbidden_commands).
var httpMethods = [][]byte{
	[]byte("GET "), []byte("POST "), []byte("HEAD "), []byte("PUT "),
	[]byte("CONNECT "), []byte("OPTIONS "), []byte("DELETE "), []byte("PATCH "), []byte("TRACE "),
}

// maxMethodLen is enough of the first line to recognise an HTTP method.
const maxMethodLen = 8

// isHTTPRequest reports whether line (or the start of it) is an HTTP
// request line.
func isHTTPRequest(line []byte) bool {
	for _, m := range httpMethods {
		if bytes.HasPrefix(line, m) {
			return true
		}
	}
	return false
}

func (c *conn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	if e := c.stopReads.Load(); e != nil {
		return 0, *e
	}
	if !c.firstLineDone {
		return c.readFirstLine(p)
	}
	return c.read(p)
}

// read reads from the connection. A timeout outside a message is an idle
// session: it is counted, and every later Read fails with it. (A reader
// given part of a line before the timeout may still act on that part as
// a command, as bufio.Reader.ReadLine does; the session then answers its
// MAIL, RCPT or DATA with errIdle, and go-smtp answers the next read's
// timeout with 421 4.4.2 and closes.)
func (c *conn) read(p []byte) (int, error) {
	if len(c.ahead) > 0 {
		n := copy(p, c.ahead)
		c.ahead = c.ahead[n:]
		if len(c.ahead) == 0 {
			aheadPool.Put(c.aheadBuf)
			c.ahead, c.aheadBuf = nil, nil
		}
		return n, nil
	}
	n, err := c.Conn.Read(p)
	if ne, ok := err.(net.Error); ok && ne.Timeout() && c.stopReads.Load() == nil {
		c.mu.Lock()
		idle := c.inData == 0
		c.mu.Unlock()
		if idle {
			c.srv.reject(ReasonIdle)
			c.srv.log.Info("session idle, closing connection", "session", c.id, "client", c.addr.String())
			c.stop(err)
		}
	}
	if err == nil && n == len(p) && n >= readAheadMin && c.receiving() {
		c.readAhead()
	}
	return n, err
}

// readAheadSize is how much readAhead takes at once; readAheadMin the
// smallest read that, filled, starts it (a short read filled says little
// about what follows).
const (
	readAheadSize = 64 << 10
	readAheadMin  = 2 << 10
)

var aheadPool = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}

// readAhead takes what the socket holds already, without waiting, after a
// read in a message filled the reader's buffer (of readAheadMin or more):
// go-smtp reads through a 4 KB buffer, and a message streamed in 64 KB
// system calls instead of 4 KB ones costs a fraction of them. The buffer comes from a pool and
// goes back as soon as it is drained, so a session waiting for a slow
// client holds none. A read error is left for the next read to find.
func (c *conn) readAhead() {
	if c.raw == nil {
		return
	}
	buf := aheadPool.Get().(*[]byte)
	n := 0
	c.raw.Read(func(fd uintptr) bool { //nolint:errcheck // see above
		n, _ = syscall.Read(int(fd), *buf)
		return true // one try: never wait
	})
	if n <= 0 {
		aheadPool.Put(buf)
		return
	}
	c.ahead, c.aheadBuf = (*buf)[:n], buf
}

// receiving reports whether a message is being received.
func (c *conn) receiving() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inData > 0
}

// readFirstLine reads until it has the first line or enough of it to tell
// an HTTP request, then serves p from what it buffered.
func (c *conn) readFirstLine(p []byte) (int, error) {
	for len(c.firstLine) < maxMethodLen && bytes.IndexByte(c.firstLine, '\n') < 0 {
		var buf [512]byte
		n, err := c.read(buf[:])
		c.firstLine = append(c.firstLine, buf[:n]...)
		if err != nil {
			if len(c.firstLine) > 0 && !isHTTPRequest(c.firstLine) {
				break // serve what we have; the error comes back next Read
			}
			return 0, err
		}
	}
	if isHTTPRequest(c.firstLine) {
		c.srv.reject(ReasonHTTP)
		c.srv.log.Warn("http request on smtp port, closing connection", "session", c.id, "client", c.addr.String())
		c.writeNow("554 5.7.0 this is an SMTP server, not a web server; closing connection\r\n")
		c.stop(io.EOF)
		return 0, io.EOF
	}
	n := copy(p, c.firstLine)
	c.firstLine = c.firstLine[n:]
	if len(c.firstLine) == 0 {
		c.firstLine = nil
		c.firstLineDone = true
	}
	return n, nil
}

// Write holds what go-smtp (or TLS over this connection) writes until the
// next Read, Close or deadline change, and then sends it in one system
// call: the session reads after every reply, and a reply of many lines
// (EHLO's), which go-smtp writes a line at a time, goes out in one piece.
// The write deadline go-smtp set for the reply still bounds the send. The
// first error sticks: nothing is sent after part of a reply was lost.
func (c *conn) Write(p []byte) (int, error) { return c.out.Write(p) }

// flush sends what Write holds.
func (c *conn) flush() error { return c.out.Flush() }

// SetWriteDeadline sends what Write holds, under the deadline it was
// written under, before setting another: TLS's Close writes its
// close_notify and then sets the deadline to now, before closing.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.flush() //nolint:errcheck // the error sticks for the next Write or Read
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline is SetWriteDeadline for both directions.
func (c *conn) SetDeadline(t time.Time) error {
	c.flush() //nolint:errcheck // as above
	return c.Conn.SetDeadline(t)
}

// outFlushSize is how much waits before it is sent without a read.
const outFlushSize = 16 << 10

// writeNow writes s directly to the connection, after what Write holds,
// with the write timeout. Only for when go-smtp is not writing (it is
// waiting for our Read).
func (c *conn) writeNow(s string) {
	c.SetWriteDeadline(time.Now().Add(c.srv.opt.WriteTimeout))
	if c.flush() == nil {
		io.WriteString(c.Conn, s)
	}
}

// stop makes every further Read return err.
func (c *conn) stop(err error) {
	c.stopReads.CompareAndSwap(nil, &err)
}

// noteError counts an error answered to the client and reports whether the
// client has now made MaxErrors errors in a row.
func (c *conn) noteError() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errors++
	return c.errors >= c.srv.opt.MaxErrors
}

// noteSuccess resets the count of errors in a row.
func (c *conn) noteSuccess() {
	c.mu.Lock()
	c.errors = 0
	c.mu.Unlock()
}

// beginData records that a message is being received. It returns false
// if the server is shutting down and the message must be refused.
func (c *conn) beginData() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeAfterData || c.stopReads.Load() != nil {
		return false
	}
	c.inData++
	return true
}

// endData records the end of a message; at shutdown it ends the session
// once the reply has been written.
func (c *conn) endData() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inData--
	if c.inData == 0 && c.closeAfterData {
		c.stop(os.ErrDeadlineExceeded)
	}
}

// shutdown ends an idle session now (go-smtp answers the read timeout with
// 421 4.4.2 and closes) and a session in DATA after its reply.
func (c *conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inData > 0 {
		c.closeAfterData = true
		return
	}
	c.stop(os.ErrDeadlineExceeded)
	c.SetReadDeadline(time.Unix(1, 0)) // wake a blocked Read
}

// Close sends what Write holds (the last reply), then closes the
// connection and forgets it.
func (c *conn) Close() error {
	c.flush() //nolint:errcheck // closing anyway
	c.srv.untrack(c)
	return c.Conn.Close()
}

// listener wraps the listener given to Serve: it wraps and tracks each
// connection, and serves clients outside the allowed networks itself.
type listener struct {
	net.Listener
	srv *Server
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := newConn(nc, l.srv)
		allowed := l.srv.allowed(c.addr)
		if reason, ok := l.srv.track(c, !allowed); !ok {
			if reason == "" {
				nc.Close() // shutting down
			} else {
				refuse(nc, reason)
			}
			continue
		}
		if allowed {
			return c, nil
		}
		go l.srv.serveDenied(c)
	}
}
