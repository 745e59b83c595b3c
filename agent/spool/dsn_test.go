package spool

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func goldenDSN() dsnData {
	return dsnData{
		Hostname:    "relay1.example.com",
		ID:          "189cab0a10fa62000931753c",
		Sender:      "alice@example.com",
		Received:    t0,
		LastAttempt: t0.Add(2 * time.Hour),
		Date:        t0.Add(2*time.Hour + time.Second),
		Failed: []recipient{
			{Address: "carol@example.org", State: StateFailed, Status: "5.1.1", ReplyCode: 550,
				LastError: "550 5.1.1 <carol@example.org>: Recipient address rejected: User unknown in virtual mailbox table"},
			{Address: "dave@example.org", State: StateFailed, Status: statusExpired,
				LastError: "expired after 120h0m0s in the queue; last error: dial tcp 192.0.2.1:587: connect: connection refused"},
			{Address: "erin@example.org", State: StateFailed, Status: "5.0.0", LastError: "message refused\r\nInjected: header"},
		},
		Headers: []byte("From: alice@example.com\r\nTo: carol@example.org\r\nSubject: quarterly report\r\n"),
	}
}

func TestDSNGolden(t *testing.T) {
	golden(t, "dsn.golden", buildDSN(goldenDSN()))
}

// TestDSNStructure reads the DSN back with the standard library's MIME
// parsers, as a mail client would.
func TestDSNStructure(t *testing.T) {
	raw := buildDSN(goldenDSN())
	for i, line := range bytes.Split(raw, []byte("\r\n")) {
		if bytes.ContainsAny(line, "\r\n") || len(line) > 998 {
			t.Fatalf("line %d is not a proper CRLF line: %q", i+1, line)
		}
	}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get("Message-ID"); got != "<189cab0a10fa62000931753c.dsn@relay1.example.com>" {
		t.Errorf("Message-ID = %q", got)
	}
	if d, err := m.Header.Date(); err != nil || !d.Equal(t0.Add(2*time.Hour+time.Second)) {
		t.Errorf("Date = %v, %v", d, err)
	}
	if m.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("no Auto-Submitted: auto-replied")
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type = %q (%v)", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	var parts [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		types = append(types, p.Header.Get("Content-Type"))
		parts = append(parts, b)
	}
	want := []string{"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"}
	if strings.Join(types, ",") != strings.Join(want, ",") {
		t.Fatalf("parts = %q, want %q", types, want)
	}

	// The delivery-status part: a per-message block, then one per recipient.
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(parts[1])))
	msgFields, err := r.ReadMIMEHeader()
	if err != nil || msgFields.Get("Reporting-MTA") != "dns; relay1.example.com" || msgFields.Get("Arrival-Date") == "" {
		t.Fatalf("per-message fields = %v, %v", msgFields, err)
	}
	wantRcpt := []struct{ rcpt, status, diag string }{
		{"carol@example.org", "5.1.1", "smtp; 550 5.1.1 <carol@example.org>: Recipient address rejected: User unknown in virtual mailbox table"},
		{"dave@example.org", "4.4.7", "X-Sealrelay; expired after 120h0m0s in the queue; last error: dial tcp 192.0.2.1:587: connect: connection refused"},
		{"erin@example.org", "5.0.0", "X-Sealrelay; message refused Injected: header"},
	}
	for _, w := range wantRcpt {
		f, err := r.ReadMIMEHeader()
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		// Unfold: textproto joins continuation lines with a space.
		got := struct{ rcpt, status, diag string }{
			strings.TrimPrefix(f.Get("Final-Recipient"), "rfc822; "), f.Get("Status"), f.Get("Diagnostic-Code"),
		}
		if got != w || f.Get("Action") != "failed" {
			t.Errorf("recipient block = %+v (action %q), want %+v", got, f.Get("Action"), w)
		}
	}
	if !bytes.Contains(parts[2], []byte("Subject: quarterly report")) {
		t.Errorf("headers part = %q", parts[2])
	}
	if bytes.Contains(raw, []byte("\r\nInjected: header")) {
		t.Errorf("an error text with CRLF injected a header line")
	}
}

// TestFailureStatus: a failed recipient's DSN status is the relay's
// enhanced code when it is a permanent one, else 5.0.0; its recorded reply
// code is the relay's failure reply, else 0. Nothing is read from the text.
func TestFailureStatus(t *testing.T) {
	for _, tc := range []struct {
		res        RcptResult
		want       string
		wantCode   int
		wantReason string
	}{
		{RcptResult{Code: 550, Enhanced: "5.1.1", Err: errors.New("550 5.1.1 user unknown")}, "5.1.1", 550, "the relay's code"},
		{RcptResult{Code: 554, Enhanced: "5.7.1"}, "5.7.1", 554, "the relay's code"},
		{RcptResult{Code: 552}, "5.0.0", 552, "no enhanced code"},
		{RcptResult{Code: 550, Enhanced: "4.2.0"}, "5.0.0", 550, "not a permanent enhanced code"},
		{RcptResult{Code: 550, Enhanced: "5.1.10"}, "5.1.10", 550, "a three-digit detail"},
		{RcptResult{Code: 550, Enhanced: "5.1234.1"}, "5.0.0", 550, "not an RFC 3463 code"},
		{RcptResult{Err: errors.New("relay said: 550 5.2.2 mailbox full.")}, "5.0.0", 0, "codes in the text only"},
		{RcptResult{Code: 250}, "5.0.0", 0, "not a failure reply"},
		{RcptResult{}, "5.0.0", 0, "nothing"},
	} {
		if got, code := failureStatus(tc.res), failureCode(tc.res); got != tc.want || code != tc.wantCode {
			t.Errorf("%s: failureStatus, failureCode(%+v) = %q, %d; want %q, %d", tc.wantReason, tc.res, got, code, tc.want, tc.wantCode)
		}
	}
}

func TestReadHeaders(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("X-Filler: "+strings.Repeat("y", 100)+"\r\n", 1000)
	for _, tc := range []struct{ name, msg, want string }{
		{"normal", "A: 1\r\nB: 2\r\n\r\nbody\r\n", "A: 1\r\nB: 2\r\n"},
		{"no body", "A: 1\r\nB: 2", "A: 1\r\nB: 2\r\n"},
		{"no headers", "\r\nbody\r\n", ""},
		{"huge header", long + "\r\nbody", long[:strings.LastIndex(long[:maxDSNHeaders], "\r\n")+2]},
		{"one endless line", strings.Repeat("x", maxDSNHeaders+10), ""},
	} {
		p := filepath.Join(dir, tc.name)
		os.WriteFile(p, []byte(tc.msg), 0o600)
		got, err := readHeaders(openPath(p))
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: readHeaders = %d bytes %.60q, %v; want %d bytes", tc.name, len(got), got, err, len(tc.want))
		}
	}
	if _, err := readHeaders(openPath(filepath.Join(dir, "missing"))); err == nil {
		t.Errorf("readHeaders of a missing file: no error")
	}
}

func openPath(p string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return os.Open(p) }
}
