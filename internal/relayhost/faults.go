package relayhost

import (
	"net"

	"github.com/emersion/go-smtp"
)

// Faults is the hook through which a relay host misbehaves on purpose:
// scripted replies, dropped connections, stalls. The implementation lives
// in a test-only package (internal/testing/upstream); the release binary
// never sets one, and with none the relay host answers every command as a
// well-behaved relay does. Each method is asked at one point of a session,
// and reads the faults as they are at that moment.
type Faults interface {
	// Admit is asked for each new connection before the greeting. conn is
	// what go-smtp would serve (c itself, or TLS over it with implicit
	// TLS); Admit returns what to serve instead, or false when it has
	// answered and closed the connection itself.
	Admit(c *Conn, conn net.Conn) (net.Conn, bool)
	// AuthWithdrawn reports whether AUTH is not offered; an AUTH command is
	// then recorded and answered 502.
	AuthWithdrawn() bool
	// AuthReply, if not nil, answers every AUTH whatever the credentials.
	AuthReply() *smtp.SMTPError
	// KeepAuthResponses reports whether the client's SASL responses are
	// kept, in memory and for this AUTH only, for AuthFailed.
	KeepAuthResponses() bool
	// AuthFailed is asked when an AUTH fails with err. It returns whether
	// to close the connection instead of replying, and the reply to send
	// instead of err (or err). responses are the client's SASL responses
	// if KeepAuthResponses said so.
	AuthFailed(mechanism string, responses [][]byte, err error) (drop bool, reply error)
	// Reply, if not nil, answers MAIL or RCPT (cmd) for one of addrs
	// instead of the normal success.
	Reply(c *Conn, cmd string, addrs ...string) *smtp.SMTPError
	// Data is asked once a message's data has been read, before it is
	// accepted; a non-nil error is the reply instead, and the message is
	// not kept. It may record the fault in at (Stalled, Dropped).
	Data(c *Conn, at *Attempt, to []string) error
}
