package smtp

import (
	"bytes"
	"errors"
	"io"
)

var ErrTooLongLine = errors.New("smtp: too long a line in input stream")

// lineLimitReader reads from the underlying Reader but restricts
// line length of lines in input stream to a certain length.
//
// If line length exceeds the limit - Read returns ErrTooLongLine
type lineLimitReader struct {
	R         io.Reader
	LineLimit int

	curLineLength int
}

func (r *lineLimitReader) Read(b []byte) (int, error) {
	if r.curLineLength > r.LineLimit && r.LineLimit > 0 {
		return 0, ErrTooLongLine
	}

	n, err := r.R.Read(b)
	if err != nil {
		return n, err
	}

	if r.LineLimit == 0 {
		return n, nil
	}

	// A LF ends a line and counts towards the next one.
	p := b[:n]
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			i = len(p)
		}
		if i > 0 {
			r.curLineLength += i
			if r.curLineLength > r.LineLimit {
				return 0, ErrTooLongLine
			}
		}
		if i == len(p) {
			return n, nil
		}
		r.curLineLength = 1
		p = p[i+1:]
	}
}
