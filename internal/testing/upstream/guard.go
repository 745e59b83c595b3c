package upstream

import (
	"bytes"
	"fmt"
	"net"
	"strconv"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/relayhost"
)

// guardConn sits between a plaintext connection and go-smtp and answers
// the commands go-smtp gives no hook for: EHLO and HELO (Behavior.EHLOReply,
// Behavior.RejectRepeatedHelo) and STARTTLS (Behavior.STARTTLSReply). It
// also counts EHLO and HELO commands (Session.Helos).
//
// It reads the client's stream one command line at a time and hands go-smtp
// one line per Read, so every reply go-smtp owes is written before the
// guard reads (and perhaps answers) the next line. It follows DATA (up to
// the final dot) and BDAT (by its size) so message content is never taken
// for a command, and turns transparent once STARTTLS is accepted: what
// follows is TLS, which it cannot read.
type guardConn struct {
	net.Conn
	rc *relayhost.Conn
	s  *Server

	in, out []byte
	err     error // the read error to return once in and out are empty

	state   guardState
	pending string // the command whose reply decides the next state
	bdat    int64  // BDAT bytes still to pass through
	helos   int
}

type guardState int

const (
	guardCommand     guardState = iota // reading command lines
	guardData                          // inside DATA, until "."
	guardBDAT                          // inside a BDAT chunk
	guardTransparent                   // after STARTTLS: TLS bytes
)

// maxGuardLine is how much the guard holds waiting for a line's end before
// it passes the bytes on (go-smtp then refuses the over-long line itself).
const maxGuardLine = 64 << 10

// guards reports whether a new connection needs a guardConn: always
// without TLS (for the EHLO count), and with STARTTLS when b scripts the
// replies to EHLO or STARTTLS. With implicit TLS the guard could not read
// the stream.
func (s *Server) guards(b *Behavior) bool {
	switch s.tlsMode {
	case NoTLS:
		return true
	case StartTLS:
		return b.EHLOReply != nil || b.STARTTLSReply != nil
	}
	return false
}

func (g *guardConn) Read(p []byte) (int, error) {
	for {
		if len(g.out) > 0 {
			n := copy(p, g.out)
			g.out = g.out[n:]
			return n, nil
		}
		if g.state == guardTransparent && len(g.in) == 0 {
			return g.Conn.Read(p)
		}
		if g.step() {
			continue
		}
		if g.err != nil {
			if len(g.in) > 0 {
				g.out, g.in = g.in, nil
				continue
			}
			return 0, g.err
		}
		buf := make([]byte, 4096)
		n, err := g.Conn.Read(buf)
		g.in = append(g.in, buf[:n]...)
		g.err = err
	}
}

// step moves the next unit of input (a line, or a part of a BDAT chunk) to
// out or answers it; it reports false when it needs more input.
func (g *guardConn) step() bool {
	if len(g.in) == 0 {
		return false
	}
	switch g.state {
	case guardTransparent:
		g.out, g.in = g.in, nil
		return true
	case guardBDAT:
		n := min(g.bdat, int64(len(g.in)))
		g.pass(int(n))
		if g.bdat -= n; g.bdat == 0 {
			g.state = guardCommand
		}
		return true
	}
	i := bytes.IndexByte(g.in, '\n')
	if i < 0 {
		if len(g.in) < maxGuardLine {
			return false
		}
		g.pass(len(g.in))
		return true
	}
	line := g.in[:i+1]
	if g.state == guardData {
		if string(bytes.TrimRight(line, "\r\n")) == "." {
			g.state = guardCommand
		}
		g.pass(len(line))
		return true
	}
	g.command(line)
	return true
}

// pass hands the first n bytes of in to go-smtp.
func (g *guardConn) pass(n int) {
	g.out = append(g.out[:0], g.in[:n]...)
	g.in = g.in[n:]
}

// command handles one command line: answered here, or passed on.
func (g *guardConn) command(line []byte) {
	fields := bytes.Fields(line)
	verb := ""
	if len(fields) > 0 {
		verb = string(bytes.ToUpper(fields[0]))
	}
	b := g.s.Behavior()
	var reply *smtp.SMTPError
	switch verb {
	case "EHLO", "HELO":
		g.helos++
		g.rc.Record(func(s *Session) { s.Helos++ })
		switch {
		case b.EHLOReply != nil:
			reply = b.EHLOReply
		case g.helos > 1 && b.RejectRepeatedHelo:
			reply = ErrAlreadyIdentified
		}
	case "STARTTLS":
		reply = b.STARTTLSReply
		g.pending = verb
	case "DATA":
		g.pending = verb
	case "BDAT":
		if len(fields) > 1 {
			if n, err := strconv.ParseInt(string(fields[1]), 10, 64); err == nil && n > 0 {
				g.state, g.bdat = guardBDAT, n
			}
		}
	}
	if reply == nil {
		g.pass(len(line))
		return
	}
	g.pending = ""
	g.in = g.in[len(line):]
	e := reply.EnhancedCode
	fmt.Fprintf(g.Conn, "%d %d.%d.%d %s\r\n", reply.Code, e[0], e[1], e[2], reply.Message)
}

// Write watches go-smtp's reply to DATA and STARTTLS: 354 starts the
// message content, 220 the TLS handshake.
func (g *guardConn) Write(p []byte) (int, error) {
	if g.pending != "" {
		switch {
		case g.pending == "DATA" && bytes.HasPrefix(p, []byte("354")):
			g.state = guardData
		case g.pending == "STARTTLS" && bytes.HasPrefix(p, []byte("220")):
			g.state = guardTransparent
		}
		g.pending = ""
	}
	return g.Conn.Write(p)
}

// NetConn returns the connection under the guard, for the relay host to
// find its record.
func (g *guardConn) NetConn() net.Conn { return g.rc }
