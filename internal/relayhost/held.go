package relayhost

import "sync"

// heldSet tracks the open connections to tell how many of them the client
// still holds. A connection the client has closed stays open on this side
// until the relay host next reads from it, which a stalled session does
// not do while the stall lasts; counting it would blame the client for a
// connection it had already given up.
type heldSet struct {
	mu    sync.Mutex
	conns map[*Conn]struct{}
	max   int
}

// add records a new connection and updates the maximum with the number of
// connections the client holds now, the new one included. The count only
// grows at a new connection, so its maximum is always seen here.
func (h *heldSet) add(c *Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns == nil {
		h.conns = map[*Conn]struct{}{}
	}
	h.conns[c] = struct{}{}
	n := 0
	for o := range h.conns {
		if o == c || !peerClosed(o.Conn) {
			n++
		}
	}
	h.max = max(h.max, n)
}

func (h *heldSet) remove(c *Conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
}

// held returns the number of connections the client holds now.
func (h *heldSet) held() int {
	n := 0
	for o := range h.conns {
		if !peerClosed(o.Conn) {
			n++
		}
	}
	return n
}

// reset restarts the maximum from the connections held now.
func (h *heldSet) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.max = h.held()
}

// MaxHeld returns the largest number of connections the client side held
// open at once since the last Reset: like MaxConcurrent, but a connection
// the client has already closed (its FIN or RST has arrived) no longer
// counts, even while this side has not noticed yet because a stall keeps
// it from reading. That is the number a client's connection limit bounds.
// The kernel's TCP state is read on Linux; elsewhere a connection counts
// until this side closes it, as in MaxConcurrent.
func (s *Server) MaxHeld() int {
	h := &s.rec.held
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max
}

// Held returns the number of connections the client side holds open now,
// counted as MaxHeld counts them.
func (s *Server) Held() int {
	h := &s.rec.held
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held()
}
