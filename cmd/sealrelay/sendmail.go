package main

import (
	"errors"
	"fmt"
	"io/fs"
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
