package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/spool"
)

// relay is one configured relay and its pool of connections.
//
// open counts every connection that exists or is being set up, idle or in
// use; it never exceeds MaxConnections. An idle connection keeps its place.
type relay struct {
	cfg     Relay
	d       *Deliverer
	tlsConf *tls.Config

	mu      sync.Mutex
	idle    []*conn       // most recently used last
	open    int           // connections counted against MaxConnections
	changed chan struct{} // closed and replaced when idle or open changes
	closed  bool
}

// signalLocked wakes every goroutine waiting in acquire.
func (r *relay) signalLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// acquire returns an idle connection, or nil with a place reserved for a
// new one, waiting while the relay is at MaxConnections. With fresh it
// never returns an idle connection: at MaxConnections it closes the
// longest idle one and takes its place.
func (r *relay) acquire(ctx context.Context, fresh bool) (*conn, error) {
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, errors.New("delivery is shutting down")
		}
		n := len(r.idle)
		if n > 0 && !fresh {
			cn := r.idle[n-1]
			r.idle = r.idle[:n-1]
			r.mu.Unlock()
			return cn, nil
		}
		if r.open < r.cfg.MaxConnections {
			r.open++
			r.mu.Unlock()
			return nil, nil
		}
		if n > 0 {
			oldest := r.idle[0]
			r.idle = slices.Delete(r.idle, 0, 1)
			r.mu.Unlock()
			oldest.quit()
			return nil, nil
		}
		wait := r.changed
		r.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for one of %d connections: %w", r.cfg.MaxConnections, ctx.Err())
		}
	}
}

// release gives back the place of a connection that was closed or never
// opened.
func (r *relay) release() {
	r.mu.Lock()
	r.open--
	r.signalLocked()
	r.mu.Unlock()
}

// put returns a connection after use: to the pool if it is usable, else
// it is closed. A connection still in a transaction (no reply to its data
// ended it) is closed too: RSET would end the transaction, but go-smtp's
// client then says EHLO again before the next MAIL, which strict relays
// (OpenSMTPD) refuse with a 503.
func (r *relay) put(cn *conn) {
	if !cn.broken && !cn.inTransaction {
		r.mu.Lock()
		if !r.closed {
			cn.idleSince = time.Now()
			r.idle = append(r.idle, cn)
			r.signalLocked()
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
	}
	cn.quit()
	r.release()
}

// expired removes and returns the idle connections unused since before
// now - IdleTimeout. The caller closes them and releases their places.
func (r *relay) expired(now time.Time) []*conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*conn
	kept := r.idle[:0]
	for _, cn := range r.idle {
		if now.Sub(cn.idleSince) >= r.cfg.IdleTimeout {
			out = append(out, cn)
		} else {
			kept = append(kept, cn)
		}
	}
	clear(r.idle[len(kept):])
	r.idle = kept
	return out
}

// shutdown marks the relay closed and returns its idle connections for
// the caller to close.
func (r *relay) shutdown() []*conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	out := r.idle
	r.idle = nil
	r.open -= len(out)
	r.signalLocked()
	return out
}

// get returns a connection ready for MAIL: a pooled one that is still
// good (reused), or a new one; with fresh always a new one. Its error is a
// *ConnError or a wait that ctx ended.
func (r *relay) get(ctx context.Context, fresh bool) (cn *conn, reused bool, err error) {
	for {
		cn, err := r.acquire(ctx, fresh)
		if err != nil {
			return nil, false, err
		}
		if cn == nil {
			cn, est, err := r.establish(ctx)
			if err != nil {
				r.release()
				return nil, false, err
			}
			if est.fallback != nil {
				r.d.st.authFallback.Add(1)
				r.d.log.Warn("authentication failed; continuing without it (auth = enabled)",
					"relay", r.cfg.Name, "reason", est.fallback.Error())
			}
			r.d.st.opened.Add(1)
			return cn, false, nil
		}
		if r.reusable(cn) {
			r.d.st.reused.Add(1)
			return cn, true, nil
		}
		cn.quit()
		r.release()
	}
}

// reusable checks a pooled connection before another transaction: not idle
// too long, and its credential still current. Pooled connections are never
// in a transaction (put closes those), and a transaction that ended with
// the reply to its data left the session at its initial state (RFC 5321
// 4.1.4), so the next MAIL goes straight out, with no RSET; a connection
// the relay has dropped meanwhile shows at that MAIL, and deliver retries
// on a new one.
func (r *relay) reusable(cn *conn) bool {
	if time.Since(cn.idleSince) >= r.cfg.IdleTimeout {
		r.d.st.idleClosed.Add(1)
		return false
	}
	if r.cfg.Auth != AuthDisabled && cn.credUse != credNone {
		cur, err := r.d.creds.Get(r.cfg.Credential)
		stale := err == nil && (cn.credUse == credUnavailable || !cur.SameSecret(cn.cred))
		if stale {
			r.d.st.stale.Add(1)
			r.d.log.Debug("closing a pooled connection: its credential was replaced", "relay", r.cfg.Name)
			return false
		}
	}
	return true
}

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

// transaction sends MAIL, RCPT for each recipient and DATA. Once MAIL is
// taken, the relay's answers are final for this attempt. On a reused
// connection, a MAIL that fails with a network error or 421 (the relay had
// closed the session) reports retryDropped, and one that gets a 5xx
// reports retryRefused: nothing was taken, try another connection.
func (cn *conn) transaction(m *spool.Delivery, reused bool) (res []spool.RcptResult, again retry) {
	name := cn.r.cfg.Name
	res = make([]spool.RcptResult, len(m.To))
	for i, to := range m.To {
		res[i] = spool.RcptResult{Rcpt: to, Status: spool.Temporary, Relay: name}
	}
	setAll := func(idx []int, err error) []spool.RcptResult {
		st := classify(err)
		for _, i := range idx {
			res[i].Status, res[i].Err = st, err
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

	opts := &smtp.MailOptions{Size: m.Size}
	if !isASCII(m.From) || !allASCII(m.To) {
		if ok, _ := cn.c.Extension("SMTPUTF8"); !ok {
			err := fmt.Errorf("relay %s does not support SMTPUTF8, which the non-ASCII addresses need", name)
			return setAll(all, &permanentError{err}), retryNone
		}
		opts.UTF8 = true
	}
	if err := cn.c.Mail(m.From, opts); err != nil {
		var se *smtp.SMTPError
		switch {
		case reused && (!errors.As(err, &se) || se.Code == 421):
			cn.broken = true
			return nil, retryDropped
		case reused && se.Code >= 500:
			cn.broken = true
			return nil, retryRefused
		}
		return setAll(all, relayErr(fmt.Sprintf("MAIL FROM:<%s>", m.From), err)), retryNone
	}
	cn.inTransaction = true
	var accepted []int
	for i, to := range m.To {
		if err := cn.c.Rcpt(to, nil); err != nil {
			err = relayErr(fmt.Sprintf("RCPT TO:<%s>", to), err)
			if cn.broken {
				// The recipients accepted so far got no DATA either.
				return setAll(append(accepted, all[i:]...), err), retryNone
			}
			setAll([]int{i}, err)
			continue
		}
		accepted = append(accepted, i)
	}
	if len(accepted) == 0 {
		return res, retryNone
	}

	err := cn.data(m)
	if err == nil {
		for _, i := range accepted {
			res[i].Status, res[i].Err = spool.Delivered, nil
		}
		return res, retryNone
	}
	var le *localError
	if !errors.As(err, &le) {
		err = relayErr("DATA", err)
	}
	return setAll(accepted, err), retryNone
}

// data sends the message body and returns the relay's final reply.
func (cn *conn) data(m *spool.Delivery) error {
	body, err := m.Open()
	if err != nil {
		// Nothing was sent after RCPT; the transaction stays open, so put
		// closes the connection.
		return &localError{fmt.Errorf("open spooled message %s: %w", m.ID, err)}
	}
	defer body.Close()
	w, err := cn.c.Data()
	if err != nil {
		return err
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
			return &localError{fmt.Errorf("read spooled message %s: %w", m.ID, src.err)}
		}
		return err
	}
	err = w.Close()
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		cn.inTransaction = false // the reply to the data ends the transaction
	}
	return err
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

// localError is a failure on our side (the spool), not the relay's.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// permanentError marks a failure retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// classify maps an error to a recipient status: a 5xx reply is Permanent
// unless it is about authentication; everything else is Temporary.
func classify(err error) spool.Status {
	var pe *permanentError
	if errors.As(err, &pe) {
		return spool.Permanent
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
