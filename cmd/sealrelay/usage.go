package main

import (
	"flag"
	"fmt"
	"strings"
)

// command is one subcommand. Its forms, about text and flags are the one
// source of the usage text: `sealrelay help`, each command's -h and usage
// errors, the README's command list and the sealrelay(8) manual page are
// all made from them.
type command struct {
	name  string
	forms []form
	// about describes the command, for -h and the manual; paragraphs are
	// separated by blank lines.
	about string
	// flags defines every flag the command takes on fs, as run does; nil
	// for none.
	flags func(fs *flag.FlagSet)
	// opts lists the options of a command that parses its own command
	// line (sendmail), for help and the manual, when flags is nil.
	opts []option
	run  func(e *env, args []string) error
}

// form is one way to call a command.
type form struct {
	args    string // the command line after "sealrelay "
	summary string // what it does, in a line
}

// commands is every command, in the order help lists them.
var commands []*command

func init() {
	commands = []*command{
		{
			name: "keygen",
			forms: []form{
				{"keygen -o FILE [--pq]", "new server identity (mode 0600); public key on stdout"},
				{"keygen -y FILE", "print the public key of an identity"},
			},
			about: `Makes this server's age identity, the key the relay credentials are
sealed to, or prints the public key of one. The file is never overwritten,
and a secret key is never printed. Add the public key to the recipient
list, a line with a # comment naming the server above it.`,
			flags: func(fs *flag.FlagSet) { keygenFlags(fs) },
			run:   cmdKeygen,
		},
		{
			name: "creds",
			forms: []form{
				{"creds set NAME -f FILE -R RECIPIENTS [-i IDENTITY] --username U [--password-stdin]", "add or replace password entry NAME in the sealed file"},
				{"creds set NAME --vault -c CONFIG [-R RECIPIENTS] [--kind KIND] ...", "write entry NAME, of any kind, to the Vault the config names"},
				{"creds set NAME ... --oauth2 --username U --client-id ID [--provider NAME] [--tenant TENANT] [--token-url URL] [--scope SCOPE]...",
					"an oauth2 entry (... is -f FILE -R RECIPIENTS [-i IDENTITY], or --vault -c CONFIG)"},
				{"creds set NAME ... --oauth2 ... [--secret-stdin | --secret-file FILE | --private-key-file FILE [--certificate FILE] [--key-id KID] | --refresh-token-stdin | --refresh-token-file FILE] [--auth-method METHOD]",
					"where its client secret, private key or refresh token comes from"},
				{"creds set NAME ... --kind certificate --certificate FILE --private-key-file FILE", "a TLS client certificate and its key"},
				{"creds set NAME ... --kind ses --access-key-id ID --region REGION [--secret-stdin | --secret-file FILE]", "Amazon SES keys, from which the SMTP password is derived"},
				{"creds list -f FILE -i IDENTITY", "names, kinds, usernames, generations, settings; never secrets"},
				{"creds list --vault -c CONFIG", "the same for Vault, with versions"},
				{"creds rm NAME -f FILE -R RECIPIENTS -i IDENTITY", "remove entry NAME from the sealed file"},
				{"creds reencrypt -f FILE -R RECIPIENTS -i IDENTITY", "seal the file again, after adding or removing a server"},
			},
			about: `Manages the relay credentials: a file sealed with age to every server on
the recipient list, or entries in the Vault the agent's config names.

An entry has a kind (--kind; --oauth2 is short for --kind oauth2). A
password entry (the default) has --username and a password. An oauth2
entry has --username (the mailbox), --client-id, --provider microsoft365
with --tenant, --provider google, or --token-url, any --scope, and one
of: a client secret; a private key (--private-key-file, with
--certificate for Entra ID) for private_key_jwt; a refresh token
(--refresh-token-stdin or --refresh-token-file), with the client secret
where the provider needs it. A certificate entry has --certificate (the
chain, leaf first) and its private key. An ses entry has
--access-key-id, --region and the secret access key.

A secret never comes from a flag: it is read from standard input
(--password-stdin, --secret-stdin, --refresh-token-stdin), from a file
that only its owner can read (--secret-file, --private-key-file,
--refresh-token-file), or from a prompt that does not echo, asked twice.
Each set gives the entry a new random generation id, which creds list
shows and which says nothing about the secret.

Changing an existing file needs -i, to read the entries it keeps. A server
whose key is not on the recipient list is warned that it cannot read the
file once it is written.`,
			flags: func(fs *flag.FlagSet) { defineCredsFlags(fs, "set"); credsSetFlags(fs) },
			run:   cmdCreds,
		},
		{
			name:  "serve",
			forms: []form{{"serve [-c CONFIG]", "run the agent (SIGHUP reloads credentials, SIGTERM drains)"}},
			about: `Runs the agent. It answers 250 only once a message is on stable storage,
then relays it. SIGHUP reads the credentials again (a bad file keeps the
ones in use); the credential file is also watched. SIGTERM stops accepting
mail, lets the deliveries in progress finish (up to queue.drain_timeout)
and exits 0.`,
			flags: func(fs *flag.FlagSet) { configFlag(fs) },
			run:   cmdServe,
		},
		{
			name:  "check",
			forms: []form{{"check [-c CONFIG]", "validate config, unseal credentials, TLS+AUTH to each relay"}},
			about: `Validates the config, unseals the credentials and, for each relay,
connects, sets up TLS (showing the client certificate if the relay asks
for it) and authenticates, then quits without sending mail. A relay that
trusts the client certificate alone is asked whether it would relay
(MAIL FROM:<>, RCPT TO:<postmaster@HOSTNAME>, QUIT). It prints one line
per relay, ok or what failed, and fails if the config or the credentials
fail or a relay with auth = "required" or a client certificate cannot be
used.`,
			flags: func(fs *flag.FlagSet) { configFlag(fs) },
			run:   cmdCheck,
		},
		{
			name: "queue",
			forms: []form{
				{"queue list [-c CONFIG]", "the spool, like mailq"},
				{"queue retry [ID] [-c CONFIG]", "make one message, or all, due now"},
				{"queue delete ID [-c CONFIG]", "delete a message"},
			},
			about: `retry and delete ask the running agent, through data_dir/control.sock;
with no agent running they act on the spool directly, and then only as
the spool's owner. list works for anyone who can read the spool.`,
			flags: func(fs *flag.FlagSet) { configFlag(fs) },
			run:   cmdQueue,
		},
		{
			name: "sendmail",
			forms: []form{
				{"sendmail [-t] [-i] [-f FROM] [-F NAME] [-C CONFIG] [-v] [RCPT...]", "submit a message as sendmail(1) does; it waits in the maildrop while the agent is down"},
				{"sendmail -bp [-C CONFIG]", "the queue and the maildrop, as mailq"},
			},
			about: `Takes a message on standard input, as /usr/sbin/sendmail does for cron,
PHP's mail(), mail clients and scripts, and leaves it in the maildrop
(data_dir/maildrop), from which the agent takes it into the spool at
once, or when it starts if it is not running. The same binary called
through a link named sendmail is this command, and through one named
mailq is sendmail -bp. It never reads a credential.

The envelope sender of a user other than root and the agent's own user is
login@hostname; -f may give another only where a [[sendmail.allow]] table
of the config allows it. An address without a domain gets the config's
hostname. Also accepted: -oi (as -i), -bm (send: the default), -r FROM (as
-f) and -- before the recipients; -B, -N, -R, -V, -L, -e, -h, -X, -O, -p,
other -o options, -m, -n, -U and -G are ignored, as Postfix ignores them.

The config is -C, else $SEALRELAY_CONFIG, else
/etc/sealrelay/sealrelay.toml; when that default file cannot be read, the
built-in defaults are used.

` + sendmailExitText(),
			opts: []option{
				{flag: "-t", name: "-t", usage: "read the recipients from the To, Cc and Bcc headers too, and remove Bcc"},
				{flag: "-i", name: "-i", usage: "a line with a single dot does not end the message"},
				{flag: "-f", arg: "FROM", name: "-f FROM", usage: "the envelope sender, if the config allows it; <> is the null sender"},
				{flag: "-F", arg: "NAME", name: "-F NAME", usage: "the full name of the From header added to a message without one"},
				{flag: "-C", arg: "CONFIG", name: "-C CONFIG", usage: "the agent's config file (default $SEALRELAY_CONFIG, else " + defaultConfig + ")"},
				{flag: "-v", name: "-v", usage: "say where the message was left"},
				{flag: "-bp", name: "-bp", usage: "list the queue and the maildrop instead (mailq)"},
			},
			run: cmdSendmail,
		},
		{
			name:  "demo",
			forms: []form{{"demo [--keep] [-v]", "everything on loopback in a temp dir, one message relayed"}},
			about: `Runs the whole path on loopback in a temporary directory: a fresh key, a
sealed credential, an upstream that demands STARTTLS and AUTH, the agent,
and one message, printing each step. It succeeds when the upstream
received the message on an authenticated TLS session.`,
			flags: func(fs *flag.FlagSet) { demoFlags(fs) },
			run:   cmdDemo,
		},
		{
			name:  "version",
			forms: []form{{"version", "print the version"}},
			about: `Prints the version of sealrelay.`,
			run:   cmdVersion,
		},
	}
}

// findCommand returns the command called name, or nil.
func findCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// overview is what `sealrelay help` prints: every form, with its summary.
func overview() string {
	const col = 30 // where summaries start
	var b strings.Builder
	b.WriteString("usage: sealrelay COMMAND [ARGS]\n\n")
	for _, c := range commands {
		for _, f := range c.forms {
			if len(f.args)+4 > col {
				fmt.Fprintf(&b, "  %s\n%s%s\n", f.args, strings.Repeat(" ", col), f.summary)
			} else {
				fmt.Fprintf(&b, "  %-*s%s\n", col-2, f.args, f.summary)
			}
		}
	}
	b.WriteString("\nsealrelay COMMAND -h shows what a command does and its options.\n")
	return b.String()
}

// usage is what a usage error prints after the message: the command's
// forms.
func (c *command) usage() string {
	var b strings.Builder
	for i, f := range c.forms {
		lead := "usage: "
		if i > 0 {
			lead = "       "
		}
		b.WriteString(lead + "sealrelay " + f.args + "\n")
	}
	return b.String()
}

// help is what -h prints: the forms, what the command does, and its
// options.
func (c *command) help() string {
	var b strings.Builder
	b.WriteString(c.usage())
	for _, p := range strings.Split(c.about, "\n\n") {
		b.WriteString("\n" + p + "\n")
	}
	opts := c.options()
	if len(opts) > 0 {
		b.WriteString("\noptions:\n")
	}
	const col = 20 // where the option's text starts
	for _, o := range opts {
		if len(o.name) >= col-1 {
			fmt.Fprintf(&b, "  %s\n  %*s%s\n", o.name, col, "", o.usage)
		} else {
			fmt.Fprintf(&b, "  %-*s%s\n", col, o.name, o.usage)
		}
	}
	return b.String()
}

// option is a flag as help and the manual show it.
type option struct {
	flag  string // -o, --pq
	arg   string // FILE, or "" for a boolean flag
	name  string // "-o FILE"
	usage string // with its default, where it has one
}

// options lists the command's flags, in the order of their names.
func (c *command) options() []option {
	if c.flags == nil {
		return c.opts
	}
	fs := newFlags(c.name)
	c.flags(fs)
	var out []option
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			arg = ""
		}
		o := option{flag: "-" + f.Name, arg: arg, usage: usage}
		if len(f.Name) > 1 {
			o.flag = "--" + f.Name
		}
		o.name = strings.TrimSpace(o.flag + " " + arg)
		if f.DefValue != "" && f.DefValue != "false" {
			o.usage += " (default " + f.DefValue + ")"
		}
		out = append(out, o)
	})
	return out
}
