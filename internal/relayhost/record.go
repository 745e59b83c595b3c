package relayhost

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Session is what the relay host saw on one TCP connection.
type Session struct {
	ID     int
	Remote string
	Start  time.Time
	End    time.Time // zero while the connection is open
	// Greeting is the code of a greeting the Faults scripted, 0 for the
	// normal 220.
	Greeting int
	// Helo is the last EHLO/HELO name.
	Helo string
	// Helos counts EHLO and HELO commands, answered or refused. Only
	// Faults that read the stream in the clear count them; elsewhere it
	// stays 0.
	Helos int
	// TLS is true once the connection runs TLS (STARTTLS or implicit).
	TLS bool
	// ClientCert is the subject common name of the client certificate the
	// TLS handshake verified (Config.ClientCAs), "" for none.
	ClientCert string
	// Auths lists every AUTH command, in order.
	Auths []AuthAttempt
	// Mails lists every MAIL command, accepted or not, in order.
	Mails []MailCommand
	// Resets counts go-smtp session resets outside DATA: RSET commands and
	// repeated EHLOs (go-smtp reports both the same way).
	Resets int
	// Messages counts messages accepted on this connection.
	Messages int
	// Stalled and Dropped report faults injected on this connection.
	Stalled, Dropped bool
}

// AuthAttempt is one AUTH command. It never holds the password.
type AuthAttempt struct {
	Mechanism string
	Username  string // as the client sent it; "" if it sent none
	TLS       bool   // the connection ran TLS when AUTH was sent
	OK        bool
	Code      int // reply code: 235, 535, 454, 538...
}

// MailCommand is one MAIL command.
type MailCommand struct {
	From          string
	Authenticated bool   // the session had authenticated when MAIL came
	Username      string // the authenticated user, if any
	TLS           bool
	Code          int // 250, or the code of the scripted refusal
}

// MailIssued reports whether the client sent MAIL on this connection.
func (s Session) MailIssued() bool { return len(s.Mails) > 0 }

// UnauthenticatedMail reports whether any MAIL came before a successful AUTH.
func (s Session) UnauthenticatedMail() bool {
	for _, m := range s.Mails {
		if !m.Authenticated {
			return true
		}
	}
	return false
}

// Authenticated reports whether an AUTH succeeded on this connection.
func (s Session) Authenticated() bool {
	for _, a := range s.Auths {
		if a.OK {
			return true
		}
	}
	return false
}

func (s Session) clone() Session {
	s.Auths = slices.Clone(s.Auths)
	s.Mails = slices.Clone(s.Mails)
	return s
}

// Message is one accepted message.
type Message struct {
	Session   int // Session.ID it came on
	From      string
	To        []string
	Data      []byte // nil with DiscardBodies
	Size      int64
	Username  string // the authenticated user, "" if none
	TLS       bool
	MessageID string // the Message-ID header value, "" if none
	Time      time.Time
}

func (m Message) clone() Message {
	m.To = slices.Clone(m.To)
	m.Data = slices.Clone(m.Data)
	return m
}

// recorder keeps the sessions, messages and counters.
type recorder struct {
	discardBodies, countOnly bool

	count    atomic.Int64
	open     atomic.Int64
	maxOpen  atomic.Int64
	nextID   atomic.Int64
	mu       sync.Mutex
	sessions map[int]*Session
	order    []int
	messages []Message
	waiters  []waiter
	attempts attemptLog // attempts.go
	held     heldSet    // held.go
}

type waiter struct {
	n  int64
	ch chan struct{}
}

func (r *recorder) init(discardBodies, countOnly bool) {
	r.discardBodies, r.countOnly = discardBodies, countOnly
	r.sessions = map[int]*Session{}
}

// Conn is an accepted connection, as the relay host and its Faults see
// it: it records its life in the connection's Session.
type Conn struct {
	net.Conn
	id   int
	rec  *recorder
	once sync.Once
}

func (r *recorder) track(c net.Conn) *Conn {
	id := int(r.nextID.Add(1))
	n := r.open.Add(1)
	for {
		m := r.maxOpen.Load()
		if n <= m || r.maxOpen.CompareAndSwap(m, n) {
			break
		}
	}
	r.mu.Lock()
	r.sessions[id] = &Session{ID: id, Remote: c.RemoteAddr().String(), Start: time.Now()}
	r.order = append(r.order, id)
	r.mu.Unlock()
	rc := &Conn{Conn: c, id: id, rec: r}
	r.held.add(rc)
	return rc
}

// Close closes the connection and records its end.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.rec.open.Add(-1)
		c.rec.held.remove(c)
		c.rec.update(c.id, func(s *Session) { s.End = time.Now() })
	})
	return c.Conn.Close()
}

// ID is the connection's Session.ID.
func (c *Conn) ID() int { return c.id }

// Record changes the connection's Session record with f (not at all if a
// Reset forgot it, or c is nil).
func (c *Conn) Record(f func(*Session)) {
	if c != nil {
		c.rec.update(c.id, f)
	}
}

// recConnOf returns the Conn under c, through TLS and whatever else
// wraps it and says what it wraps (a NetConn method); nil if there is
// none.
func recConnOf(c net.Conn) *Conn {
	for {
		switch v := c.(type) {
		case *Conn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

// update changes the record of session id, if it was not Reset away.
func (r *recorder) update(id int, f func(*Session)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sessions[id]; ok {
		f(s)
	}
}

func (r *recorder) addMessage(m Message) {
	n := r.count.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sessions[m.Session]; ok {
		s.Messages++
	}
	if !r.countOnly {
		if r.discardBodies {
			m.Data = nil
		}
		r.messages = append(r.messages, m)
	}
	kept := r.waiters[:0]
	for _, w := range r.waiters {
		if n >= w.n {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	r.waiters = kept
}

func (r *recorder) wait(ctx context.Context, n int64, done <-chan struct{}) error {
	r.mu.Lock()
	if r.count.Load() >= n {
		r.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	r.waiters = append(r.waiters, waiter{n: n, ch: ch})
	r.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-done:
		return fmt.Errorf("upstream closed with %d of %d messages", r.count.Load(), n)
	case <-ctx.Done():
		return fmt.Errorf("upstream has %d of %d messages: %w", r.count.Load(), n, ctx.Err())
	}
}

// Count returns the number of messages accepted since the last Reset.
func (s *Server) Count() int { return int(s.rec.count.Load()) }

// MaxConcurrent returns the largest number of connections open at once
// since the last Reset.
func (s *Server) MaxConcurrent() int { return int(s.rec.maxOpen.Load()) }

// Open returns the number of connections open now.
func (s *Server) Open() int { return int(s.rec.open.Load()) }

// Messages returns copies of the messages accepted since the last Reset.
func (s *Server) Messages() []Message {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	out := make([]Message, len(s.rec.messages))
	for i, m := range s.rec.messages {
		out[i] = m.clone()
	}
	return out
}

// Sessions returns copies of the connection records since the last Reset,
// in the order the connections came.
func (s *Server) Sessions() []Session {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	out := make([]Session, 0, len(s.rec.order))
	for _, id := range s.rec.order {
		out = append(out, s.rec.sessions[id].clone())
	}
	return out
}

// Reset forgets the recorded sessions and messages and zeroes the counters;
// MaxConcurrent restarts from the connections open now. Open connections
// are no longer recorded.
func (s *Server) Reset() {
	r := &s.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sessions = map[int]*Session{}
	r.order = nil
	r.messages = nil
	r.count.Store(0)
	r.maxOpen.Store(r.open.Load())
	r.attempts.reset()
	r.held.reset()
}
