package smtpd

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
)

// discardQueue reads each message and stores nothing.
type discardQueue struct{}

func (discardQueue) Put(_ context.Context, _ string, _ []string, body io.Reader) (string, error) {
	_, err := io.Copy(io.Discard, body)
	return "x", err
}

// BenchmarkSession sends one message per transaction (2 KB and 100 KB),
// all on one session, through the listener (dot-unstuffing, CRLF check
// and Received header included) into a queue that discards them. The
// client writes each transaction in one piece, already dot-stuffed, and
// reads the four replies, so that the figures are the server's.
func BenchmarkSession(b *testing.B) {
	for _, size := range []int{2 << 10, 100 << 10} {
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			_, addr, _ := startServer(b, Options{}, discardQueue{})
			msg := benchMessage(size)
			tx := []byte("MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n")
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			r := textproto.NewReader(bufio.NewReader(c))
			if _, _, err := r.ReadResponse(220); err != nil {
				b.Fatal(err)
			}
			if _, err := io.WriteString(c, "EHLO bench.example\r\n"); err != nil {
				b.Fatal(err)
			}
			if _, _, err := r.ReadResponse(250); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				// MAIL, RCPT and DATA pipelined (RFC 2920), then the
				// message once DATA's 354 is in.
				if _, err := c.Write(tx); err != nil {
					b.Fatal(err)
				}
				for _, code := range []int{250, 250, 354} {
					if _, _, err := r.ReadResponse(code); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, _, err := r.ReadResponse(250); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchMessage is a message of size bytes with its end-of-data line:
// 64-byte lines, some starting with a dot (stuffed).
func benchMessage(size int) []byte {
	var sb strings.Builder
	sb.WriteString("Subject: bench\r\n\r\n")
	for i := 0; sb.Len() < size-66; i++ {
		if i%50 == 49 {
			sb.WriteString("..")
			sb.WriteString(strings.Repeat("y", 60))
		} else {
			sb.WriteString(strings.Repeat("x", 62))
		}
		sb.WriteString("\r\n")
	}
	sb.WriteString(strings.Repeat("z", max(0, size-sb.Len()-2)) + "\r\n.\r\n")
	return []byte(sb.String())
}
