package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

// cmdCreds manages the sealed credential file.
func cmdCreds(e *env, args []string) error {
	if len(args) == 0 {
		return usagef("creds needs a subcommand: set, list, rm, reencrypt or rotate")
	}
	switch args[0] {
	case "set":
		return credsSet(e, args[1:])
	case "list":
		return credsList(e, args[1:])
	case "rm":
		return credsRm(e, args[1:])
	case "reencrypt":
		return credsReencrypt(e, args[1:])
	case "rotate":
		return credsRotate(e, args[1:])
	case "-h", "-help", "--help", "help":
		return flag.ErrHelp
	default:
		return usagef("unknown creds subcommand %q (want set, list, rm, reencrypt or rotate)", args[0])
	}
}

// credsFlags are the flags the creds subcommands share.
type credsFlags struct {
	sub                        string
	file, recipients, identity *string
	vault                      *bool   // set and list: act on Vault instead of a file
	config                     *string // with --vault: the agent config naming Vault
}

func newCredsFlags(sub string) (*flag.FlagSet, *credsFlags) {
	flags := newFlags("creds " + sub)
	return flags, defineCredsFlags(flags, sub)
}

// defineCredsFlags defines the flags every creds subcommand takes.
func defineCredsFlags(flags *flag.FlagSet, sub string) *credsFlags {
	return &credsFlags{
		sub:        sub,
		file:       flags.String("f", "", "the sealed credential file `FILE`"),
		recipients: flags.String("R", "", "the recipient list `RECIPIENTS`: the servers the file is sealed to"),
		identity:   flags.String("i", "", "this server's identity file `IDENTITY` (or credential:NAME, a systemd credential)"),
		vault:      flags.Bool("vault", false, "act on the Vault entries the config names"),
		config:     flags.String("c", "", "the agent's config file `CONFIG`, which names the Vault (with --vault)"),
	}
}

// require checks that the named flags ("f", "R", "i") were given.
func (c *credsFlags) require(names ...string) error {
	for _, n := range names {
		var v, what string
		switch n {
		case "f":
			v, what = *c.file, "-f FILE"
		case "R":
			v, what = *c.recipients, "-R RECIPIENTS"
		case "i":
			v, what = *c.identity, "-i IDENTITY"
		}
		if v == "" {
			return usagef("creds %s needs %s", c.sub, what)
		}
	}
	return nil
}

// entryName checks the single positional argument of set, rm and rotate.
func entryName(sub string, pos []string) (string, error) {
	if len(pos) != 1 {
		return "", usagef("creds %s needs exactly one entry NAME, got %d arguments", sub, len(pos))
	}
	if !agefile.ValidName(pos[0]) {
		return "", usagef("entry name %q may hold only A-Z a-z 0-9 . _ -", pos[0])
	}
	return pos[0], nil
}

// noArgs refuses positional arguments for list and reencrypt.
func noArgs(sub string, pos []string) error {
	if len(pos) > 0 {
		return usagef("creds %s takes no arguments, got %q", sub, pos[0])
	}
	return nil
}

// hinted adds a hint to an error.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }
func (h *hinted) Hint() string  { return h.hint }

// readFile decrypts the credential file, with a hint if it is missing.
func readFile(path string, id *keys.Identity) ([]secrets.Credential, error) {
	creds, err := agefile.Read(path, id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &hinted{err, "create it with `sealrelay creds set NAME -f " + path + " -R RECIPIENTS --username U`"}
	}
	return creds, err
}

// loadKeys loads the recipient list and the identity, either of which may be
// "" (not needed), and warns when this server is not on the list: after the
// write it would no longer be able to read the file.
func loadKeys(e *env, c *credsFlags) (*keys.RecipientList, *keys.Identity, error) {
	var rl *keys.RecipientList
	var id *keys.Identity
	var err error
	if *c.recipients != "" {
		if rl, err = keys.LoadRecipients(*c.recipients); err != nil {
			return nil, nil, err
		}
	}
	if *c.identity != "" {
		if id, err = keys.LoadRef(*c.identity); err != nil {
			return nil, nil, err
		}
	}
	if rl != nil && id != nil && !slices.ContainsFunc(id.PublicKeys(), rl.Contains) {
		fmt.Fprintf(e.stderr, "sealrelay: warning: this server's key %s is not in %s; once %s is written, this server can no longer read it\n",
			id.PublicKey(), rl.File, *c.file)
	}
	return rl, id, nil
}

// describe names the recipients for a message.
func describe(rl *keys.RecipientList) string { return rl.Describe() }

func entries(n int) string {
	if n == 1 {
		return "1 entry"
	}
	return fmt.Sprintf("%d entries", n)
}

func credsSet(e *env, args []string) error {
	flags, c := newCredsFlags("set")
	sf := credsSetFlags(flags)
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	name, err := entryName("set", pos)
	if err != nil {
		return err
	}
	if *c.vault {
		req, err := sf.request(flags, name)
		if err != nil {
			return err
		}
		return credsSetVault(e, c, req)
	}
	if err := c.require("f", "R"); err != nil {
		return err
	}
	req, err := sf.request(flags, name)
	if err != nil {
		return err
	}
	_, statErr := os.Stat(*c.file)
	exists := statErr == nil
	if exists && *c.identity == "" {
		return usagef("%s exists: give -i IDENTITY so that its other entries can be read and kept", *c.file)
	}
	if statErr != nil && !errors.Is(statErr, fs.ErrNotExist) {
		return fmt.Errorf("credential file: %w", statErr)
	}
	rl, id, err := loadKeys(e, c)
	if err != nil {
		return err
	}
	var creds []secrets.Credential
	if exists {
		if creds, err = readFile(*c.file, id); err != nil {
			return err
		}
	}
	cred, err := req.build(e)
	if err != nil {
		return err
	}
	verb := "added"
	if i := slices.IndexFunc(creds, func(x secrets.Credential) bool { return x.Name == name }); i >= 0 {
		creds[i], verb = cred, "updated"
	} else {
		creds = append(creds, cred)
	}
	if err := agefile.Write(*c.file, creds, rl); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "sealrelay: %s entry %q (%s) in %s, sealed to %s\n", verb, name, summary(cred), *c.file, describe(rl))
	return nil
}

func credsList(e *env, args []string) error {
	flags, c := newCredsFlags("list")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if err := noArgs("list", pos); err != nil {
		return err
	}
	if *c.vault {
		return credsListVault(e, c)
	}
	if *c.recipients != "" {
		return usagef("creds list reads the file: it takes -i IDENTITY, not -R")
	}
	if err := c.require("f", "i"); err != nil {
		return err
	}
	_, id, err := loadKeys(e, c)
	if err != nil {
		return err
	}
	creds, err := readFile(*c.file, id)
	if err != nil {
		return err
	}
	if len(creds) == 0 {
		fmt.Fprintf(e.stderr, "sealrelay: %s holds no entries\n", *c.file)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tUSERNAME\tGENERATION\tDETAILS")
	for _, cr := range creds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cr.Name, cr.Kind(), dash(cr.Username), dash(cr.Generation), details(cr))
		warn(e, cr)
	}
	return tw.Flush()
}

func credsRm(e *env, args []string) error {
	flags, c := newCredsFlags("rm")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	name, err := entryName("rm", pos)
	if err != nil {
		return err
	}
	creds, rl, err := rewrite(e, c, func(creds []secrets.Credential) ([]secrets.Credential, error) {
		i := slices.IndexFunc(creds, func(x secrets.Credential) bool { return x.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("%s has no entry %q", *c.file, name)
		}
		return slices.Delete(creds, i, i+1), nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "sealrelay: removed entry %q from %s; %s left, sealed to %s\n", name, *c.file, entries(len(creds)), describe(rl))
	return nil
}

// rewrite reads the credential file with -i, lets edit change its entries,
// and seals the result to -R, as rm and reencrypt do.
func rewrite(e *env, c *credsFlags, edit func([]secrets.Credential) ([]secrets.Credential, error)) ([]secrets.Credential, *keys.RecipientList, error) {
	if err := c.require("f", "R", "i"); err != nil {
		return nil, nil, err
	}
	rl, id, err := loadKeys(e, c)
	if err != nil {
		return nil, nil, err
	}
	creds, err := readFile(*c.file, id)
	if err != nil {
		return nil, nil, err
	}
	if creds, err = edit(creds); err != nil {
		return nil, nil, err
	}
	if err := agefile.Write(*c.file, creds, rl); err != nil {
		return nil, nil, err
	}
	return creds, rl, nil
}

func credsReencrypt(e *env, args []string) error {
	flags, c := newCredsFlags("reencrypt")
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if err := noArgs("reencrypt", pos); err != nil {
		return err
	}
	creds, rl, err := rewrite(e, c, func(creds []secrets.Credential) ([]secrets.Credential, error) { return creds, nil })
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "sealrelay: re-encrypted %s in %s to %s\n", entries(len(creds)), *c.file, describe(rl))
	return nil
}
