package relayhost

// Conns returns the connections open now.
func (s *Server) Conns() []*Conn {
	h := &s.rec.held
	h.mu.Lock()
	defer h.mu.Unlock()
	conns := make([]*Conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	return conns
}
