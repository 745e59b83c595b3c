package deliver

import (
	"context"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// The stuffer gives DATA's form whatever the split of its input.
func TestStuffer(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{".\r\n", "..\r\n"},
		{"a\r\n.b\r\n..c\r\n", "a\r\n..b\r\n...c\r\n"},
		{"a.b\r\n x.\r\n", "a.b\r\n x.\r\n"}, // dots inside lines stay
		{"a\nb\n.\n", "a\r\nb\r\n..\r\n"},    // bare LF becomes CRLF
		{"\n\n", "\r\n\r\n"},                 // empty lines
		{"a\rb\r\n", "a\rb\r\n"},             // a bare CR passes
		{"\r\r\n.\r", "\r\r\n..\r"},          // CR before CRLF; a dot after it
		{"no newline at the end", "no newline at the end"},
	}
	for _, c := range cases {
		for cut := 0; cut <= len(c.in); cut++ {
			var s stuffer
			got := s.append(nil, []byte(c.in[:cut]))
			got = s.append(got, []byte(c.in[cut:]))
			if string(got) != c.want {
				t.Errorf("%q split at %d: got %q, want %q", c.in, cut, got, c.want)
			}
		}
	}
}

// Bodies of every shape reach the relay as they were spooled, through the
// dot-stuffing and the hand-over of the last line ending to go-smtp's
// writer, also where a stuffed dot or a CRLF falls on a buffer's edge.
func TestDataBodies(t *testing.T) {
	u := startUpstream(t, upstream.Config{})
	h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
	const chunk = len(dataBuf{}.in)
	hdr := "Subject: body\r\n\r\n"
	// pad returns hdr and lines of x's to n bytes, then tail.
	pad := func(n int, tail string) string {
		line := strings.Repeat("x", 78) + "\r\n"
		k := (n - len(hdr)) / len(line)
		return hdr + strings.Repeat(line, k) + strings.Repeat("x", n-len(hdr)-k*len(line)) + tail
	}
	cases := []struct{ name, body, want string }{
		{"empty", "", "\r\n"},
		{"one line", hdr + "hello\r\n", ""},
		{"no final line ending", hdr + "hello", hdr + "hello\r\n"},
		{"bare LF at the end", hdr + "hello\n", hdr + "hello\r\n"},
		{"bare LF lines", "Subject: lf\n\na\n.\nb\n", "Subject: lf\r\n\r\na\r\n.\r\nb\r\n"},
		{"dot lines", hdr + ".\r\n..\r\n.x\r\nend\r\n", ""},
		{"last line a dot", hdr + "a\r\n.\r\n", ""},
		{"dot at a buffer's edge", pad(chunk-3, "\r\n.dot\r\n"), ""},
		{"dot right after the edge", pad(chunk-2, "\r\n.dot\r\n"), ""},
		{"CRLF across the edge", pad(chunk-1, "\r\nnext\r\n"), ""},
		{"ends on the edge", pad(chunk-2, "\r\n"), ""},
		{"ends one past the edge", pad(chunk-1, "\r\n"), ""},
		{"100 KB", hdr + strings.Repeat(".line of text\r\n", 100<<10/15), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.want
			if want == "" {
				want = c.body
			}
			m := message("a@example.net")
			m.Size = int64(len(c.body))
			m.Open = func() (io.ReadCloser, error) { return io.NopCloser(&oneByteEnd{strings.NewReader(c.body)}), nil }
			before := u.Count()
			if res := h.d.Deliver(context.Background(), m); statuses(res) != "delivered" {
				t.Fatalf("result %s %v", statuses(res), res[0].Err)
			}
			msgs := u.Messages()
			if len(msgs) != before+1 {
				t.Fatalf("upstream holds %d messages, want %d", len(msgs), before+1)
			}
			if got := string(msgs[len(msgs)-1].Data); got != want {
				t.Errorf("relay got %d bytes, want %d\n got %q\nwant %q", len(got), len(want), clip(got), clip(want))
			}
		})
	}
	if st := h.d.Stats(); st.ConnectionsOpened != 1 {
		t.Errorf("connections opened = %d, want 1: each transaction must leave the session clean", st.ConnectionsOpened)
	}
}

// oneByteEnd reads like a file but hands out the last byte alone, with
// io.EOF, so the end of a body also arrives together with EOF.
type oneByteEnd struct{ r *strings.Reader }

func (o *oneByteEnd) Read(p []byte) (int, error) {
	if o.r.Len() > 1 && len(p) >= o.r.Len() {
		p = p[:o.r.Len()-1]
	}
	n, err := o.r.Read(p)
	if err == nil && o.r.Len() == 0 {
		err = io.EOF
	}
	return n, err
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:40] + "..." + s[len(s)-40:]
	}
	return s
}

// A relay that stops reading mid-body fails the delivery with a write
// timeout after CommandTimeout, instead of holding it until its context
// ends (nothing else would end it). The relay is a scripted fake: it
// answers up to DATA's 354 and then reads nothing, with a receive buffer
// so small that the body cannot all fit in the socket buffers.
func TestDataWriteTimeout(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stalled := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tp := textproto.NewConn(c)
		tp.PrintfLine("220 fake.test ESMTP")
		for {
			line, err := tp.ReadLine()
			if err != nil {
				return
			}
			switch verb, _, _ := strings.Cut(strings.ToUpper(line), " "); verb {
			case "EHLO":
				tp.PrintfLine("250 fake.test")
			case "DATA":
				tp.PrintfLine("354 go ahead")
				close(stalled)
				<-release // read nothing more
				return
			default:
				tp.PrintfLine("250 ok")
			}
		}
	}()
	r := Relay{Name: "fake", Address: ln.Addr().String(), TLS: TLSNone, Auth: AuthDisabled,
		CommandTimeout: 500 * time.Millisecond, ConnectTimeout: 5 * time.Second}
	h := newDeliverer(t, nil, r)
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 78)+"\r\n", 32<<20/80)
	m := message("a@example.net")
	m.Open = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(big)), nil }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := h.d.Deliver(ctx, m)
	select {
	case <-stalled:
	default:
		t.Fatalf("the relay never got to DATA: %s %v", statuses(res), res[0].Err)
	}
	if statuses(res) != "temporary" || !strings.Contains(res[0].Err.Error(), "DATA: ") || !strings.Contains(res[0].Err.Error(), "i/o timeout") {
		t.Fatalf("result = %s %v, want temporary with a DATA write timeout", statuses(res), res[0].Err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the delivery ended only with its context: %v", res[0].Err)
	}
}
