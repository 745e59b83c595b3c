package smtpd

import (
	"io"
	"net"
	"net/netip"
	"time"
)

// Session limits.
//
// Every connection is counted in the listener wrapper, before go-smtp (or
// the refusal loop for other networks) gets it: a connection over a limit
// costs one accept, one short write and one close, and no goroutine.
//
// Timeouts: go-smtp sets its ReadTimeout before each command line, and we
// set it to commandTimeout, the shorter of IdleTimeout and ReadTimeout: the
// whole command line must arrive in that time. Inside a message each read
// gets ReadTimeout anew (see session.Data), so a client sending a large
// message slowly is not cut off while it makes progress.

// refuseWriteTimeout bounds the 421 written to a connection over a limit.
// A new connection's send buffer is empty, so the write does not wait; the
// bound only keeps a broken socket from stalling the accept loop.
const refuseWriteTimeout = time.Second

// Replies to connections over a limit.
const (
	replyMaxSessions  = "421 4.7.0 too many sessions, try again later\r\n"
	replyMaxPerClient = "421 4.7.0 too many sessions from your address, try again later\r\n"
)

// commandTimeout is how long the server waits for a command line.
func (o *Options) commandTimeout() time.Duration {
	return min(o.IdleTimeout, o.ReadTimeout)
}

// clientCount is the open connections of one client address.
type clientCount struct {
	n      int
	warned bool // the refusal above MaxSessionsPerClient was logged as a warning
}

// track registers a new connection. It returns ok if the connection may
// proceed; otherwise reason says which limit refused it, or is empty
// after Shutdown.
func (s *Server) track(c *conn, denied bool) (reason Reason, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", false
	}
	if len(s.conns) >= s.opt.MaxSessions {
		s.overLimit(ReasonMaxSessions, &s.atLimit, "session limit reached", "new connections",
			"max_sessions", s.opt.MaxSessions, c.addr)
		return ReasonMaxSessions, false
	}
	cc := s.perClient[c.addr]
	if c.addr.IsValid() && cc != nil && cc.n >= s.opt.MaxSessionsPerClient {
		s.overLimit(ReasonMaxPerClient, &cc.warned, "per-client session limit reached", "this client's new connections",
			"max_sessions_per_client", s.opt.MaxSessionsPerClient, c.addr)
		return ReasonMaxPerClient, false
	}
	if c.addr.IsValid() {
		if cc == nil {
			cc = &clientCount{}
			s.perClient[c.addr] = cc
		}
		cc.n++
	}
	s.conns[c] = struct{}{}
	s.sessions.Add(1)
	if denied {
		s.denied.Add(1)
	}
	return "", true
}

// overLimit counts a connection refused for reason and logs it: as a
// warning the first time (*warned false), then at debug level until the
// count drops below the limit again. s.mu is held.
func (s *Server) overLimit(reason Reason, warned *bool, what, whom, key string, limit int, client netip.Addr) {
	s.rejected[reason]++
	if *warned {
		s.log.Debug(what+", connection refused", "client", client.String())
		return
	}
	*warned = true
	s.log.Warn(what+", refusing "+whom+" with 421 until sessions end", key, limit, "client", client.String())
}

// untrack forgets a connection; closing it twice forgets it once.
func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	if cc := s.perClient[c.addr]; cc != nil {
		cc.n--
		if cc.n <= 0 {
			delete(s.perClient, c.addr)
		} else if cc.n < s.opt.MaxSessionsPerClient {
			cc.warned = false
		}
	}
	if len(s.conns) < s.opt.MaxSessions {
		s.atLimit = false
	}
}

// refuse answers a connection over a limit with 421 and closes it.
func refuse(nc net.Conn, reason Reason) {
	reply := replyMaxSessions
	if reason == ReasonMaxPerClient {
		reply = replyMaxPerClient
	}
	nc.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
	io.WriteString(nc, reply) //nolint:errcheck // the client may be gone; it is closed either way
	nc.Close()
}

// clientAddr is the unmapped IP address of a connection's peer, or the
// zero Addr for a peer that has none (a unix socket).
func clientAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
