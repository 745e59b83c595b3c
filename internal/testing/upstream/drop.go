package upstream

// DropSessions closes every open connection, as a relay does when it
// restarts or revokes the sessions of an account whose password changed;
// the listener stays up. It returns how many it closed.
func (s *Server) DropSessions() int {
	h := &s.rec.held
	h.mu.Lock()
	conns := make([]*recConn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}
