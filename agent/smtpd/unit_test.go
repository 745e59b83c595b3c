package smtpd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestStrictCRLFReader(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"", true},
		{"a\r\nb\r\n", true},
		{"\r\n\r\n", true},
		{"no line ending at all", true},
		{"a\nb", false},
		{"a\rb", false},
		{"a\r\r\n", false},
		{"\n", false},
		{"\r", false},
		{"a\r\n\n", false},
		{"a\n\r", false},
		{"trailing CR\r", false},
	} {
		// Whole, and one byte per Read (a CRLF split across reads).
		for _, split := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tc.in)
			if split {
				r = iotest.OneByteReader(r)
			}
			sr := &strictCRLFReader{r: r}
			got, err := io.ReadAll(sr)
			if tc.ok {
				if err != nil || string(got) != tc.in {
					t.Errorf("%q (split %v): got %q, %v; want it unchanged", tc.in, split, got, err)
				}
				continue
			}
			if !errors.Is(err, errBareLineEnding) {
				t.Errorf("%q (split %v): err = %v, want errBareLineEnding", tc.in, split, err)
			}
			if !errors.Is(sr.err, errBareLineEnding) {
				t.Errorf("%q: the error is not kept for the session", tc.in)
			}
			if !(&strictCRLFReader{}).check(got) {
				t.Errorf("%q (split %v): passed on a bare line ending: %q", tc.in, split, got)
			}
		}
	}
}

// refCheck is strictCRLFReader.check as it scanned with bytes.IndexAny:
// the reference the counting version must agree with.
func refCheck(lastCR *bool, b []byte) bool {
	for len(b) > 0 {
		if *lastCR {
			if b[0] != '\n' {
				return false
			}
			*lastCR = false
			b = b[1:]
			continue
		}
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			return true
		}
		if b[i] == '\n' {
			return false
		}
		*lastCR = true
		b = b[i+1:]
	}
	return true
}

// The check agrees with the reference on random bytes cut into random
// reads: the verdict of every read, and the carried CR while it passes.
func TestStrictCRLFCheckMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab\r\n\r\n")
	for range 50000 {
		in := make([]byte, rng.IntN(40))
		for j := range in {
			in[j] = alphabet[rng.IntN(len(alphabet))]
		}
		var s strictCRLFReader
		refCR := false
		for p := in; len(p) > 0; {
			k := min(len(p), rng.IntN(8)+1)
			got, want := s.check(p[:k]), refCheck(&refCR, p[:k])
			if got != want {
				t.Fatalf("%q, read %q: check = %v, reference %v", in, p[:k], got, want)
			}
			if !got {
				break
			}
			if s.lastCR != refCR {
				t.Fatalf("%q, read %q: lastCR = %v, reference %v", in, p[:k], s.lastCR, refCR)
			}
			p = p[k:]
		}
	}
}

func TestStrictCRLFReaderKeepsUnderlyingError(t *testing.T) {
	boom := errors.New("boom")
	sr := &strictCRLFReader{r: iotest.ErrReader(boom)}
	if _, err := io.ReadAll(sr); err != boom || sr.err != boom {
		t.Fatalf("err = %v, kept %v; want boom", err, sr.err)
	}
}

func TestNormalizeAddress(t *testing.T) {
	checkNormalize(t, false, []normalizeCase{
		{"a@example.org", "a@example.org", ""},
		{"first.last+tag@sub.example.org", "first.last+tag@sub.example.org", ""},
		{"user%host@relay.example", "user%host@relay.example", ""},
		{"john doe@example.org", `"john doe"@example.org`, ""},
		{`a"b\c@example.org`, `"a\"b\\c"@example.org`, ""},
		{".lead@example.org", `".lead"@example.org`, ""},
		{"x@[192.0.2.1]", "x@[192.0.2.1]", ""},
		{"x@under_score.example", "x@under_score.example", ""},
		{"a@b@c.example", "", "501 5.1.3 address has more than one @"},
		{"a@", "", "501 5.1.3 address must be local-part@domain"},
		{"nodomain", "", "501 5.1.3 address must be local-part@domain"},
		{"a@exa mple.org", "", "501 5.1.3 invalid domain in address"},
		{"a@.example.org", "", "501 5.1.3 invalid domain in address"},
		{"a@[1.2.3.4", "", "501 5.1.3 invalid domain in address"},
		{"a@[]", "", "501 5.1.3 invalid domain in address"},
		{"a@" + strings.Repeat("l", 64) + ".org", "", "501 5.1.3 invalid domain in address"},
		{"a\x00@example.org", "", "501 5.1.3 control character in address"},
		{"a\x7f@example.org", "", "501 5.1.3 control character in address"},
		{"ü@example.org", "", "553 5.6.7 non-ASCII address requires the SMTPUTF8 parameter of MAIL FROM"},
		{"a@münchen.example", "", "553 5.6.7 non-ASCII address requires the SMTPUTF8 parameter of MAIL FROM"},
		{"a@xn--mnchen-3ya.example", "a@xn--mnchen-3ya.example", ""},
		{"a@xn--bcher-kva.xn--nxasmq6b", "a@xn--bcher-kva.xn--nxasmq6b", ""},
		{"a@xn--", "", "501 5.1.3 invalid internationalized (xn--) label in address domain"},
		{"a@xn---", "", "501 5.1.3 invalid internationalized (xn--) label in address domain"},
		{"a@Xn--.example", "", "501 5.1.3 invalid internationalized (xn--) label in address domain"},
		{"a@xn--a.example", "", "501 5.1.3 invalid internationalized (xn--) label in address domain"},    // decodes to U+0080
		{"a@xn--abc-.example", "", "501 5.1.3 invalid internationalized (xn--) label in address domain"}, // decodes to ASCII
		{"a@xn--mnchen-3ya_x.example", "", "501 5.1.3 invalid internationalized (xn--) label in address domain"},
		{"a@[xn--]", "", "501 5.1.3 invalid domain in address"},
		{"a@xnx--.example", "a@xnx--.example", ""}, // not the ACE prefix
	})
	if _, e := NormalizeAddress("a@b@c", false, false); e == nil || e.EnhancedCode[2] != 7 {
		t.Errorf("MAIL FROM errors use 5.1.7: %v", e)
	}
}

// TestNormalizeAddressUTF8: under SMTPUTF8, UTF-8 local parts and U-labels
// are accepted as they are; invalid UTF-8, C1 controls and labels that
// are not valid IDNA are refused.
func TestNormalizeAddressUTF8(t *testing.T) {
	checkNormalize(t, true, []normalizeCase{
		{"jörg@example.org", "jörg@example.org", ""},
		{"用户@例子.广告", "用户@例子.广告", ""},
		{"a@münchen.example", "a@münchen.example", ""},
		{"ascii@example.org", "ascii@example.org", ""},
		{"jö rg@example.org", `"jö rg"@example.org`, ""},
		{"a\xc3@example.org", "", "501 5.1.3 invalid UTF-8 or a control character in address"},
		{"a\u0085@example.org", "", "501 5.1.3 invalid UTF-8 or a control character in address"},
		{"a@exa\u00a0mple.org", "", "501 5.1.3 invalid domain in address"},
		{"a@-münchen.example", "", "501 5.1.3 invalid domain in address"},
		{"a\x01@example.org", "", "501 5.1.3 control character in address"},
	})
}

type normalizeCase struct{ in, out, err string }

// checkNormalize checks NormalizeAddress on RCPT TO addresses, with or
// without SMTPUTF8.
func checkNormalize(t *testing.T, utf8 bool, cases []normalizeCase) {
	t.Helper()
	for _, tc := range cases {
		out, e := NormalizeAddress(tc.in, true, utf8)
		got := ""
		if e != nil {
			got = fmt.Sprintf("%d %d.%d.%d %s", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
		}
		if out != tc.out || got != tc.err {
			t.Errorf("NormalizeAddress(%q, utf8 %v) = %q, %q; want %q, %q", tc.in, utf8, out, got, tc.out, tc.err)
		}
	}
}

func TestValidHelo(t *testing.T) {
	for _, ok := range []string{"client.example", "localhost", "[127.0.0.1]", "[IPv6:::1]", "DESKTOP-AB_1"} {
		if !validHelo(ok) {
			t.Errorf("validHelo(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "a\x00b", "a\tb", "a(b)", "a;b", "é.example", strings.Repeat("a", 256)} {
		if validHelo(bad) {
			t.Errorf("validHelo(%q) = true", bad)
		}
	}
}

func TestLoadTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := testCert(t, dir)
	cfg, err := LoadTLS(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Certificates) != 1 || cfg.MinVersion == 0 {
		t.Errorf("config %+v", cfg)
	}

	keyPEM, _ := os.ReadFile(keyFile)
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate\n"), 0o600)
	other := t.TempDir()
	_, otherKey, _ := testCert(t, other)
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		cert, key string
		want      []string
	}{
		{missing, keyFile, []string{"read tls certificate: ", missing}},
		{certFile, missing, []string{"read tls key: ", missing}},
		{garbage, keyFile, []string{"tls certificate " + garbage + " with key " + keyFile + ": "}},
		{certFile, garbage, []string{"tls certificate " + certFile + " with key " + garbage + ": "}},
		{certFile, otherKey, []string{"tls certificate " + certFile + " with key " + otherKey + ": ", "does not match"}},
	} {
		_, err := LoadTLS(tc.cert, tc.key)
		if err == nil {
			t.Errorf("LoadTLS(%s, %s) succeeded", tc.cert, tc.key)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("LoadTLS error %q does not contain %q", err, w)
			}
		}
		if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), string(keyPEM[30:60])) {
			t.Errorf("LoadTLS error quotes key material: %q", err)
		}
	}
}

// wireRec is the network under a conn: it records the writes that reach
// it and reads from in; with fail set, every write fails with it.
type wireRec struct {
	net.Conn // nil: only what is used here is called
	in       *strings.Reader
	writes   []string
	fail     error
	closed   bool
}

func (w *wireRec) Write(p []byte) (int, error) {
	if w.fail != nil {
		return 0, w.fail
	}
	w.writes = append(w.writes, string(p))
	return len(p), nil
}
func (w *wireRec) Read(p []byte) (int, error)        { return w.in.Read(p) }
func (w *wireRec) Close() error                      { w.closed = true; return nil }
func (w *wireRec) SetWriteDeadline(time.Time) error  { return nil }
func (w *wireRec) RemoteAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (w *wireRec) SetReadDeadline(t time.Time) error { return nil }

func newTestConn(t *testing.T, w *wireRec) *conn {
	t.Helper()
	s, err := New(Options{Hostname: testHost}, discardQueue{})
	if err != nil {
		t.Fatal(err)
	}
	return newConn(w, s)
}

// Replies wait for the next read (or the close) and go out in one write,
// in order, with what writeNow adds after them.
func TestConnHoldsRepliesUntilRead(t *testing.T) {
	w := &wireRec{in: strings.NewReader("EHLO client.example\r\n")}
	c := newTestConn(t, w)
	for _, s := range []string{"220 mx.test ESMTP\r\n", "250-mx.test\r\n", "250-PIPELINING\r\n", "250 SMTPUTF8\r\n"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.writes) != 0 {
		t.Fatalf("sent before a read: %q", w.writes)
	}
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "EHLO client.example\r\n" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if want := []string{"220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"}; !slices.Equal(w.writes, want) {
		t.Fatalf("writes = %q, want %q", w.writes, want)
	}
	c.Write([]byte("250 first\r\n"))
	c.writeNow("554 5.7.0 second\r\n")
	// A new write deadline sends what waits first (TLS's Close writes its
	// close_notify, then sets the deadline to now).
	c.Write([]byte("221 2.0.0 bye\r\n"))
	c.SetWriteDeadline(time.Now())
	c.Write([]byte("last\r\n"))
	c.Close()
	want := []string{"220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n", "250 first\r\n", "554 5.7.0 second\r\n", "221 2.0.0 bye\r\n", "last\r\n"}
	if !slices.Equal(w.writes, want) || !w.closed {
		t.Fatalf("writes = %q (closed %v), want %q", w.writes, w.closed, want)
	}
}

// After a failed send nothing more goes out, and reads fail too.
func TestConnReplyErrorSticks(t *testing.T) {
	boom := errors.New("connection reset by peer")
	w := &wireRec{in: strings.NewReader("QUIT\r\n"), fail: boom}
	c := newTestConn(t, w)
	c.Write([]byte("220 mx.test ESMTP\r\n"))
	if _, err := c.Read(make([]byte, 64)); !errors.Is(err, boom) {
		t.Fatalf("Read after a failed send: %v, want it", err)
	}
	w.fail = nil
	if _, err := c.Write([]byte("221 bye\r\n")); !errors.Is(err, boom) {
		t.Errorf("Write after a failed send: %v, want the first error", err)
	}
	c.Close()
	if len(w.writes) != 0 {
		t.Errorf("sent after the failure: %q", w.writes)
	}
}
