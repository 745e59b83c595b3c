package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"time"
)

// serveDenied answers a client outside AllowedNetworks. It never reaches
// go-smtp or the queue: no STARTTLS, no AUTH, no transaction.
//
//	HELO/EHLO (with an argument), NOOP, RSET  250
//	QUIT                                      221, close
//	MAIL RCPT DATA BDAT VRFY EXPN ETRN AUTH
//	STARTTLS HELP TURN                        550 5.7.1 relay access denied
//	anything else                             500 5.5.2
//
// Every refusal counts towards MaxErrors (and nothing resets the count:
// this client can do nothing useful); the timeouts (the wait for a
// command, the reads of a BDAT chunk) and the line-length limit are those
// of go-smtp sessions.
func (s *Server) serveDenied(c *conn) {
	defer s.denied.Done()
	defer c.Close()
	s.reject(ReasonNetwork)
	s.log.Warn("relay access denied: client not in allowed networks", "session", c.id, "client", c.RemoteAddr().String())

	r := bufio.NewReaderSize(c, maxLineLength)
	write := func(line string) bool {
		c.SetWriteDeadline(time.Now().Add(s.opt.WriteTimeout))
		_, err := io.WriteString(c, line+"\r\n")
		return err == nil
	}
	if !write("220 " + s.opt.Hostname + " ESMTP") {
		return
	}
	for {
		c.SetReadDeadline(time.Now().Add(s.opt.commandTimeout()))
		line, err := r.ReadSlice('\n')
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, bufio.ErrBufferFull):
				write("500 5.5.2 line too long, closing connection")
			case errors.As(err, &ne) && ne.Timeout():
				write("421 4.4.2 timeout, closing connection")
			}
			return
		}
		verb, arg, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(" "))
		reply, counts := "550 5.7.1 relay access denied", true
		switch string(bytes.ToUpper(verb)) {
		case "HELO", "EHLO":
			if len(bytes.TrimSpace(arg)) > 0 {
				reply, counts = "250 "+s.opt.Hostname, false
			} else {
				reply = "501 5.5.4 HELO/EHLO needs a domain"
			}
		case "NOOP", "RSET":
			reply, counts = "250 2.0.0 OK", false
		case "QUIT":
			write("221 2.0.0 bye")
			return
		case "MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "ETRN", "AUTH", "STARTTLS", "HELP", "TURN":
		default:
			reply = "500 5.5.2 command not recognized"
		}
		if counts && c.noteError() {
			s.reject(ReasonTooManyErrors)
			write("421 4.7.0 too many errors, closing connection")
			return
		}
		if !write(reply) {
			return
		}
		if bytes.EqualFold(verb, []byte("BDAT")) {
			// The chunk follows the command whatever the reply; skip it,
			// or end the session if its size is unusable.
			size, _, _ := bytes.Cut(bytes.TrimSpace(arg), []byte(" "))
			n, err := strconv.ParseInt(string(size), 10, 64)
			if err != nil || n < 0 || n > s.opt.MaxMessageBytes {
				return
			}
			c.SetReadDeadline(time.Now().Add(s.opt.ReadTimeout))
			if _, err := io.CopyN(io.Discard, r, n); err != nil {
				return
			}
		}
	}
}
