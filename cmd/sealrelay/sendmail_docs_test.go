package main

import (
	"fmt"
	"strings"

	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/internal/docgen"
)

// sendmailManPage is sealrelay-sendmail(8), from the sendmail entry of the
// command table and its exit statuses. A package may install it as
// sendmail(8) too, beside the sendmail link.
func sendmailManPage() *docgen.Page {
	c := findCommand("sendmail")
	var forms []string
	for _, f := range c.forms {
		forms = append(forms, strings.TrimPrefix(f.args, "sendmail "))
	}
	var desc []docgen.Block
	paras := strings.Split(c.about, "\n\n")
	for _, p := range paras[:len(paras)-1] { // the last is the exit statuses
		desc = append(desc, docgen.Para(p))
	}
	var exits []docgen.Block
	for _, x := range sendmailExits {
		exits = append(exits, docgen.Item{Tag: docgen.Bold(fmt.Sprint(x.code)), Body: x.what})
	}
	d := config.Default()
	file := func(path, what string) docgen.Block { return docgen.Item{Tag: docgen.Italic(path), Body: what} }
	return &docgen.Page{
		Name:    "sealrelay-sendmail",
		Section: "8",
		Manual:  "System Manager's Manual",
		Summary: "sendmail-compatible mail submission to sealrelay",
		Source:  "the sendmail entry of the command table in cmd/sealrelay",
		Sections: []docgen.Section{
			{Name: "SYNOPSIS", Blocks: []docgen.Block{
				docgen.Synopsis{Command: "sendmail", Forms: forms},
				docgen.Synopsis{Command: "mailq", Forms: []string{"[-C CONFIG]"}},
				docgen.Synopsis{Command: "sealrelay", Forms: []string{c.forms[0].args, c.forms[1].args}},
			}},
			{Name: "DESCRIPTION", Blocks: desc},
			{Name: "OPTIONS", Blocks: optionItems(c)},
			{Name: "THE MAILDROP", Blocks: []docgen.Block{
				docgen.Para(`The maildrop belongs to the agent's user and group, mode 3733: set-gid,
so that each file in it gets the agent's group; sticky, so that only a
file's owner and the agent may remove or rename it; writable and
searchable by all, listable by the agent's group only. sendmail writes
each message to a file of its own, under 128 random bits, with O_EXCL and
O_NOFOLLOW, mode 0640, fsynced and renamed into place, and returns 0 only
then. The agent reads it as its owner's mail, puts it into its spool,
and removes it. No user can read, change or remove another's file.`),
				docgen.Para(`Local users other than root and the agent's user can reach the maildrop
only if data_dir is searchable by others (mode 0711); the agent refuses
to start with a maildrop of another owner or group, without the set-gid
bit, listable by others, or writable without the sticky bit. A file it
cannot take is renamed bad.NAME in the maildrop and logged.`),
			}},
			{Name: "INSTALLING", Blocks: []docgen.Block{
				docgen.Para(`Make sealrelay the system's sendmail with links to the binary, as
root (or through update-alternatives where the system has it):`),
				docgen.Verbatim("ln -s /usr/bin/sealrelay /usr/sbin/sendmail\nln -s /usr/bin/sealrelay /usr/bin/mailq\nchmod 0711 /var/lib/sealrelay"),
			}},
			{Name: "EXIT STATUS", Blocks: exits},
			{Name: "FILES", Blocks: []docgen.Block{
				file(defaultConfig, "the agent's config, unless -C or $SEALRELAY_CONFIG names another"),
				file(d.MaildropDir(), "the maildrop (in data_dir)"),
			}},
			{Name: "SEE ALSO", Blocks: []docgen.Block{
				docgen.Roff(string(docgen.Bold("sealrelay")) + "(8), " + string(docgen.Bold("sealrelay.toml")) + "(5)"),
			}},
		},
	}
}
