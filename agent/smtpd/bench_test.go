package smtpd

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// discardQueue reads each message and stores nothing.
type discardQueue struct{}

func (discardQueue) Put(_ context.Context, _ string, _ []string, body io.Reader) (string, error) {
	_, err := io.Copy(io.Discard, body)
	return "x", err
}

// BenchmarkSession sends one 2 KB message per transaction, all on one
// session, through the listener (CRLF check and Received header included)
// into a queue that discards them.
func BenchmarkSession(b *testing.B) {
	_, addr, _ := startServer(b, Options{}, discardQueue{})
	line := strings.Repeat("x", 62) + "\r\n"
	msg := []byte("Subject: bench\r\n\r\n" + strings.Repeat(line, (2048-18)/len(line)))
	msg = append(msg, strings.Repeat("y", 2048-len(msg)-2)+"\r\n"...)

	c, err := smtp.Dial(addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("bench.example"); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := c.Mail("app@example.com", nil); err != nil {
			b.Fatal(err)
		}
		if err := c.Rcpt("a@example.org", nil); err != nil {
			b.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Write(msg); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
