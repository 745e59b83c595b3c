package spool

import (
	"context"
	"io"
	"time"
)

// Status is the outcome of one delivery attempt for one recipient.
type Status int

const (
	// Delivered: the relay accepted the recipient and the message (250 after DATA).
	Delivered Status = iota
	// Temporary: try again later (4xx, network error, TLS or authentication
	// problem, credential unavailable). Auth failures are always Temporary.
	Temporary
	// Permanent: the relay refused this recipient or message with a 5xx
	// that retrying will not fix. The recipient fails and the sender gets a DSN.
	Permanent
	// Waiting: not attempted, because a rate limit holds it back until
	// RcptResult.RetryAt. It is no failure: it stays pending, and when
	// every recipient of an attempt waits, the attempt is not counted and
	// nothing is written; the item is simply tried again at RetryAt.
	Waiting
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Temporary:
		return "temporary"
	case Permanent:
		return "permanent"
	case Waiting:
		return "waiting"
	}
	return "unknown"
}

// Delivery is one attempt to deliver a queued message to its pending
// recipients. The spool fills it; a Deliverer reads it.
type Delivery struct {
	ID       string
	From     string   // envelope sender; "" is the null sender <>
	To       []string // the recipients still pending, in envelope order
	Size     int64    // message size in bytes
	Attempt  int      // 1 for the first attempt
	Received time.Time

	// Open returns the message body (header and body, CRLF line endings,
	// not dot-stuffed). The caller closes it. It may be called more than
	// once (a retry on another relay).
	Open func() (io.ReadCloser, error)
}

// RcptResult is what happened to one recipient.
type RcptResult struct {
	Rcpt   string
	Status Status
	// Err explains a Temporary or Permanent status; it goes into the
	// envelope's last error and into a DSN, so it must never hold a secret.
	Err error
	// Relay is the name of the relay that answered, if any.
	Relay string
	// Code is the relay's reply code that decided the status (550), 0 when
	// no reply did (a network error, a local failure); Enhanced is that
	// reply's enhanced status code (RFC 3463, "5.1.1"), "" when it had
	// none. A failed recipient's DSN status and diagnostic come from them.
	Code     int
	Enhanced string
	// Reason names why a recipient was not delivered, from a small fixed
	// set the Deliverer defines ("connect", "auth", "relay_4xx"...), for
	// the log and metric labels; "" when delivered.
	Reason string
	// Reply is the relay's reply to the data of a delivered recipient, on
	// one line ("250 2.0.0 Ok: queued as 4ZxYw"), for the log: the
	// relay's own queue ID follows the message there.
	Reply string
	// RetryAt is when a Waiting recipient may be tried again; zero means
	// after MinBackoff.
	RetryAt time.Time
}

// Deliverer delivers messages for the spool. agent/deliver implements it;
// the spool defines it so that it depends on nothing above it.
type Deliverer interface {
	// Deliver tries d once and returns one result per d.To, in order. It
	// must classify every failure as Temporary or Permanent; anything it
	// cannot classify is Temporary. It returns when ctx ends.
	Deliver(ctx context.Context, d *Delivery) []RcptResult
}
