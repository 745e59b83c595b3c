package relayhost

import (
	"errors"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Attempt is one transaction whose data the relay host read to the end,
// whatever became of it: accepted, answered 451, dropped, stalled, or
// refused by a rule. A client's retries of one message show as several
// Attempts with its Message-ID, which is how tests check the client's
// backoff. CountOnly servers keep none.
type Attempt struct {
	Session   int    // Session.ID it came on
	MessageID string // the Message-ID header value, "" if none
	// Time is when the data had been read, before any stall: the client
	// cannot have had a reply to this attempt earlier.
	Time time.Time
	// Code is the reply: 250, the code of a scripted or injected refusal,
	// or 421 when the connection was dropped or a stall ended at Close
	// (no reply reached the client then).
	Code    int
	Dropped bool // a fault closed the connection after the data
	Stalled bool // a fault stalled the reply first
}

// attemptLog keeps the Attempts; its zero value is ready.
type attemptLog struct {
	mu   sync.Mutex
	list []Attempt
}

// add records a, with the code of reply (nil is 250).
func (l *attemptLog) add(a Attempt, reply error) {
	a.Code = 250
	var se *smtp.SMTPError
	if errors.As(reply, &se) {
		a.Code = se.Code
	} else if reply != nil {
		a.Code = 451 // go-smtp's answer to an error that is not an SMTPError
	}
	l.mu.Lock()
	l.list = append(l.list, a)
	l.mu.Unlock()
}

func (l *attemptLog) reset() {
	l.mu.Lock()
	l.list = nil
	l.mu.Unlock()
}

// Attempts returns the transactions whose data the relay host read since the
// last Reset, in the order they were read.
func (s *Server) Attempts() []Attempt {
	l := &s.rec.attempts
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Attempt, len(l.list))
	copy(out, l.list)
	return out
}

// AttemptsByMessageID groups Attempts by Message-ID, each group in the order
// the attempts were read.
func (s *Server) AttemptsByMessageID() map[string][]Attempt {
	out := map[string][]Attempt{}
	for _, a := range s.Attempts() {
		out[a.MessageID] = append(out[a.MessageID], a)
	}
	return out
}
