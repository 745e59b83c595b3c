package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/agent/maildrop"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestSendmailArgs: the command lines sendmail programs use parse as
// Postfix's sendmail reads them.
func TestSendmailArgs(t *testing.T) {
	str := func(s string) *string { return &s }
	cases := []struct {
		args string
		want sendmailArgs
	}{
		{"-t -i", sendmailArgs{extract: true}},
		{"-ti", sendmailArgs{extract: true}},
		{"-oi -t", sendmailArgs{extract: true}},
		{"-oem -oi", sendmailArgs{}}, // mutt
		{"-i -FCronDaemon -B8BITMIME -oem root", sendmailArgs{fullName: "CronDaemon", rcpts: []string{"root"}}},                      // Debian's cron
		{"-i -f me@example.com -- rcpt@example.net", sendmailArgs{from: str("me@example.com"), rcpts: []string{"rcpt@example.net"}}}, // s-nail
		{"-fme@example.com a@b.example b@b.example", sendmailArgs{dots: true, from: str("me@example.com"), rcpts: []string{"a@b.example", "b@b.example"}}},
		{"-f <> a@b.example", sendmailArgs{dots: true, from: str(""), rcpts: []string{"a@b.example"}}},
		{"-r <bounce@example.com> a@b.example", sendmailArgs{dots: true, from: str("bounce@example.com"), rcpts: []string{"a@b.example"}}},
		{"-F Jo Doe -v -C /etc/x.toml -bm -N never -R hdrs -V envid -odi a@b.example", sendmailArgs{dots: true, fullName: "Jo", rcpts: []string{"Doe", "-v", "-C", "/etc/x.toml", "-bm", "-N", "never", "-R", "hdrs", "-V", "envid", "-odi", "a@b.example"}}},
		{"-F 'Jo' -v -C /etc/x.toml -bm -N never -odi a@b.example", sendmailArgs{dots: true, fullName: "'Jo'", verbose: true, config: "/etc/x.toml", rcpts: []string{"a@b.example"}}},
		{"-bp", sendmailArgs{dots: true, list: true}},
		{"-- -odd@example.com", sendmailArgs{dots: true, rcpts: []string{"-odd@example.com"}}},
	}
	for _, tc := range cases {
		tc.want.dots = tc.want.dots || !strings.Contains(tc.args, "i")
		if strings.Contains(tc.args, "-i") || strings.Contains(tc.args, "-oi") || strings.Contains(tc.args, "-ti") {
			tc.want.dots = false
		}
		got, err := parseSendmailArgs(strings.Fields(tc.args))
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if got.extract != tc.want.extract || got.dots != tc.want.dots || got.fullName != tc.want.fullName || got.verbose != tc.want.verbose ||
			got.config != tc.want.config || got.list != tc.want.list || !slices.Equal(got.rcpts, tc.want.rcpts) ||
			(got.from == nil) != (tc.want.from == nil) || (got.from != nil && *got.from != *tc.want.from) {
			t.Errorf("%q: got %+v, want %+v", tc.args, *got, tc.want)
		}
	}
	for args, want := range map[string]string{
		"-Z a@b.example": "unknown option -Z",
		"-f":             "option -f needs an argument",
		"-bs":            "-bs (SMTP on standard input) is not supported",
		"-bd":            "-bd is not supported",
		"-q":             "option -q needs an argument",
		"-q1h":           "-q is not supported",
	} {
		_, err := parseSendmailArgs(strings.Fields(args))
		var xe *exitError
		if !errors.As(err, &xe) || xe.code != exUsage || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want exit 64 with %q", args, err, want)
		}
	}
	if _, err := parseSendmailArgs([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}

// TestCanonical: LF and CRLF line ends both become CRLF; without -i a
// line with a single dot ends the message; a bare CR is refused.
func TestCanonical(t *testing.T) {
	cases := []struct {
		in   string
		dots bool
		out  string
		err  string
	}{
		{"Subject: x\n\nline\n", true, "Subject: x\r\n\r\nline\r\n", ""},
		{"Subject: x\r\n\r\nline\r\n", true, "Subject: x\r\n\r\nline\r\n", ""},
		{"a\nno newline at the end", true, "a\r\nno newline at the end\r\n", ""},
		{"a\n.\nafter the dot\n", true, "a\r\n", ""},
		{"a\n.\nafter the dot\n", false, "a\r\n.\r\nafter the dot\r\n", ""},
		{"a\n..\n", true, "a\r\n..\r\n", ""},
		{"a\rb\n", true, "", "line 1 of the message holds a bare CR"},
		{"ok\nx\r\r\n", true, "", "line 2 of the message holds a bare CR"},
		{"", true, "", "the message is empty"},
		{".\n", true, "", "the message is empty"},
	}
	for _, tc := range cases {
		out, err := canonical([]byte(tc.in), tc.dots)
		if tc.err != "" {
			var xe *exitError
			if !errors.As(err, &xe) || xe.code != exDataErr || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want exit 65 with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || string(out) != tc.out {
			t.Errorf("%q (dots %v): %q, %v; want %q", tc.in, tc.dots, out, err, tc.out)
		}
	}
}

// TestExtractRecipients: -t reads To, Cc and Bcc (folded, with display
// names, groups and bare local names), removes Bcc with its folded lines,
// and leaves the body alone.
func TestExtractRecipients(t *testing.T) {
	msg := "From: app@example.com\r\n" +
		"To: \"Doe, Jo\" <jo@example.com>,\r\n ann@example.org\r\n" +
		"Subject: To: not@a.header\r\n" +
		"cc: team: a@example.net, b@example.net;, root\r\n" +
		"BCC: hidden@example.com,\r\n\tsecret@example.com\r\n" +
		"Message-ID: <t@example.com>\r\n" +
		"\r\n" +
		"To: body@example.com\r\n" +
		"Bcc: stays@example.com\r\n"
	out, rcpts, err := extractRecipients([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"jo@example.com", "ann@example.org", "a@example.net", "b@example.net", "root", "hidden@example.com", "secret@example.com"}
	if !slices.Equal(rcpts, want) {
		t.Errorf("recipients %q\nwant %q", rcpts, want)
	}
	wantMsg := strings.Replace(msg, "BCC: hidden@example.com,\r\n\tsecret@example.com\r\n", "", 1)
	if string(out) != wantMsg {
		t.Errorf("message\n%q\nwant\n%q", out, wantMsg)
	}
	if _, rcpts, err := extractRecipients([]byte("To: undisclosed-recipients:;\r\n\r\nx\r\n")); err != nil || len(rcpts) != 0 {
		t.Errorf("an empty group: %q %v", rcpts, err)
	}
	if _, _, err := extractRecipients([]byte("To: <unclosed@example.com\r\n\r\nx\r\n")); err == nil || !strings.Contains(err.Error(), "To header: ") {
		t.Errorf("a bad To header: %v", err)
	}
}

// TestArgv0: the binary called as sendmail is `sealrelay sendmail`, as
// mailq `sealrelay sendmail -bp`.
func TestArgv0(t *testing.T) {
	for argv, want := range map[string]string{
		"/usr/sbin/sendmail -t -i":    "sendmail -t -i",
		"sendmail":                    "sendmail",
		"/usr/bin/mailq -C c.toml":    "sendmail -bp -C c.toml",
		"/usr/bin/sealrelay sendmail": "sendmail",
		"sealrelay serve -c x":        "serve -c x",
	} {
		if got := strings.Join(argv0Args(strings.Fields(argv)), " "); got != want {
			t.Errorf("%q: %q, want %q", argv, got, want)
		}
	}
}

// sendmailEnv runs `sealrelay sendmail args` in-process with stdin and
// returns its exit status and standard error.
func sendmailEnv(t *testing.T, stdin []byte, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{ctx: t.Context(), stdin: bytes.NewReader(stdin), stdout: &out, stderr: &errb}
	code := run(e, append([]string{"sendmail"}, args...))
	return code, errb.String()
}

// smConfig writes a config whose maildrop is ready (data_dir/maildrop as
// the agent makes it) and returns its path.
func smConfig(t *testing.T, extra string) (cfg, dropDir string) {
	t.Helper()
	dir := t.TempDir()
	cfg = filepath.Join(dir, "sealrelay.toml")
	writeTestFile(t, cfg, "hostname = \"agent.test\"\ndata_dir = \"data\"\n[[relay]]\naddress = \"relay.example:587\"\n"+extra)
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o711); err != nil {
		t.Fatal(err)
	}
	dropDir = filepath.Join(dir, "data", "maildrop")
	if _, err := maildrop.Prepare(dropDir); err != nil {
		t.Fatal(err)
	}
	return cfg, dropDir
}

// TestSendmailExitStatuses: each failure a user can meet exits with its
// sysexits code and says what is wrong (and how to fix it, where known);
// nothing is left in the maildrop. The statuses that need another user,
// a full disk or a read-only one are in sendmail_peers_test.go.
func TestSendmailExitStatuses(t *testing.T) {
	cfg, drop := smConfig(t, "[listen]\nmax_message_bytes = 200\nmax_recipients = 2\n")
	msg := []byte("Subject: hi\n\nbody\n")
	badCfg := filepath.Join(t.TempDir(), "bad.toml")
	writeTestFile(t, badCfg, "data_dir = \n")
	noDrop := filepath.Join(t.TempDir(), "sealrelay.toml")
	writeTestFile(t, noDrop, "data_dir = \"data\"\n")
	stdinDir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer stdinDir.Close()

	cases := []struct {
		name  string
		stdin []byte
		args  []string
		code  int
		want  string
	}{
		{"no recipients", msg, []string{"-C", cfg}, 64, "sealrelay: no recipients: name them after the options, or give -t and To, Cc or Bcc headers\n"},
		{"-t without any", msg, []string{"-t", "-C", cfg}, 64, "sealrelay: no recipients"},
		{"unknown option", msg, []string{"-Z", "-C", cfg}, 64, "sealrelay: unknown option -Z\nusage: sealrelay sendmail"},
		{"bad -f", msg, []string{"-f", "a@b@c", "-C", cfg, "x@example.com"}, 64, `sealrelay: -f "a@b@c": address has more than one @`},
		{"bad -F", msg, []string{"-F", "a\nb", "-C", cfg, "x@example.com"}, 64, "sealrelay: -F: a full name of at most 256 bytes without control characters"},
		{"bare CR", []byte("Subject: x\r\rok\n"), []string{"-C", cfg, "x@example.com"}, 65, "sealrelay: line 1 of the message holds a bare CR"},
		{"too large", bytes.Repeat([]byte("x"), 201), []string{"-C", cfg, "x@example.com"}, 65, "sealrelay: the message is larger than 200 bytes (listen.max_message_bytes)"},
		{"too many recipients", msg, []string{"-C", cfg, "a@example.com", "b@example.com", "c@example.com"}, 65, "sealrelay: 3 recipients, more than the 2 of listen.max_recipients"},
		{"bad To header", []byte("To: <a@example.com\n\nx\n"), []string{"-t", "-C", cfg}, 65, "sealrelay: To header: mail: "},
		{"bad header address", []byte("To: a b@example.com\n\nx\n"), []string{"-t", "-C", cfg}, 65, "sealrelay: To header: "},
		{"config missing", msg, []string{"-C", "/nonexistent/sealrelay.toml", "x@example.com"}, 66, "sealrelay: reading config: open /nonexistent/sealrelay.toml: no such file or directory"},
		{"bad recipient", msg, []string{"-C", cfg, "a@b@example.com"}, 67, `sealrelay: recipient "a@b@example.com": address has more than one @`},
		{"no maildrop", msg, []string{"-C", noDrop, "x@example.com"}, 69, "stat " + filepath.Join(filepath.Dir(noDrop), "data", "maildrop") + ": no such file or directory\nsealrelay: hint: the agent creates " + filepath.Join(filepath.Dir(noDrop), "data", "maildrop") + " when it starts (sealrelay serve)"},
		{"bad config", msg, []string{"-C", badCfg, "x@example.com"}, 78, "sealrelay: " + badCfg + ":1: data_dir: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := sendmailEnv(t, tc.stdin, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d with %q", code, stderr, tc.code, tc.want)
			}
		})
	}
	t.Run("stdin unreadable", func(t *testing.T) {
		var errb bytes.Buffer
		e := &env{ctx: t.Context(), stdin: stdinDir, stdout: &errb, stderr: &errb}
		code := run(e, []string{"sendmail", "-C", cfg, "x@example.com"})
		if code != 74 || !strings.Contains(errb.String(), "sealrelay: reading the message from standard input: read ") || !strings.Contains(errb.String(), "is a directory") {
			t.Errorf("exit %d: %s", code, errb.String())
		}
	})
	if files, _ := os.ReadDir(drop); len(files) != 0 {
		t.Errorf("failed submissions left %d files in the maildrop", len(files))
	}

	t.Run("ok", func(t *testing.T) {
		code, stderr := sendmailEnv(t, []byte("To: a@example.com\nBcc: b@example.com\n\nbody\n"), "-t", "-v", "-C", cfg)
		if code != 0 || !strings.HasPrefix(stderr, "sealrelay: queued in "+drop+" as m.") || !strings.HasSuffix(stderr, " for a@example.com, b@example.com\n") {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if files, _ := os.ReadDir(drop); len(files) != 1 {
			t.Errorf("%d files in the maildrop, want 1", len(files))
		}
	})
}

// TestServeRefusesUnsafeMaildrop: serve does not start with a maildrop
// that would let local users read or remove each other's mail, and says
// what to do.
func TestServeRefusesUnsafeMaildrop(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	startUpstream(t, dir, upstream.Config{})
	cfg := rigConfig(t, dir, "127.0.0.1:1", relayOpts{}, "")
	drop := filepath.Join(dir, "data", "maildrop")
	if err := os.MkdirAll(drop, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(drop, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var errb bytes.Buffer
	code := run(&env{ctx: ctx, stdin: strings.NewReader(""), stdout: &errb, stderr: &errb}, []string{"serve", "-c", cfg})
	want := "sealrelay: maildrop " + drop + " lacks the set-gid bit (mode 1777): files in it would keep their writers' groups, unreadable by the agent or readable by others; refusing to use it\n" +
		"sealrelay: hint: chown "
	if code != 1 || !strings.Contains(errb.String(), want) || !strings.Contains(errb.String(), "chmod 3733 "+drop) {
		t.Errorf("exit %d:\n%s\nwant 1 and %q", code, errb.String(), want)
	}
}

// TestSendmailConfigSources: -C, else $SEALRELAY_CONFIG, else the default
// path; a default config that is not there means the built-in defaults
// (the maildrop in /var/lib/sealrelay), where a config named by -C or the
// environment that is not there is an error.
func TestSendmailConfigSources(t *testing.T) {
	if _, err := os.Stat(defaultConfig); err == nil {
		t.Skip(defaultConfig + " exists here")
	}
	cfg, drop := smConfig(t, "")
	msg := []byte("Subject: x\n\nx\n")
	t.Setenv("SEALRELAY_CONFIG", cfg)
	if code, stderr := sendmailEnv(t, msg, "-v", "a@example.com"); code != 0 || !strings.Contains(stderr, "queued in "+drop) {
		t.Errorf("with $SEALRELAY_CONFIG: exit %d: %s", code, stderr)
	}
	t.Setenv("SEALRELAY_CONFIG", "/nonexistent/env.toml")
	if code, stderr := sendmailEnv(t, msg, "a@example.com"); code != 66 || !strings.Contains(stderr, "open /nonexistent/env.toml: no such file or directory") {
		t.Errorf("with a missing $SEALRELAY_CONFIG: exit %d: %s", code, stderr)
	}
	if code, stderr := sendmailEnv(t, msg, "-v", "-C", cfg, "a@example.com"); code != 0 || !strings.Contains(stderr, "queued in "+drop) {
		t.Errorf("-C wins over $SEALRELAY_CONFIG: exit %d: %s", code, stderr)
	}
	t.Setenv("SEALRELAY_CONFIG", "")
	code, stderr := sendmailEnv(t, msg, "a@example.com")
	if _, err := os.Stat("/var/lib/sealrelay/maildrop"); err == nil {
		return // a sealrelay is installed here: the message went to it
	}
	if code != 69 || !strings.Contains(stderr, "maildrop /var/lib/sealrelay/maildrop: open: ") {
		t.Errorf("with no config: exit %d: %s", code, stderr)
	}
}
