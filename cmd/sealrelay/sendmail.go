package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/agent/maildrop"
	"github.com/sealrelay/sealrelay/agent/spool"
)

// Exit statuses of sendmail, from sysexits.h, as sendmail(1) programs
// exit and their callers (cron, PHP, mail clients) read them.
const (
	exUsage       = 64 // a mistake in the command line
	exDataErr     = 65 // the message or its headers
	exNoInput     = 66 // the config given cannot be read
	exNoUser      = 67 // a bad recipient address, or a user without a name
	exUnavailable = 69 // no maildrop: the agent was never started
	exCantCreat   = 73 // the message file cannot be created
	exIOErr       = 74 // reading the message or writing its file failed
	exTempFail    = 75 // the disk is full: try again later
	exNoPerm      = 77 // the sender is not allowed, or the maildrop is closed
	exConfig      = 78 // the config is wrong
)

// sendmailExits says what each exit status of sendmail means, for its
// help and its manual page.
var sendmailExits = []struct {
	code int
	what string
}{
	{0, "the message is in the maildrop"},
	{exUsage, "a mistake in the command line, or no recipients"},
	{exDataErr, "a bad message or header (a bare CR, too large, too many recipients, an address -t cannot read)"},
	{exNoInput, "the config named by -C or $SEALRELAY_CONFIG cannot be read"},
	{exNoUser, "a bad recipient address, or a user without a name"},
	{exUnavailable, "no maildrop: the agent has never run with this config"},
	{exCantCreat, "the message file cannot be created"},
	{exIOErr, "reading the message or writing its file failed"},
	{exTempFail, "the disk is full, or the quota used up: try again later"},
	{exNoPerm, "the sender is not allowed, or the maildrop is closed to this user"},
	{exConfig, "the config is wrong"},
}

// sendmailExitText lists the exit statuses, one a line.
func sendmailExitText() string {
	var parts []string
	for _, x := range sendmailExits {
		parts = append(parts, fmt.Sprintf("%d %s", x.code, x.what))
	}
	return "Exit status, from sysexits.h:\n" + strings.Join(parts, ";\n") + "."
}

// exitError is an error with the exit status it ends the command with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

func exitf(code int, format string, args ...any) error {
	return &exitError{code, fmt.Errorf(format, args...)}
}

// sendmailArgs is a sendmail command line.
type sendmailArgs struct {
	extract  bool    // -t: recipients from To, Cc and Bcc; Bcc removed
	dots     bool    // without -i: a line with a single dot ends the message
	from     *string // -f or -r
	fullName string  // -F
	config   string  // -C
	verbose  bool    // -v
	list     bool    // -bp, or called as mailq
	rcpts    []string
}

// sendmailWithArg are the options that take an argument, attached
// (-fme@example.com) or as the next word; the others are flags that may
// be grouped (-ti).
const sendmailWithArg = "BCFLNORVXbefhopqr"

// parseSendmailArgs reads a sendmail command line as Postfix's sendmail
// does: options up to the first word that is not one, or "--", then
// recipients. Options sendmail programs pass that mean nothing here (-B,
// -N, -R, -V, -L, -e, -h, -X, -O, -p, most -o, -m, -n, -U, -G) are
// ignored, as Postfix ignores them.
func parseSendmailArgs(args []string) (*sendmailArgs, error) {
	a := &sendmailArgs{dots: true}
	i := 0
	for ; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			i++
			break
		}
		if arg == "--help" || arg == "-help" {
			return nil, flag.ErrHelp
		}
		if len(arg) < 2 || arg[0] != '-' {
			break
		}
		for j := 1; j < len(arg); j++ {
			c := arg[j]
			if !strings.ContainsRune(sendmailWithArg, rune(c)) {
				switch c {
				case 't':
					a.extract = true
				case 'i':
					a.dots = false
				case 'v':
					a.verbose = true
				case 'm', 'n', 'U', 'G', 'x':
				default:
					return nil, &exitError{exUsage, usagef("unknown option -%c", c)}
				}
				continue
			}
			val := arg[j+1:]
			if val == "" {
				if i+1 == len(args) {
					return nil, &exitError{exUsage, usagef("option -%c needs an argument", c)}
				}
				i++
				val = args[i]
			}
			if err := a.option(c, val); err != nil {
				return nil, err
			}
			break
		}
	}
	a.rcpts = append(a.rcpts, args[i:]...)
	return a, nil
}

// option applies an option that takes an argument.
func (a *sendmailArgs) option(c byte, val string) error {
	switch c {
	case 'f', 'r':
		from := strings.TrimSuffix(strings.TrimPrefix(val, "<"), ">")
		a.from = &from
	case 'F':
		a.fullName = val
	case 'C':
		a.config = val
	case 'o':
		if val == "i" {
			a.dots = false // -oi is -i; other -o options are ignored
		}
	case 'b':
		switch val {
		case "m":
		case "p":
			a.list = true
		case "s":
			return &exitError{exUsage, usagef("-bs (SMTP on standard input) is not supported: speak SMTP to the agent's listener instead")}
		default:
			return &exitError{exUsage, usagef("-b%s is not supported: only -bm (send, the default) and -bp (list the queue)", val)}
		}
	case 'q':
		return &exitError{exUsage, usagef("-q is not supported: sealrelay queue retry makes queued mail due now")}
	}
	return nil
}

// cmdSendmail is sendmail(1): it leaves the message on standard input in
// the maildrop, where the agent takes it in now or when it starts.
func cmdSendmail(e *env, args []string) error {
	a, err := parseSendmailArgs(args)
	if err != nil {
		return err
	}
	cfg, cfgRead, err := sendmailConfig(a.config)
	if err != nil {
		return err
	}
	if a.list {
		return sendmailList(e, cfg)
	}
	if err := checkFullName(a.fullName); err != nil {
		return err
	}
	data, err := readMessage(e.stdin, cfg.Listen.MaxMessageBytes)
	if err != nil {
		return err
	}
	msg, err := canonical(data, a.dots)
	if err != nil {
		return err
	}
	rcpts, err := checkRecipients(cfg, a.rcpts, exNoUser)
	if err != nil {
		return err
	}
	if a.extract {
		var found []string
		msg, found, err = extractRecipients(msg)
		if err != nil {
			return err
		}
		more, err := checkRecipients(cfg, found, exDataErr)
		if err != nil {
			return err
		}
		for _, r := range more {
			if !slices.Contains(rcpts, r) {
				rcpts = append(rcpts, r)
			}
		}
	}
	switch {
	case len(rcpts) == 0:
		return &exitError{exUsage, usagef("no recipients: name them after the options, or give -t and To, Cc or Bcc headers")}
	case len(rcpts) > cfg.Listen.MaxRecipients:
		return exitf(exDataErr, "%d recipients, more than the %d of listen.max_recipients", len(rcpts), cfg.Listen.MaxRecipients)
	}
	if err := checkSender(cfg, cfgRead, a.from); err != nil {
		return err
	}
	name, err := maildrop.Submit(cfg.MaildropDir(), maildrop.Envelope{Sender: a.from, FullName: a.fullName, Recipients: rcpts}, msg)
	if err != nil {
		return &exitError{submitStatus(err), err}
	}
	if a.verbose {
		fmt.Fprintf(e.stderr, "sealrelay: queued in %s as %s for %s\n", cfg.MaildropDir(), name, strings.Join(rcpts, ", "))
	}
	return nil
}

// sendmailConfig reads the config from -C, else $SEALRELAY_CONFIG, else
// the default path. A config named by -C or the environment must be
// readable; the default one, which may be closed to other users, falls
// back to the built-in defaults (data_dir /var/lib/sealrelay): the agent
// applies its own config to what it takes. cfgRead says whether a file
// was read.
func sendmailConfig(flagPath string) (*config.Config, bool, error) {
	path, named := flagPath, true
	if path == "" {
		path = os.Getenv("SEALRELAY_CONFIG")
	}
	if path == "" {
		path, named = defaultConfig, false
	}
	cfg, err := config.LoadSubmission(path)
	var ce *config.Error
	switch {
	case err == nil:
		return cfg, true, nil
	case errors.As(err, &ce):
		return nil, false, &exitError{exConfig, err}
	case named:
		return nil, false, &exitError{exNoInput, err}
	}
	return config.Default(), false, nil
}

// sendmailList is -bp (mailq): the spool, as queue list shows it, and the
// messages still in the maildrop.
func sendmailList(e *env, cfg *config.Config) error {
	items, err := spool.ReadDir(cfg.SpoolDir())
	if err != nil {
		code := exUnavailable
		if errors.Is(err, fs.ErrPermission) {
			code = exNoPerm
		}
		return &exitError{code, err}
	}
	printQueue(e.stdout, items, time.Now())
	if ents, err := os.ReadDir(cfg.MaildropDir()); err == nil {
		n := 0
		for _, de := range ents {
			if strings.HasPrefix(de.Name(), "m.") {
				n++
			}
		}
		if n > 0 {
			fmt.Fprintf(e.stdout, "%d message(s) in the maildrop, not yet taken by the agent\n", n)
		}
	}
	return nil
}

func checkFullName(name string) error {
	if len(name) > 256 || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return &exitError{exUsage, usagef("-F: a full name of at most 256 bytes without control characters")}
	}
	return nil
}

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

// checkRecipients checks each address as the agent will (a local name
// gets the host name), failing with code.
func checkRecipients(cfg *config.Config, rcpts []string, code int) ([]string, error) {
	var out []string
	for _, r := range rcpts {
		r = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(r), "<"), ">")
		q := r
		if !strings.Contains(q, "@") {
			q += "@" + cfg.Hostname
		}
		if _, err := agent.CheckAddress(q, true); err != nil {
			return nil, exitf(code, "recipient %q: %v", r, err)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// checkSender checks -f's address and, when the config was read, that the
// policy lets this user give it; the agent checks again.
func checkSender(cfg *config.Config, cfgRead bool, from *string) error {
	if from != nil && *from != "" {
		q := *from
		if !strings.Contains(q, "@") {
			q += "@" + cfg.Hostname
		}
		if _, err := agent.CheckAddress(q, false); err != nil {
			return &exitError{exUsage, usagef("-f %q: %v", *from, err)}
		}
	}
	u, err := maildrop.LookupUser(os.Getuid())
	if err != nil {
		return exitf(exNoUser, "%v: the agent could not tell whose mail this is", err)
	}
	if !cfgRead {
		return nil
	}
	pol, err := agent.SendmailPolicy(cfg, -1)
	if err != nil {
		return &exitError{exConfig, err}
	}
	// The agent's own user may give any sender; sendmail does not know
	// which it is, so it leaves that user's case to the agent.
	if _, ok := pol.Sender(u, from); !ok && !agentUser(cfg, u.UID) {
		return &exitError{exNoPerm, &senderError{user: u.Name, from: *from, own: pol.Default(u), file: cfg.File}}
	}
	return nil
}

// agentUser reports whether uid owns data_dir, as the agent's user does.
func agentUser(cfg *config.Config, uid int) bool {
	var st unix.Stat_t
	return unix.Stat(cfg.DataDir, &st) == nil && int(st.Uid) == uid
}

// senderError is a -f sender the policy does not allow this user.
type senderError struct{ user, from, own, file string }

func (e *senderError) Error() string {
	return fmt.Sprintf("user %s may not send as %q", e.user, e.from)
}

func (e *senderError) Hint() string {
	return fmt.Sprintf("without -f the sender is %s; a [[sendmail.allow]] table in %s can allow others", e.own, e.file)
}

// submitStatus is the exit status for a failure to leave the message in
// the maildrop.
func submitStatus(err error) int {
	var se *maildrop.SubmitError
	errors.As(err, &se)
	switch {
	case errors.Is(err, fs.ErrPermission):
		return exNoPerm
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return exTempFail
	case se != nil && se.Stage == "open":
		return exUnavailable
	case se != nil && se.Stage == "create":
		return exCantCreat
	}
	return exIOErr
}

// argv0Args rewrites the command line of the binary called through a
// link named sendmail or mailq into sealrelay's own.
func argv0Args(argv []string) []string {
	switch filepath.Base(argv[0]) {
	case "sendmail":
		return append([]string{"sendmail"}, argv[1:]...)
	case "mailq":
		return append([]string{"sendmail", "-bp"}, argv[1:]...)
	}
	return argv[1:]
}
