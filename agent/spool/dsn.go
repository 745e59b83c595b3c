package spool

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"
)

// statusExpired is the DSN status of a recipient that expired (RFC 3463:
// delivery time expired).
const statusExpired = "4.4.7"

// maxDSNHeaders caps the original header section attached to a DSN.
const maxDSNHeaders = 64 << 10

// maxDSNText caps one error text in a DSN, keeping its lines far below
// the 998 octets RFC 5322 allows.
const maxDSNText = 900

// failureStatus is the DSN status of a recipient that failed permanently
// with res: the relay's enhanced status code if it is a permanent one
// (5.x.x), else 5.0.0.
func failureStatus(res RcptResult) string {
	if strings.HasPrefix(res.Enhanced, "5.") && statusCode.MatchString(res.Enhanced) {
		return res.Enhanced
	}
	return "5.0.0"
}

// failureCode is the reply code to record for a recipient that failed
// with res: the relay's, if it is a failure reply, else 0.
func failureCode(res RcptResult) int {
	if failureReply(res.Code) {
		return res.Code
	}
	return 0
}

// dsnData is what a DSN reports.
type dsnData struct {
	Hostname    string
	ID          string // the failed item
	Sender      string // its sender, who gets the DSN
	Received    time.Time
	LastAttempt time.Time
	Date        time.Time
	Failed      []recipient
	Headers     []byte // the original header section, CRLF line endings
}

// buildDSN writes an RFC 3464 delivery status notification: a
// multipart/report with a human-readable part, a message/delivery-status
// part with one block per failed recipient, and the original headers as
// text/rfc822-headers. Every line ends in CRLF; only the attached headers
// may hold non-ASCII bytes.
func buildDSN(d dsnData) []byte {
	var b bytes.Buffer
	line := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteString("\r\n")
	}
	host := dsnText(d.Hostname)
	boundary := "=_sealrelay_dsn_" + d.ID
	date := d.Date.Format(time.RFC1123Z)

	line("From: Mail Delivery System <MAILER-DAEMON@%s>", host)
	line("To: <%s>", dsnText(d.Sender))
	line("Subject: Undelivered Mail Returned to Sender")
	line("Date: %s", date)
	line("Message-ID: <%s.dsn@%s>", d.ID, host)
	line("Auto-Submitted: auto-replied")
	line("MIME-Version: 1.0")
	line("Content-Type: multipart/report; report-type=delivery-status;")
	line("\tboundary=\"%s\"", boundary)
	line("")
	line("This is a MIME-encapsulated message.")
	line("")

	line("--%s", boundary)
	line("Content-Type: text/plain; charset=us-ascii")
	line("Content-Description: Notification")
	line("")
	line("This is the mail system at host %s.", host)
	line("")
	line("Your message could not be delivered to one or more recipients.")
	line("The error for each is below; the message's headers are attached.")
	line("")
	for _, r := range d.Failed {
		_, addr := dsnAddress(r.Address)
		b.WriteString(fold(fmt.Sprintf("<%s>:", addr), dsnText(r.LastError)))
	}
	line("")

	line("--%s", boundary)
	line("Content-Type: message/delivery-status")
	line("Content-Description: Delivery report")
	line("")
	line("Reporting-MTA: dns; %s", host)
	line("X-Sealrelay-Queue-ID: %s", d.ID)
	line("Arrival-Date: %s", d.Received.Format(time.RFC1123Z))
	for _, r := range d.Failed {
		line("")
		typ, addr := dsnAddress(r.Address)
		line("Final-Recipient: %s; %s", typ, addr)
		line("Action: failed")
		line("Status: %s", orText(r.Status, "5.0.0"))
		if r.LastError != "" {
			typ := "X-Sealrelay"
			if r.Status != statusExpired && r.ReplyCode != 0 {
				typ = "smtp"
			}
			b.WriteString(fold("Diagnostic-Code: "+typ+";", dsnText(r.LastError)))
		}
		if !d.LastAttempt.IsZero() {
			line("Last-Attempt-Date: %s", d.LastAttempt.Format(time.RFC1123Z))
		}
	}
	line("")

	line("--%s", boundary)
	line("Content-Type: text/rfc822-headers")
	line("Content-Description: Undelivered Message Headers")
	if !isASCII(d.Headers) {
		line("Content-Transfer-Encoding: 8bit")
	}
	line("")
	b.Write(d.Headers)
	line("")
	line("--%s--", boundary)
	return b.Bytes()
}

// dsnAddress writes an address for a DSN: type rfc822 and the address
// when it is ASCII; else type utf-8 and the address as RFC 6533's
// utf-8-addr-xtext, each non-ASCII character (and '+', '=', '\') as
// \x{HEX}, so that the report stays ASCII and the address is not lost.
func dsnAddress(a string) (typ, text string) {
	a = oneLine(a, maxDSNText)
	if isASCII([]byte(a)) {
		return "rfc822", dsnText(a)
	}
	var b strings.Builder
	for _, r := range a {
		if r > 0x20 && r < 0x7f && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
			continue
		}
		fmt.Fprintf(&b, "\\x{%X}", r)
	}
	return "utf-8", b.String()
}

// dsnText makes s safe for a DSN line: one line, ASCII, bounded.
func dsnText(s string) string {
	s = oneLine(s, maxDSNText)
	return strings.Map(func(r rune) rune {
		if r > 0x7e {
			return '?'
		}
		return r
	}, s)
}

// fold writes prefix and text as a header-style field folded at spaces,
// with continuation lines indented by one space.
func fold(prefix, text string) string {
	const width = 78
	var b strings.Builder
	b.WriteString(prefix)
	n := len(prefix)
	for _, w := range strings.Fields(text) {
		if n+1+len(w) > width && n > 1 {
			b.WriteString("\r\n")
			n = 0
		}
		b.WriteString(" ")
		b.WriteString(w)
		n += 1 + len(w)
	}
	b.WriteString("\r\n")
	return b.String()
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c > 0x7e {
			return false
		}
	}
	return true
}

// readHeaders returns the header section of the message open opens, up to
// maxDSNHeaders bytes (cut at a line end), ending in CRLF.
func readHeaders(open func() (io.ReadCloser, error)) ([]byte, error) {
	f, err := open()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, maxDSNHeaders)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	b := buf[:n]
	switch {
	case bytes.HasPrefix(b, []byte("\r\n")):
		return nil, nil // no header section
	case bytes.Contains(b, []byte("\r\n\r\n")):
		return b[:bytes.Index(b, []byte("\r\n\r\n"))+2], nil
	case n < maxDSNHeaders: // a message that is all header
		if !bytes.HasSuffix(b, []byte("\r\n")) && len(b) > 0 {
			b = append(b, '\r', '\n')
		}
		return b, nil
	}
	if i := bytes.LastIndex(b, []byte("\r\n")); i >= 0 {
		return b[:i+2], nil
	}
	return nil, nil // one endless line: nothing worth attaching
}
