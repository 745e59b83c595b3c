package deliver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// data sends the message body read from body once the relay has
// answered DATA with 354 (w), and returns the relay's final reply: its
// text on success ("2.0.0 Ok: queued as 4ZxYw"), else the error.
//
// The body goes straight to the connection, dot-stuffed here a buffer at
// a time (go-smtp's writer, net/textproto's, stuffs a byte at a time: at
// 100 KB it was the delivery's largest cost). Only the body's last line
// ending goes through go-smtp's writer, which leaves it ready for its
// Close to send the final "." and read the reply, so the transaction ends
// in go-smtp's state as before. The client's own buffer is empty then: it
// flushes each command.
func (cn *conn) data(id string, body io.Reader, w *smtp.DataCommand) (string, error) {
	tail, err := cn.sendBody(body, id)
	if err == nil {
		_, err = w.Write(tail)
	}
	if err != nil {
		// Never send the final dot after a short body: the relay would
		// take a truncated message. Dropping the connection aborts it.
		cn.broken = true
		cn.raw.Close()
		return "", err
	}
	resp, err := w.CloseWithResponse()
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		cn.inTransaction = false // the reply to the data ends the transaction
	}
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

// sendBody writes the message read from body to the connection as DATA
// carries it, all but its last line ending, which it returns (CRLF, LF,
// CR or nothing) for go-smtp's writer. A read error is a *localError.
// Each write has CommandTimeout to complete.
func (cn *conn) sendBody(body io.Reader, id string) ([]byte, error) {
	bufs := dataBufs.Get().(*dataBuf)
	defer dataBufs.Put(bufs)
	in := bufs.in[:]
	defer cn.wire.SetWriteDeadline(time.Time{}) //nolint:errcheck // a closed conn fails the next write
	var st stuffer
	n := 0 // bytes read into in and not yet stuffed
	for {
		k, err := body.Read(in[n:])
		n += k
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &localError{fmt.Errorf("read spooled message %s: %w", id, err)}
		}
		if n < len(in) {
			continue
		}
		// Keep the last two bytes: they may be the body's last line
		// ending.
		if err := cn.writeBody(st.append(bufs.out[:0], in[:n-2])); err != nil {
			return nil, err
		}
		n = copy(in, in[n-2:n])
	}
	end := lastLineEnding(in[:n])
	if err := cn.writeBody(st.append(bufs.out[:0], in[:n-len(end)])); err != nil {
		return nil, err
	}
	return end, nil
}

// writeBody writes p to the connection under CommandTimeout.
func (cn *conn) writeBody(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	cn.wire.SetWriteDeadline(time.Now().Add(cn.r.cfg.CommandTimeout)) //nolint:errcheck // a closed conn fails the write
	_, err := cn.wire.Write(p)
	return err
}

// lastLineEnding returns the line ending p ends with: CRLF, a bare LF or
// CR, or nothing.
func lastLineEnding(p []byte) []byte {
	switch {
	case bytes.HasSuffix(p, crlf):
		return p[len(p)-2:]
	case len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r'):
		return p[len(p)-1:]
	}
	return nil
}

var crlf = []byte("\r\n")

// stuffer turns message bytes into DATA's form (RFC 5321 section 4.5.2):
// a line that starts with "." gets another in front, and a bare LF
// becomes CRLF. A bare CR passes unchanged. It carries the position
// (start of a line, last byte a CR) from one call to the next.
type stuffer struct {
	midLine bool // not at the start of a line
	cr      bool // the last byte was a CR
}

// append appends p in DATA's form to dst.
func (s *stuffer) append(dst, p []byte) []byte {
	for len(p) > 0 {
		if !s.midLine && p[0] == '.' {
			dst = append(dst, '.')
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.midLine, s.cr = true, p[len(p)-1] == '\r'
			return append(dst, p...)
		}
		cr := s.cr
		if i > 0 {
			cr = p[i-1] == '\r'
		}
		dst = append(dst, p[:i]...)
		if !cr {
			dst = append(dst, '\r')
		}
		dst = append(dst, '\n')
		s.midLine, s.cr = false, false
		p = p[i+1:]
	}
	return dst
}

// dataBuf is what one body is sent through: in, and out with room for in
// stuffed at worst (every byte doubled).
type dataBuf struct {
	in  [32 << 10]byte
	out []byte
}

var dataBufs = sync.Pool{New: func() any { return &dataBuf{out: make([]byte, 0, 2*(32<<10))} }}
