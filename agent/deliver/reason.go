package deliver

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/oauth"
)

// The reasons a recipient was not delivered, a small fixed set that logs
// and metric labels can use (spool.RcptResult.Reason).
const (
	ReasonConnect     = "connect"                 // the TCP connect failed, or the relay sent no greeting
	ReasonTLS         = "tls"                     // STARTTLS missing or refused, handshake or verification failed
	ReasonAuth        = "auth"                    // the auth policy could not be met, or the relay refused the credential
	ReasonCredentials = "credentials_unavailable" // the credential could not be read from its source
	ReasonToken       = "oauth2_token"            // no OAuth2 access token: the token endpoint refused or did not answer
	ReasonRelay4xx    = "relay_4xx"               // the relay answered with a temporary failure
	ReasonRelay5xx    = "relay_5xx"               // the relay answered with a permanent failure
	ReasonNetwork     = "network"                 // the connection broke or timed out after it was set up
	ReasonSMTPUTF8    = "smtputf8"                // the addresses need SMTPUTF8 and the relay lacks it
	ReasonLocal       = "local"                   // the spooled message could not be read
	ReasonShutdown    = "shutdown"                // the agent was stopping
	ReasonOther       = "other"                   // anything else
)

// Reasons lists every reason, for metrics that show each from the start.
func Reasons() []string {
	return []string{ReasonConnect, ReasonTLS, ReasonAuth, ReasonCredentials, ReasonToken, ReasonRelay4xx, ReasonRelay5xx,
		ReasonNetwork, ReasonSMTPUTF8, ReasonLocal, ReasonShutdown, ReasonOther}
}

// reasonOf names why err kept a recipient from being delivered. When every
// relay failed, err holds each relay's error and the first relay's names
// the reason.
func reasonOf(err error) string {
	var ce *ConnError
	var le *localError
	var pe *permanentError
	var se *smtp.SMTPError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, context.Canceled), errors.Is(err, errShuttingDown):
		return ReasonShutdown
	case errors.As(err, &ce):
		return stageReason(ce)
	case errors.As(err, &le):
		return ReasonLocal
	case errors.As(err, new(*ClientRefusedError)):
		return ReasonAuth
	case errors.As(err, &pe):
		return ReasonSMTPUTF8
	case errors.As(err, &se):
		return replyReason(se)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ReasonNetwork
	}
	return ReasonOther
}

// stageReason names the reason of a failure to set up a connection.
func stageReason(ce *ConnError) string {
	var se *smtp.SMTPError
	isReply := errors.As(ce.Err, &se)
	if errors.As(ce.Err, new(*certRefusal)) {
		return ReasonTLS
	}
	switch ce.Stage {
	case StageTLS, StageStartTLS:
		if errors.Is(ce.Err, secrets.ErrUnavailable) {
			return ReasonCredentials
		}
		return ReasonTLS
	case StageAuth:
		if !isReply && errors.Is(ce.Err, secrets.ErrUnavailable) {
			return ReasonCredentials
		}
		if te := (*oauth.TokenError)(nil); !isReply && errors.As(ce.Err, &te) {
			return ReasonToken
		}
		return ReasonAuth
	case StageConnect:
		return ReasonConnect
	case StageGreeting:
		if isReply {
			return replyReason(se)
		}
		return ReasonConnect
	}
	if isReply {
		return replyReason(se)
	}
	return ReasonNetwork
}

// replyReason names the reason of a relay's refusal.
func replyReason(se *smtp.SMTPError) string {
	switch {
	case authProblem(se):
		return ReasonAuth
	case se.Code >= 500:
		return ReasonRelay5xx
	case se.Code >= 400:
		return ReasonRelay4xx
	}
	return ReasonOther
}

// errShuttingDown is the error of a delivery attempted after Close.
var errShuttingDown = errors.New("delivery is shutting down")

// setReasons fills in the Reason of each result that was not delivered.
func setReasons(res []spool.RcptResult) {
	for i := range res {
		if res[i].Status != spool.Delivered && res[i].Reason == "" {
			res[i].Reason = reasonOf(res[i].Err)
		}
	}
}

// RelayState is what the last attempts through one relay found.
type RelayState struct {
	Name, Address string
	// Tried: a delivery went through this relay, or tried to, since New.
	Tried bool
	// Usable: the last attempt got a connection ready for mail (a reply
	// to MAIL, RCPT or DATA does not count against the relay).
	Usable bool
	// Since is when the relay last became usable or unusable.
	Since time.Time
	// Reason is why the last attempt failed, one of Reasons().
	Reason string
}

// relayHealth is a relay's RelayState, updated after each attempt.
type relayHealth struct {
	mu sync.Mutex
	st RelayState
}

// note records the outcome of an attempt through the relay: err is the
// error that made the relay unusable, nil if it took the transaction. An
// attempt cut short by the agent stopping says nothing about the relay.
func (h *relayHealth) note(err error, now time.Time) {
	reason := reasonOf(err)
	if reason == ReasonShutdown {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	usable := err == nil
	if !h.st.Tried || h.st.Usable != usable {
		h.st.Since = now
	}
	h.st.Tried, h.st.Usable, h.st.Reason = true, usable, reason
}

// Relays returns the state of each relay, in the configured order.
func (d *Deliverer) Relays() []RelayState {
	out := make([]RelayState, len(d.relays))
	for i, r := range d.relays {
		r.health.mu.Lock()
		out[i] = r.health.st
		r.health.mu.Unlock()
		out[i].Name, out[i].Address = r.cfg.Name, r.cfg.Address
	}
	return out
}
