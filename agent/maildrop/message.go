package maildrop

import (
	"bytes"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"
)

// checkMessage checks that msg has CRLF line endings only, as the
// listener demands of what it takes (a bare CR or LF is how SMTP
// smuggling hides commands), and ends with one.
func checkMessage(msg []byte) error {
	if len(msg) == 0 {
		return errors.New("empty message")
	}
	for i, c := range msg {
		switch {
		case c == '\n' && (i == 0 || msg[i-1] != '\r'):
			return fmt.Errorf("bare LF at byte %d of the message", i)
		case c == '\r' && (i+1 == len(msg) || msg[i+1] != '\n'):
			return fmt.Errorf("bare CR at byte %d of the message", i)
		}
	}
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		return errors.New("the message does not end with a line end")
	}
	return nil
}

// headerFields returns the lower-cased names of the fields in msg's
// header section, and whether it has one: a message whose first line is
// not a header field is all body.
func headerFields(msg []byte) (map[string]bool, bool) {
	names := map[string]bool{}
	rest := msg
	first := true
	for len(rest) > 0 {
		line := rest
		if i := bytes.Index(rest, []byte("\r\n")); i >= 0 {
			line, rest = rest[:i], rest[i+2:]
		} else {
			rest = nil
		}
		if len(line) == 0 {
			break // the end of the header section
		}
		if line[0] == ' ' || line[0] == '\t' {
			if first {
				return names, false
			}
			continue // a folded line
		}
		name, ok := fieldName(line)
		if !ok {
			if first {
				return names, false
			}
			break // not a header: the body starts here, without a blank line
		}
		names[strings.ToLower(name)] = true
		first = false
	}
	return names, !first
}

// fieldName returns the field name of a header line "Name: value".
func fieldName(line []byte) (string, bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", false
	}
	for _, c := range line[:i] {
		if c < 33 || c > 126 {
			return "", false
		}
	}
	return string(line[:i]), true
}

// stamp is what the agent adds on top of a message from the maildrop.
type stamp struct {
	hostname string
	uid      int
	login    string
	sender   string // the envelope sender; "" the null sender
	fullName string
	id       string // for a Message-ID it lacks
	now      time.Time
}

// headers returns the header lines to put before msg: a Received line,
// and, as Postfix's cleanup does for locally submitted mail, From, Date
// and Message-ID where msg lacks them. A message without a header section
// gets a blank line after them.
func (s stamp) headers(msg []byte) []byte {
	var b bytes.Buffer
	date := s.now.Format(time.RFC1123Z)
	fmt.Fprintf(&b, "Received: by %s (sealrelay sendmail, from userid %d %s);\r\n\t%s\r\n", s.hostname, s.uid, s.login, date)
	have, section := headerFields(msg)
	if !have["from"] {
		from := s.sender
		if from == "" {
			from = "MAILER-DAEMON@" + s.hostname
		}
		fmt.Fprintf(&b, "From: %s\r\n", (&mail.Address{Name: s.fullName, Address: from}).String())
	}
	if !have["date"] {
		fmt.Fprintf(&b, "Date: %s\r\n", date)
	}
	if !have["message-id"] {
		fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", s.id, s.hostname)
	}
	if !section {
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
