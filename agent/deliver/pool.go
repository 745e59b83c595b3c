package deliver

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"sync"
	"time"
)

// relay is one configured relay and its pool of connections.
//
// open counts every connection that exists or is being set up, idle or in
// use; it never exceeds MaxConnections. An idle connection keeps its place.
type relay struct {
	cfg     Relay
	d       *Deliverer
	tlsConf *tls.Config
	health  relayHealth
	lim     *limiter // the relay's message rate; nil: none

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
			return nil, errShuttingDown
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
			r.health.note(err, time.Now())
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
			r.health.note(nil, time.Now())
			r.d.st.reused.Add(1)
			return cn, true, nil
		}
		cn.quit()
		r.release()
	}
}

// reusable checks a pooled connection before another transaction: not idle
// too long, and its credential and client certificate still current.
// Pooled connections are never in a transaction (put closes those), and a
// transaction that ended with the reply to its data left the session at
// its initial state (RFC 5321 4.1.4), so the next MAIL goes straight out,
// with no RSET; a connection the relay has dropped meanwhile shows at that
// MAIL, and deliver retries on a new one.
func (r *relay) reusable(cn *conn) bool {
	if time.Since(cn.idleSince) >= r.cfg.IdleTimeout {
		r.d.st.idleClosed.Add(1)
		return false
	}
	stale := false
	if r.cfg.Auth != AuthDisabled && cn.credUse != credNone {
		cur, err := r.d.creds.Get(r.cfg.authCredential())
		stale = err == nil && (cn.credUse == credUnavailable || !cur.SameSecret(cn.cred))
	}
	if stale || r.clientCertStale(cn) {
		r.d.st.stale.Add(1)
		r.d.log.Debug("closing a pooled connection: its credential or client certificate was replaced", "relay", r.cfg.Name)
		return false
	}
	return true
}
