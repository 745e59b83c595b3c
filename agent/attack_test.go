package agent_test

// The SMTP attack corpus: scripted dialogs under the top-level
// testdata/attacks, each played against a fresh agent (listener, spool
// and delivery, with an internal/testing/upstream relay behind it).
//
// # Script format
//
// One file per attack, named NAME.txt. Each line is one directive; blank
// lines and lines starting with '#' are comments. Directives:
//
//	CONFIG: key = value   a TOML line added to the agent's [listen] table
//	                      (before the dialog starts)
//	SOURCE: 127.0.0.2     the client's source address (default 127.0.0.1)
//
//	C: text               send text followed by CRLF, in one write
//	W: text               send text exactly (no CRLF added), in one write:
//	                      for pipelining and for line endings that are
//	                      the point of the attack
//	S: PATTERN            read one reply (all its lines) and match it
//	S?: PATTERN           an optional reply: if the next reply matches, it
//	                      is consumed; otherwise it is left for the next S:
//	                      (for go-smtp acting on part of an over-long line
//	                      before it answers 500)
//	STARTTLS              run the TLS handshake now (after the 220 to
//	                      STARTTLS); the agent's certificate is checked
//	                      against the test CA
//	CLOSE                 the server must close the connection, sending
//	                      nothing more
//
//	UPSTREAM: N           after the dialog, the upstream received exactly N
//	                      messages, and the agent accepted exactly N (so
//	                      nothing else is queued or will arrive later)
//	RELAYED: <from> <to1,to2> BODY
//	                      one upstream message has this envelope and a body
//	                      matching BODY (a pattern); each RELAYED line
//	                      matches a different message
//	NEVER: text           no upstream message has text in its sender or in
//	                      any recipient
//
// In C:, W: and RELAYED: bodies, escapes are \r, \n, \t, \\, \xNN (one
// byte), and \{N*TEXT} (TEXT, which may hold the other escapes but no '}',
// repeated N times).
//
// A PATTERN is a three-digit code, optionally followed by a space and a
// text pattern. The text of a reply is its lines without their codes,
// joined with "\n". In text patterns and RELAYED bodies, '*' matches any
// run of bytes (newlines included) and every other byte (after escapes)
// matches itself; the whole text must match.
//
// The agent listens on 127.0.0.1 with STARTTLS (a certificate from the
// upstream's CA), allowed_networks 127.0.0.1/32, max_message_bytes 4000,
// max_recipients 3 unless CONFIG lines say otherwise; its relay is the
// upstream, without TLS and without AUTH. Every read has a deadline, so a
// script that waits for a reply that never comes fails instead of hanging.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
	"github.com/sealrelay/sealrelay/internal/testseam"
)

// attackReadTimeout bounds each wait for the agent in a script.
const attackReadTimeout = 10 * time.Second

// attackStep is one step of a dialog.
type attackStep struct {
	line     int
	kind     string // "send", "expect", "expect?", "starttls", "close"
	data     []byte // send
	code     int    // expect
	text     *regexp.Regexp
	original string // the directive, for messages
}

// relayedExpect is one RELAYED line.
type relayedExpect struct {
	line int
	from string
	to   []string
	body *regexp.Regexp
}

// attackScript is a parsed corpus file.
type attackScript struct {
	config   []string
	source   string
	steps    []attackStep
	upstream int // -1 if the file has no UPSTREAM line
	relayed  []relayedExpect
	never    []string
}

// unescape expands the corpus escapes in s.
func unescape(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(s) {
			return nil, errors.New("backslash at the end of the line")
		}
		i++
		switch s[i] {
		case 'r':
			out = append(out, '\r')
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case '\\':
			out = append(out, '\\')
		case 'x':
			if i+2 >= len(s) {
				return nil, errors.New(`\x needs two hex digits`)
			}
			b, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, fmt.Errorf(`\x%s: %v`, s[i+1:i+3], err)
			}
			out = append(out, byte(b))
			i += 2
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, errors.New(`\{ without a closing }`)
			}
			nStr, text, ok := strings.Cut(s[i+1:i+end], "*")
			n, err := strconv.Atoi(nStr)
			if !ok || err != nil || n < 0 || n > 1<<20 {
				return nil, fmt.Errorf(`\{%s}: want \{N*TEXT}`, s[i+1:i+end])
			}
			unit, err := unescape(text)
			if err != nil {
				return nil, err
			}
			out = append(out, bytes.Repeat(unit, n)...)
			i += end
		default:
			return nil, fmt.Errorf(`unknown escape \%c`, s[i])
		}
	}
	return out, nil
}

// globRegexp compiles a corpus text pattern ('*' matches anything).
func globRegexp(s string) (*regexp.Regexp, error) {
	b, err := unescape(s)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(string(b), "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.Compile(`(?s)\A` + strings.Join(parts, ".*") + `\z`)
}

// parseAttack reads a corpus file.
func parseAttack(data string) (*attackScript, error) {
	sc := &attackScript{upstream: -1}
	for n, line := range strings.Split(data, "\n") {
		n++
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		dir, arg, hasArg := strings.Cut(line, ":")
		arg = strings.TrimPrefix(arg, " ")
		fail := func(format string, a ...any) error {
			return fmt.Errorf("line %d: %s", n, fmt.Sprintf(format, a...))
		}
		if !hasArg {
			dir = strings.TrimSpace(line)
		}
		switch dir {
		case "CONFIG":
			sc.config = append(sc.config, arg)
		case "SOURCE":
			sc.source = strings.TrimSpace(arg)
		case "C", "W":
			b, err := unescape(arg)
			if err != nil {
				return nil, fail("%v", err)
			}
			if dir == "C" {
				b = append(b, '\r', '\n')
			}
			sc.steps = append(sc.steps, attackStep{line: n, kind: "send", data: b, original: line})
		case "S", "S?":
			codeStr, pat, hasPat := strings.Cut(arg, " ")
			code, err := strconv.Atoi(codeStr)
			if err != nil || len(codeStr) != 3 {
				return nil, fail("want a three-digit code, not %q", codeStr)
			}
			st := attackStep{line: n, kind: "expect", code: code, original: line}
			if dir == "S?" {
				st.kind = "expect?"
			}
			if hasPat {
				if st.text, err = globRegexp(pat); err != nil {
					return nil, fail("%v", err)
				}
			}
			sc.steps = append(sc.steps, st)
		case "STARTTLS":
			sc.steps = append(sc.steps, attackStep{line: n, kind: "starttls", original: line})
		case "CLOSE":
			sc.steps = append(sc.steps, attackStep{line: n, kind: "close", original: line})
		case "UPSTREAM":
			v, err := strconv.Atoi(strings.TrimSpace(arg))
			if err != nil || v < 0 {
				return nil, fail("UPSTREAM wants a count, not %q", arg)
			}
			sc.upstream = v
		case "RELAYED":
			m := regexp.MustCompile(`^<([^>]*)> <([^>]*)> (.*)$`).FindStringSubmatch(arg)
			if m == nil {
				return nil, fail("want RELAYED: <from> <to1,to2> BODY")
			}
			body, err := globRegexp(m[3])
			if err != nil {
				return nil, fail("%v", err)
			}
			sc.relayed = append(sc.relayed, relayedExpect{line: n, from: m[1], to: strings.Split(m[2], ","), body: body})
		case "NEVER":
			sc.never = append(sc.never, arg)
		default:
			return nil, fail("unknown directive %q", dir)
		}
	}
	if sc.upstream < 0 {
		return nil, errors.New("no UPSTREAM line")
	}
	if len(sc.relayed) > sc.upstream {
		return nil, fmt.Errorf("%d RELAYED lines but UPSTREAM: %d", len(sc.relayed), sc.upstream)
	}
	return sc, nil
}

func TestParseAttackErrors(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{"C: x\n", "no UPSTREAM line"},
		{"S: 25\nUPSTREAM: 0\n", "line 1: want a three-digit code"},
		{"C: a\\q\nUPSTREAM: 0\n", `line 1: unknown escape \q`},
		{"C: \\{3*ab\nUPSTREAM: 0\n", `line 1: \{ without a closing }`},
		{"C: \\x4\nUPSTREAM: 0\n", `line 1: \x needs two hex digits`},
		{"X: y\nUPSTREAM: 0\n", `line 1: unknown directive "X"`},
		{"UPSTREAM: 0\nRELAYED: <a> <b> x\n", "1 RELAYED lines but UPSTREAM: 0"},
	} {
		_, err := parseAttack(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("parseAttack(%q) = %v, want an error containing %q", tc.in, err, tc.err)
		}
	}
	b, err := unescape(`a\r\n\x00\\\{3*x\t}`)
	if err != nil || string(b) != "a\r\n\x00\\x\tx\tx\t" {
		t.Errorf("unescape = %q, %v", b, err)
	}
}

// TestAttackCorpus plays every script in the top-level testdata/attacks.
func TestAttackCorpus(t *testing.T) {
	files, err := filepath.Glob(testlib.Testdata("attacks/*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no attack scripts: %v", err)
	}
	tlsFiles := writeListenCert(t)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := parseAttack(string(data))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			playAttack(t, f, sc, tlsFiles)
		})
	}
}

// listenTLS is a certificate for the agent's listener and the pool that
// trusts it.
type listenTLS struct {
	cert, key string
	pool      *x509.CertPool
}

// writeListenCert issues a certificate for 127.0.0.1 from an upstream CA
// and writes it and its key as PEM files.
func writeListenCert(t *testing.T) listenTLS {
	t.Helper()
	ca, err := upstream.NewCA("sealrelay attack corpus CA (test only)")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue()
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := listenTLS{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem"), pool: ca.Pool()}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(out.cert, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out.key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// syncBuffer is a log sink the test reads while the code writes to it.
type syncBuffer = testlib.LogBuf

// filterLog returns the lines of s holding any of subs.
func filterLog(s *syncBuffer, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s.String(), "\n") {
		if slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(l, sub) }) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// rigOptions configure a test agent.
type rigOptions struct {
	dataDir string   // default: a fresh temp dir
	listen  []string // extra TOML lines for [listen]
	tls     *listenTLS
	up      *upstream.Server // default: a fresh upstream without TLS
	hook    func(path string) error
}

// rig is a running agent in front of an upstream.
type rig struct {
	agent   *agent.Agent
	up      *upstream.Server
	logs    *syncBuffer
	dataDir string
	stop    func() // stops the agent and waits for Run to return
}

// agentConfig returns the TOML of a test agent whose relay is up.
func agentConfig(dataDir, upAddr string, listen []string, tlsFiles *listenTLS) string {
	var b strings.Builder
	fmt.Fprintf(&b, "hostname = \"sealrelay.test\"\ndata_dir = %q\n\n[listen]\naddress = \"127.0.0.1:0\"\n", dataDir)
	fmt.Fprintf(&b, "read_timeout = \"30s\"\nwrite_timeout = \"30s\"\n")
	if tlsFiles != nil {
		fmt.Fprintf(&b, "tls_cert = %q\ntls_key = %q\n", tlsFiles.cert, tlsFiles.key)
	}
	for _, l := range listen {
		b.WriteString(l + "\n")
	}
	fmt.Fprintf(&b, "\n[[relay]]\nname = \"up\"\naddress = %q\ntls = \"none\"\nauth = \"disabled\"\nconnect_timeout = \"5s\"\ncommand_timeout = \"10s\"\n", upAddr)
	b.WriteString("\n[queue]\nmin_backoff = \"200ms\"\nmax_backoff = \"1s\"\ndrain_timeout = \"5s\"\n")
	return b.String()
}

// startRig starts an upstream (unless given) and an agent relaying to it;
// both stop at the end of the test.
func startRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	up := o.up
	if up == nil {
		var err error
		up, err = upstream.Start(upstream.Config{TLS: upstream.NoTLS})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { up.Close() })
	}
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	file := filepath.Join(o.dataDir, "sealrelay.toml")
	cfg, err := config.Parse([]byte(agentConfig(o.dataDir, up.Addr(), o.listen, o.tls)), file)
	if err != nil {
		t.Fatal(err)
	}
	if o.hook != nil {
		testseam.SpoolBeforeSync.Store(&o.hook)
		t.Cleanup(func() { testseam.SpoolBeforeSync.Store(nil) })
	}
	logs := &syncBuffer{}
	a, err := agent.New(cfg, nil, agent.Options{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent Run: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("agent log (warnings and errors):\n%s", filterLog(logs, "level=WARN", "level=ERROR"))
		}
	})
	return &rig{agent: a, up: up, logs: logs, dataDir: o.dataDir, stop: stop}
}

// waitFor polls cond until it holds; it fails the test after a generous
// bound (this is a bound on a hang, not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testlib.WaitFor(t, 20*time.Second, what, cond)
}

// waitSettled waits until no session is open and the queue is empty.
func (r *rig) waitSettled(t *testing.T) {
	t.Helper()
	waitFor(t, "the sessions to end", func() bool { return r.agent.Listener().Stats().SessionsOpen == 0 })
	waitFor(t, "the queue to empty", func() bool { return r.agent.Queue().Stats().Queued == 0 })
}

// attackConn is the client side of a dialog.
type attackConn struct {
	t       *testing.T
	file    string
	c       net.Conn
	r       *bufio.Reader
	pending *attackReply // read by an S?: that did not match
}

type attackReply struct {
	code  int
	text  string
	lines []string
}

func (r *attackReply) String() string { return strings.Join(r.lines, "\\r\\n") }

// readReply reads one (possibly multi-line) reply.
func (c *attackConn) readReply() (*attackReply, error) {
	if p := c.pending; p != nil {
		c.pending = nil
		return p, nil
	}
	rep := &attackReply{}
	var texts []string
	for {
		c.c.SetReadDeadline(time.Now().Add(attackReadTimeout))
		line, err := c.r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("reading a reply (so far %q): %w", rep.lines, err)
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		rep.lines = append(rep.lines, line)
		if len(line) < 3 {
			return nil, fmt.Errorf("malformed reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return nil, fmt.Errorf("malformed reply line %q", line)
		}
		if rep.code != 0 && code != rep.code {
			return nil, fmt.Errorf("reply changes code mid-way: %q", rep.lines)
		}
		rep.code = code
		rest := line[3:]
		texts = append(texts, strings.TrimLeft(rest, " -"))
		if rest == "" || rest[0] == ' ' {
			rep.text = strings.Join(texts, "\n")
			return rep, nil
		}
		if rest[0] != '-' {
			return nil, fmt.Errorf("malformed reply line %q", line)
		}
	}
}

func (st *attackStep) matches(r *attackReply) bool {
	return r.code == st.code && (st.text == nil || st.text.MatchString(r.text))
}

// play runs one step.
func (c *attackConn) play(st attackStep, tlsFiles listenTLS) {
	t := c.t
	t.Helper()
	where := fmt.Sprintf("%s:%d: %s", c.file, st.line, st.original)
	switch st.kind {
	case "send":
		c.c.SetWriteDeadline(time.Now().Add(attackReadTimeout))
		if _, err := c.c.Write(st.data); err != nil {
			t.Fatalf("%s: write: %v", where, err)
		}
	case "expect", "expect?":
		r, err := c.readReply()
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if !st.matches(r) {
			if st.kind == "expect?" {
				c.pending = r
				return
			}
			t.Fatalf("%s: got %s", where, r)
		}
	case "starttls":
		if c.pending != nil || c.r.Buffered() > 0 {
			t.Fatalf("%s: the server sent more before the TLS handshake", where)
		}
		tc := tls.Client(c.c, &tls.Config{RootCAs: tlsFiles.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
		tc.SetDeadline(time.Now().Add(attackReadTimeout))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("%s: TLS handshake: %v", where, err)
		}
		tc.SetDeadline(time.Time{})
		c.c, c.r = tc, bufio.NewReader(tc)
	case "close":
		if c.pending != nil {
			t.Fatalf("%s: got %s, want the connection closed", where, c.pending)
		}
		c.c.SetReadDeadline(time.Now().Add(attackReadTimeout))
		rest, err := io.ReadAll(c.r)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("%s: the server did not close the connection (after %q)", where, rest)
		case len(rest) > 0:
			t.Fatalf("%s: the server sent %q before closing", where, rest)
		}
	}
}

// playAttack runs sc against a fresh agent and checks the upstream.
func playAttack(t *testing.T, file string, sc *attackScript, tlsFiles listenTLS) {
	listen := append([]string{
		`allowed_networks = ["127.0.0.1/32"]`,
		"max_message_bytes = 4000",
		"max_recipients = 3",
	}, sc.config...)
	listen = dedupeKeys(listen)
	r := startRig(t, rigOptions{listen: listen, tls: &tlsFiles})

	d := net.Dialer{Timeout: attackReadTimeout}
	if sc.source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(sc.source)}
	}
	nc, err := d.Dial("tcp", r.agent.Addr().String())
	if err != nil {
		if sc.source != "" {
			t.Skipf("cannot connect from %s here: %v", sc.source, err)
		}
		t.Fatal(err)
	}
	c := &attackConn{t: t, file: file, c: nc, r: bufio.NewReader(nc)}
	for _, st := range sc.steps {
		c.play(st, tlsFiles)
	}
	if c.pending != nil {
		t.Fatalf("%s: unexpected reply at the end of the script: %s", file, c.pending)
	}
	c.c.Close()

	r.waitSettled(t)
	msgs := r.up.Messages()
	qs := r.agent.Queue().Stats()
	if len(msgs) != sc.upstream || int(qs.Accepted) != sc.upstream {
		var got []string
		for _, m := range msgs {
			got = append(got, fmt.Sprintf("<%s> %v %q", m.From, m.To, m.Data))
		}
		t.Fatalf("%s: the upstream received %d messages and the agent accepted %d, want %d each:\n%s",
			file, len(msgs), qs.Accepted, sc.upstream, strings.Join(got, "\n"))
	}
	used := make([]bool, len(msgs))
	for _, want := range sc.relayed {
		found := false
		for i, m := range msgs {
			if !used[i] && m.From == want.from && slices.Equal(m.To, want.to) && want.body.Match(m.Data) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("%s:%d: no upstream message matches <%s> %v %s", file, want.line, want.from, want.to, want.body)
		}
	}
	for _, never := range sc.never {
		for _, m := range msgs {
			if strings.Contains(m.From, never) || slices.ContainsFunc(m.To, func(a string) bool { return strings.Contains(a, never) }) {
				t.Errorf("%s: a message with %q in its envelope was relayed: <%s> %v", file, never, m.From, m.To)
			}
		}
	}
	if t.Failed() {
		for _, m := range msgs {
			t.Logf("relayed: <%s> %v %q", m.From, m.To, m.Data)
		}
	}
}

// dedupeKeys keeps the last line for each TOML key, so that a script's
// CONFIG line overrides a default.
func dedupeKeys(lines []string) []string {
	var out []string
	seen := map[string]bool{}
	for i := len(lines) - 1; i >= 0; i-- {
		k, _, _ := strings.Cut(lines[i], "=")
		k = strings.TrimSpace(k)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, lines[i])
	}
	slices.Reverse(out)
	return out
}

// TestSessionLimitsAndProbes: the [listen] session limits reach the
// listener, and refusals and TCP probes show in the metrics. (The attack
// scripts above play one connection each; these need several.)
func TestSessionLimitsAndProbes(t *testing.T) {
	r := startRig(t, rigOptions{listen: []string{"max_sessions = 3", "max_sessions_per_client = 2"}})
	addr := r.agent.Addr().String()
	greet := func(local string) (net.Conn, *bufio.Reader, string) {
		t.Helper()
		d := net.Dialer{Timeout: attackReadTimeout}
		if local != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(attackReadTimeout))
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the greeting: %v", err)
		}
		return c, br, strings.TrimRight(line, "\r\n")
	}

	// A TCP probe: connect, then reset.
	probe, _, _ := greet("")
	probe.(*net.TCPConn).SetLinger(0)
	probe.Close()
	waitFor(t, "the reset to be counted", func() bool {
		return metricValue(t, r.agent.Registry(), "sealrelay_smtpd_connection_errors_total", "") == 1
	})
	waitFor(t, "the probe's session to end", func() bool { return r.agent.Listener().Stats().SessionsOpen == 0 })

	first, firstR, g := greet("")
	if !strings.HasPrefix(g, "220 ") {
		t.Fatalf("first session: %q", g)
	}
	if _, _, g = greet(""); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("second session: %q", g)
	}
	if _, _, g = greet(""); g != "421 4.7.0 too many sessions from your address, try again later" {
		t.Fatalf("third session from the same client: %q", g)
	}
	open := 2
	if canBindLoopback2() {
		open++
		if _, _, g = greet("127.0.0.2"); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("a session from another client: %q", g)
		}
		if _, _, g = greet("127.0.0.3"); g != "421 4.7.0 too many sessions, try again later" {
			t.Fatalf("a fourth session: %q", g)
		}
	}
	fmt.Fprintf(first, "QUIT\r\n")
	if line, _ := firstR.ReadString('\n'); !strings.HasPrefix(line, "221 ") {
		t.Fatalf("QUIT: %q", line)
	}
	waitFor(t, "the session to end", func() bool { return r.agent.Listener().Stats().SessionsOpen == open-1 })
	if _, _, g = greet(""); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("a session after one ended: %q", g)
	}

	if got := metricValue(t, r.agent.Registry(), "sealrelay_smtpd_rejected_total", "max_sessions_per_client"); got != 1 {
		t.Errorf("rejected{reason=max_sessions_per_client} = %v, want 1", got)
	}
	if w := filterLog(r.logs, "smtp server error"); w != "" {
		t.Errorf("the probe was logged as a server error:\n%s", w)
	}
}

// canBindLoopback2 reports whether 127.0.0.2 and 127.0.0.3 can be source
// addresses here (Linux routes all of 127/8 to loopback).
func canBindLoopback2() bool {
	l, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// metricValue returns the value of the metric name (with label value
// label, if not empty) from reg, or -1 if there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetValue() == label }) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
