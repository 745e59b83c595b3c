package deliver

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/spool"
)

// localError is a failure on our side (the spool), not the relay's.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// permanentError marks a failure retrying cannot fix; enhanced is its
// DSN status ("5.6.7"), or "" for 5.0.0.
type permanentError struct {
	err      error
	enhanced string
}

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// classify maps an error to a recipient status: a 5xx reply is Permanent
// unless it is about authentication, or refuses this client rather than
// the message (ClientRefusedError); everything else is Temporary.
func classify(err error) spool.Status {
	var pe *permanentError
	if errors.As(err, &pe) {
		return spool.Permanent
	}
	var cr *ClientRefusedError
	if errors.As(err, &cr) {
		return spool.Temporary
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code < 500 || se.Code > 599 {
		return spool.Temporary
	}
	if authProblem(se) {
		return spool.Temporary
	}
	return spool.Permanent
}

// replyCodes returns the relay's reply code in err and its enhanced status
// code ("5.1.1", "" if the reply had none), or 0 and "" when err holds no
// reply from the relay. The spool takes a failed recipient's DSN status
// from them, never from the error's text.
func replyCodes(err error) (code int, enhanced string) {
	var pe *permanentError
	if errors.As(err, &pe) {
		return 0, pe.enhanced
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return 0, ""
	}
	if e := se.EnhancedCode; e != smtp.NoEnhancedCode && e != (smtp.EnhancedCode{}) {
		enhanced = fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
	}
	return se.Code, enhanced
}

// authProblem reports whether a 5xx reply says the session lacks
// authentication (530 5.7.0, or 5.7.8/5.7.9/5.7.11 codes): the policy
// defers those rather than bounce.
func authProblem(se *smtp.SMTPError) bool {
	if se.Code == 530 || se.Code == 535 || se.Code == 538 {
		return true
	}
	e := se.EnhancedCode
	return e[0] == 5 && e[1] == 7 && (e[2] == 0 || e[2] == 8 || e[2] == 9 || e[2] == 11)
}

// okReply describes the relay's 250 to the data, whose text (without the
// code) is text: the code, the enhanced code ("2.0.0", "" if the reply had
// none) and the reply's first line. The spool makes it safe to log.
func okReply(text string) (code int, enhanced, reply string) {
	first, _, _ := strings.Cut(text, "\n")
	if e, _, ok := strings.Cut(first, " "); ok {
		var c smtp.EnhancedCode
		if n, _ := fmt.Sscanf(e, "%d.%d.%d", &c[0], &c[1], &c[2]); n == 3 && c[0] == 2 {
			enhanced = fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
		}
	}
	return 250, enhanced, "250 " + first
}
