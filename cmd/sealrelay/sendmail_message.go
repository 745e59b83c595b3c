package main

import (
	"bytes"
	"io"
	"net/mail"
	"strings"
)

// readMessage reads standard input, up to max bytes.
func readMessage(r io.Reader, max int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, exitf(exIOErr, "reading the message from standard input: %w", err)
	}
	if int64(len(data)) > max {
		return nil, exitf(exDataErr, "the message is larger than %d bytes (listen.max_message_bytes)", max)
	}
	return data, nil
}

// canonical turns the message's line ends into CRLF (a line may end in LF
// or CRLF), ends it with one, and, with dots, stops at a line holding a
// single dot. A CR elsewhere is refused: the listener refuses it too.
func canonical(data []byte, dots bool) ([]byte, error) {
	out := make([]byte, 0, len(data)+len(data)/32+2)
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if bytes.IndexByte(line, '\r') >= 0 {
			return nil, exitf(exDataErr, "line %d of the message holds a bare CR (a CR not before a line end)", n)
		}
		if dots && string(line) == "." {
			break
		}
		out = append(append(out, line...), '\r', '\n')
	}
	if len(out) == 0 {
		return nil, exitf(exDataErr, "the message is empty")
	}
	return out, nil
}

// extractRecipients is -t: the addresses in the To, Cc and Bcc headers,
// and the message without its Bcc headers. msg has CRLF line ends.
func extractRecipients(msg []byte) ([]byte, []string, error) {
	var out []byte
	var rcpts []string
	var name string  // the field being read
	var value []byte // its value, unfolded
	bcc := false     // it is Bcc: leave it out
	done := func() error {
		switch strings.ToLower(name) {
		case "to", "cc", "bcc":
		default:
			return nil
		}
		addrs, err := headerAddresses(string(value))
		if err != nil {
			return exitf(exDataErr, "%s header: %v", name, err)
		}
		rcpts = append(rcpts, addrs...)
		return nil
	}
	for rest := msg; len(rest) > 0; {
		i := bytes.Index(rest, []byte("\r\n"))
		line, text := rest[:i+2], rest[:i]
		rest = rest[i+2:]
		if name != "" && len(text) > 0 && (text[0] == ' ' || text[0] == '\t') {
			value = append(value, text...) // a folded line
			if !bcc {
				out = append(out, line...)
			}
			continue
		}
		if err := done(); err != nil {
			return nil, nil, err
		}
		n, ok := cutHeaderName(text)
		if !ok {
			// A blank line, or the body without one: the header section
			// has ended.
			return append(append(out, line...), rest...), rcpts, nil
		}
		name, value, bcc = n, append([]byte(nil), text[len(n)+1:]...), strings.EqualFold(n, "bcc")
		if !bcc {
			out = append(out, line...)
		}
	}
	if err := done(); err != nil {
		return nil, nil, err
	}
	return out, rcpts, nil
}

// cutHeaderName returns the name of a header line.
func cutHeaderName(line []byte) (string, bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 || bytes.ContainsAny(line[:i], " \t") {
		return "", false
	}
	return string(line[:i]), true
}

// headerAddresses reads an address list: RFC 5322 addresses and groups,
// and, as sendmail programs take them, bare local names ("root").
func headerAddresses(v string) ([]string, error) {
	var out []string
	for _, part := range splitAddressList(v) {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		list, err := mail.ParseAddressList(part)
		if err != nil {
			if strings.ContainsAny(part, "@<>\"():; \t") {
				return nil, err
			}
			out = append(out, part) // a local name; the agent adds the domain
			continue
		}
		for _, a := range list {
			out = append(out, a.Address)
		}
	}
	return out, nil
}

// splitAddressList splits an address list at the commas between its
// members: not inside quotes, angle brackets, comments or a group.
func splitAddressList(v string) []string {
	var out []string
	depth, start := 0, 0
	quoted, escaped := false, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case escaped:
			escaped = false
		case c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<' || c == '(' || c == ':':
			depth++
		case (c == '>' || c == ')' || c == ';') && depth > 0:
			depth--
		case c == ',' && depth == 0:
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}
