package deliver

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/spool"
)

// data sends the message body and returns the relay's final reply: its
// text on success ("2.0.0 Ok: queued as 4ZxYw"), else the error.
func (cn *conn) data(m *spool.Delivery) (string, error) {
	body, err := m.Open()
	if err != nil {
		// Nothing was sent after RCPT; the transaction stays open, so put
		// closes the connection.
		return "", &localError{fmt.Errorf("open spooled message %s: %w", m.ID, err)}
	}
	defer body.Close()
	w, err := cn.c.Data()
	if err != nil {
		return "", err
	}
	src := &errReader{r: body}
	buf := copyBufs.Get().(*[]byte)
	_, err = io.CopyBuffer(w, src, *buf)
	copyBufs.Put(buf)
	if err != nil {
		// Never send the final dot after a short copy: the relay would take
		// a truncated message. Dropping the connection aborts it.
		cn.broken = true
		cn.raw.Close()
		if src.err != nil {
			return "", &localError{fmt.Errorf("read spooled message %s: %w", m.ID, src.err)}
		}
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

// copyBufs are the buffers message bodies are sent through.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// errReader remembers the error of the reader it wraps, to tell a local
// read failure from a network write failure in io.Copy.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}
