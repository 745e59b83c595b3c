package smtpd

import (
	"bytes"
	"errors"
	"io"
)

// errBareLineEnding is what strictCRLFReader returns when the message holds
// a CR not followed by LF or an LF not preceded by CR.
var errBareLineEnding = errors.New("bare CR or LF in message")

// strictCRLFReader passes a message through unchanged and fails with
// errBareLineEnding at the first bare CR or bare LF. It streams: it holds
// one bit of state (was the last byte a CR) across Read calls, so a CRLF
// split between two reads is accepted.
//
// The bytes of the Read that finds a bare line ending are not returned:
// the consumer (Queue.Put) sees the error and aborts.
//
// The first error from the underlying reader, or errBareLineEnding, is kept
// in err so that the caller can tell a body error from a Put failure.
type strictCRLFReader struct {
	r      io.Reader
	lastCR bool
	err    error // first non-nil error returned; io.EOF at a clean end
	// beforeRead, if set, runs before each read of r (it extends the
	// connection's read deadline, so a stalled client times out in DATA).
	beforeRead func()
}

func (s *strictCRLFReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.beforeRead != nil {
		s.beforeRead()
	}
	n, err := s.r.Read(p)
	if !s.check(p[:n]) {
		s.err = errBareLineEnding
		return 0, s.err
	}
	if err == io.EOF && s.lastCR {
		// The message ended with a CR that no LF followed.
		err = errBareLineEnding
		n = 0
	}
	if err != nil {
		s.err = err
	}
	return n, err
}

// check reports whether b, following the bytes already seen, has only
// CRLF line endings so far. It finds the LFs with bytes.IndexByte and
// counts the CRs with bytes.Count: every LF must follow a CR, and then as
// many CRs as LFs means no CR stands alone (a CR at the very end waits for
// the next bytes).
func (s *strictCRLFReader) check(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if s.lastCR {
		if b[0] != '\n' {
			return false
		}
		s.lastCR = false
		b = b[1:]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		s.lastCR = true
		b = b[:n-1]
	}
	lfs := 0
	for p := b; ; {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			break
		}
		if i == 0 || p[i-1] != '\r' {
			// A LF first in p: first in b (no CR before it, or the CR
			// was checked above), or right after the previous LF.
			return false
		}
		lfs++
		p = p[i+1:]
	}
	return bytes.Count(b, cr) == lfs
}

var cr = []byte{'\r'}
