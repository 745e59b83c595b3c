package main

import (
	"flag"
	"strings"
)

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
