package deliver

import (
	"context"
	"errors"
	"fmt"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/spool"
)

// deliver runs m's transaction on a connection to r. A non-nil error means
// r could not be used and the next relay should be tried.
func (r *relay) deliver(ctx context.Context, m *spool.Delivery) ([]spool.RcptResult, error) {
	fresh := false
	for {
		cn, reused, err := r.get(ctx, fresh)
		if err != nil {
			return nil, err
		}
		done := cn.watch(ctx)
		res, retry := cn.transaction(m, reused)
		done()
		r.put(cn)
		switch retry {
		case retryDropped:
			// The pooled connection was gone before MAIL was taken:
			// nothing was sent, so a new connection may try.
			r.d.st.broken.Add(1)
			r.d.log.Debug("pooled connection was closed by the relay; replacing it", "relay", r.cfg.Name)
			continue
		case retryRefused:
			// A 5xx to MAIL on a pooled session may be about the session;
			// a new one gives the final answer.
			r.d.st.broken.Add(1)
			r.d.log.Debug("pooled connection refused MAIL; trying a new connection", "relay", r.cfg.Name, "id", m.ID)
			fresh = true
			continue
		}
		return res, nil
	}
}

// retry says whether a transaction should run again on another connection.
type retry int

const (
	retryNone    retry = iota // the results are final
	retryDropped              // the pooled connection was gone at MAIL
	retryRefused              // the pooled connection answered MAIL with a 5xx
)

// transaction sends MAIL, RCPT for each recipient and DATA, in one write
// when the relay offers PIPELINING (go-smtp's SendEnvelope), then the
// body. Once MAIL is taken, the relay's answers are final for this
// attempt. On a reused connection, a network error before the body (the
// relay had closed the session, or closed it now) or a 421 to MAIL
// reports retryDropped, and a 5xx to MAIL retryRefused: nothing was
// taken, try another connection.
func (cn *conn) transaction(m *spool.Delivery, reused bool) (res []spool.RcptResult, again retry) {
	name := cn.r.cfg.Name
	res = make([]spool.RcptResult, len(m.To))
	for i, to := range m.To {
		res[i] = spool.RcptResult{Rcpt: to, Status: spool.Temporary, Relay: name}
	}
	setAll := func(idx []int, err error) []spool.RcptResult {
		st := classify(err)
		code, enhanced := replyCodes(err)
		for _, i := range idx {
			res[i].Status, res[i].Err = st, err
			res[i].Code, res[i].Enhanced = code, enhanced
		}
		return res
	}
	all := make([]int, len(m.To))
	for i := range all {
		all[i] = i
	}
	relayErr := func(cmd string, err error) error {
		cn.fail(err)
		return fmt.Errorf("relay %s: %w", name, &replyError{cmd: cmd, err: err})
	}
	// A refusal of this client (not of the message) defers: see
	// ClientRefusedError.
	refused := func(cmd string, err error) error { return cn.clientRefused(relayErr(cmd, err)) }

	// A non-ASCII address needs SMTPUTF8 (RFC 6531); there is no
	// downgrade. To a relay that does not offer it, a non-ASCII sender
	// fails the whole message, a non-ASCII recipient itself only: 5.6.7,
	// and a DSN.
	opts := &smtp.MailOptions{Size: m.Size}
	rcpts := all
	if !isASCII(m.From) || !allASCII(m.To) {
		if ok, _ := cn.c.Extension("SMTPUTF8"); ok {
			opts.UTF8 = true
		} else if !isASCII(m.From) {
			err := fmt.Errorf("relay %s does not offer SMTPUTF8, which the non-ASCII sender address needs (no downgrade)", name)
			return setAll(all, &permanentError{err, "5.6.7"}), retryNone
		} else {
			rcpts = nil
			for i, to := range m.To {
				if isASCII(to) {
					rcpts = append(rcpts, i)
					continue
				}
				setAll([]int{i}, &permanentError{fmt.Errorf("relay %s does not offer SMTPUTF8, which this non-ASCII address needs (no downgrade)", name), "5.6.7"})
			}
			if len(rcpts) == 0 {
				return res, retryNone
			}
		}
	}
	// The body is opened before anything is sent: DATA goes out with the
	// envelope when the relay offers PIPELINING.
	body, err := m.Open()
	if err != nil {
		return setAll(rcpts, &localError{fmt.Errorf("open spooled message %s: %w", m.ID, err)}), retryNone
	}
	defer body.Close()

	mailCmd := fmt.Sprintf("MAIL FROM:<%s>", m.From)
	rcptCmd := func(i int) string { return fmt.Sprintf("RCPT TO:<%s>", m.To[i]) }
	to := make([]string, len(rcpts))
	for k, i := range rcpts {
		to[k] = m.To[i]
	}
	w, replies, err := cn.c.SendEnvelope(m.From, opts, to, nil)
	if err != nil {
		cn.broken = true
		if reused {
			// Nothing of the message was sent: the relay had closed the
			// pooled session, or closed it now.
			return nil, retryDropped
		}
	}
	if replies.Mail != nil {
		var se *smtp.SMTPError
		errors.As(replies.Mail, &se)
		switch {
		case reused && se.Code == 421:
			cn.broken = true
			return nil, retryDropped
		case reused && se.Code >= 500:
			cn.broken = true
			return nil, retryRefused
		}
		return setAll(rcpts, refused(mailCmd, replies.Mail)), retryNone
	}
	if replies.Rcpt == nil {
		// The connection failed before MAIL's reply.
		return setAll(rcpts, relayErr(mailCmd, err)), retryNone
	}
	cn.inTransaction = true
	var accepted []int
	for k, rerr := range replies.Rcpt {
		if rerr != nil {
			setAll([]int{rcpts[k]}, refused(rcptCmd(rcpts[k]), rerr))
			continue
		}
		accepted = append(accepted, rcpts[k])
	}
	if err != nil {
		// The recipients accepted, and those not answered, got no DATA.
		cmd := "DATA"
		if n := len(replies.Rcpt); n < len(rcpts) {
			cmd = rcptCmd(rcpts[n])
		}
		return setAll(append(accepted, rcpts[len(replies.Rcpt):]...), relayErr(cmd, err)), retryNone
	}
	if len(accepted) == 0 {
		return res, retryNone
	}
	if replies.Data != nil {
		return setAll(accepted, relayErr("DATA", replies.Data)), retryNone
	}

	text, err := cn.data(m.ID, body, w)
	if err == nil {
		code, enhanced, reply := okReply(text)
		for _, i := range accepted {
			res[i].Status, res[i].Err = spool.Delivered, nil
			res[i].Code, res[i].Enhanced, res[i].Reply = code, enhanced, reply
		}
		return res, retryNone
	}
	var le *localError
	if !errors.As(err, &le) {
		err = relayErr("DATA", err)
	}
	return setAll(accepted, err), retryNone
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func allASCII(ss []string) bool {
	for _, s := range ss {
		if !isASCII(s) {
			return false
		}
	}
	return true
}
