package sasl

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/xdg-go/scram"
)

// MaxSCRAMIterations is the most PBKDF2 iterations a SCRAM client
// accepts from a server (the minimum is xdg-go/scram's 4096): a server
// asking for more could hold a delivery for minutes.
const MaxSCRAMIterations = 1 << 20

// SCRAMClient is a SCRAM-SHA-1 or SCRAM-SHA-256 client (RFC 5802, RFC
// 7677) on github.com/xdg-go/scram, without channel binding. It verifies
// the server's final message: a signature that does not match fails AUTH.
type SCRAMClient struct {
	mech string
	conv *scram.ClientConversation
	// step counts server messages: 1 server-first, 2 server-final.
	step     int
	verified bool
}

// NewSCRAMClient returns a client for mech (SCRAM-SHA-1 or
// SCRAM-SHA-256). The user name and password are prepared with SASLprep;
// a password SASLprep refuses is an error that names the reason, never
// the password.
func NewSCRAMClient(mech, username, password string) (*SCRAMClient, error) {
	mech = strings.ToUpper(mech)
	var hash scram.HashGeneratorFcn
	switch mech {
	case SCRAMSHA1:
		hash = scram.SHA1
	case SCRAMSHA256:
		hash = scram.SHA256
	default:
		return nil, &UnknownMechanismError{Mechanism: mech, For: "a SCRAM client"}
	}
	c, err := hash.NewClient(username, password, "")
	if err != nil {
		// xdg-go/scram's messages quote the user name (not secret) and
		// only the reason for the password.
		if strings.Contains(err.Error(), "password") {
			return nil, fmt.Errorf("%s: the password cannot be prepared (SASLprep refuses it)", mech)
		}
		return nil, fmt.Errorf("%s: the user name cannot be prepared (SASLprep refuses it)", mech)
	}
	return &SCRAMClient{mech: mech, conv: c.NewConversation()}, nil
}

// Start sends the client-first message.
func (a *SCRAMClient) Start() (string, []byte, error) {
	first, err := a.conv.Step("")
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", a.mech, err)
	}
	return a.mech, []byte(first), nil
}

// Next answers the server-first message with the client-final message
// (the proof), then checks the server-final message (the server's
// signature) and answers it with an empty response.
func (a *SCRAMClient) Next(challenge []byte) ([]byte, error) {
	a.step++
	switch a.step {
	case 1:
		if err := checkIterations(challenge); err != nil {
			return nil, fmt.Errorf("%s: %w", a.mech, err)
		}
		resp, err := a.conv.Step(string(challenge))
		if err != nil {
			return nil, fmt.Errorf("%s: the server's first message: %s", a.mech, scramReason(err))
		}
		return []byte(resp), nil
	case 2:
		if _, err := a.conv.Step(string(challenge)); err != nil {
			return nil, fmt.Errorf("%s: the server's final message: %s", a.mech, scramReason(err))
		}
		a.verified = a.conv.Valid()
		return []byte{}, nil
	}
	return nil, fmt.Errorf("%s: the server sent a challenge after its final message", a.mech)
}

// Verify reports whether the server's final message was received and its
// signature matched. go-smtp ends AUTH at a 235 without showing the client
// its text, so a server that answers 235 before sending its final message
// (a 334) passes Client.Auth; Verify then says so.
func (a *SCRAMClient) Verify() error {
	if a.verified {
		return nil
	}
	return fmt.Errorf("%s: the server accepted the login without proving it knows the password (no server signature)", a.mech)
}

// scramReason turns an error of xdg-go/scram's conversation into a fixed
// text: its parse errors quote the server's message.
func scramReason(err error) string {
	msg := err.Error()
	switch {
	case msg == "server validation failed":
		return "the server's signature does not match (the server does not know the password, or the exchange was altered)"
	case strings.HasPrefix(msg, "server error: "):
		return "the server reports error " + printable(strings.TrimPrefix(msg, "server error: "), 60)
	case msg == "server nonce did not extend client nonce":
		return "the server's nonce does not extend the client's"
	case strings.HasPrefix(msg, "server requested too few iterations"):
		return msg
	}
	return "malformed"
}

var errIterations = errors.New("the server asks for more PBKDF2 iterations than " + strconv.Itoa(MaxSCRAMIterations))

// checkIterations refuses a server-first message whose i= exceeds
// MaxSCRAMIterations; other faults are left to xdg-go/scram.
func checkIterations(serverFirst []byte) error {
	for _, attr := range strings.Split(string(serverFirst), ",") {
		if v, ok := strings.CutPrefix(attr, "i="); ok {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil && n > MaxSCRAMIterations {
				return errIterations
			}
		}
	}
	return nil
}
