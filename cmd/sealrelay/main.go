// Command sealrelay is an SMTP relay agent: it accepts mail from local
// applications, spools it durably, and forwards it to an upstream relay host
// with SMTP AUTH, using relay credentials sealed with age to this server's
// key or kept in Vault.
//
// `sealrelay help` lists the commands; their text lives in usage.go, which
// the README's command list and the sealrelay(8) manual page are generated
// from. Exit status: 0 success, 1 failure, 2 usage error; sendmail exits
// with sysexits codes, as sendmail(1) does. Called through a link named
// sendmail or mailq, the binary is `sealrelay sendmail` (or its -bp).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sealrelay/sealrelay/internal/hint"
)

// env is what a command may touch: its standard streams and the process
// context. Commands never use os.Stdin/Stdout/Stderr directly, so tests can
// run them in-process.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func main() {
	// First, before any command can read a key, a token or a password.
	disableCoreDumps()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(&env{ctx: ctx, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}, argv0Args(os.Args))
	stop()
	os.Exit(code)
}

// disableCoreDumps keeps secrets out of core files, for every command (a
// crash of check, creds, demo or keygen would otherwise dump the unsealed
// password or the secret key): no core dumps (RLIMIT_CORE 0, soft and
// hard), and the process is not dumpable, which also keeps other processes
// of the same user from reading its memory through ptrace or /proc. It
// runs in main, not in run, so tests that call run in-process do not
// change their own process.
func disableCoreDumps() {
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}) //nolint:errcheck // lowering a limit cannot fail
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)                   //nolint:errcheck // best effort
}

// run executes one command line and returns the exit status.
func run(e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stderr, overview())
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd := findCommand(args[0])
	if cmd == nil {
		fmt.Fprintf(e.stderr, "sealrelay: unknown command %q\n", args[0])
		fmt.Fprint(e.stderr, overview())
		return 2
	}
	err := cmd.run(e, args[1:])
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(e.stderr, cmd.help())
		return 0
	}
	printError(e.stderr, err)
	var ue *usageError
	usage := errors.As(err, &ue)
	if usage {
		fmt.Fprint(e.stderr, cmd.usage())
	}
	// A command with exit statuses of its own (sendmail's sysexits).
	var xc interface{ ExitCode() int }
	if errors.As(err, &xc) {
		return xc.ExitCode()
	}
	if usage {
		return 2
	}
	return 1
}

// printError writes err as "sealrelay: ..." and every hint found in its
// chain as "sealrelay: hint: ...".
func printError(w io.Writer, err error) {
	fmt.Fprintf(w, "sealrelay: %v\n", err)
	for _, h := range hint.All(err) {
		fmt.Fprintf(w, "sealrelay: hint: %s\n", h)
	}
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// newFlags returns a FlagSet that reports errors instead of exiting and
// prints nothing itself.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses args allowing flags and positional arguments in any
// order ("creds set NAME -f FILE" as well as "creds set -f FILE NAME"), and
// returns the positional ones. A bad flag is a usage error.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{msg: err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// version is set at link time by packagers (-ldflags "-X main.version=V",
// as dist/deb/build.sh does); empty, the module's version is printed.
var version string

func cmdVersion(e *env, args []string) error {
	if len(args) != 0 {
		return usagef("version takes no arguments")
	}
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	if version != "" {
		v = version
	}
	fmt.Fprintf(e.stdout, "sealrelay %s\n", v)
	return nil
}
