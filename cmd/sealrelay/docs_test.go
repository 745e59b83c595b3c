package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/internal/docgen"
)

var updateDocs = flag.Bool("update", false, "rewrite the generated documentation (make docs)")

// repoRoot is the repository, seen from this package's directory.
const repoRoot = "../.."

// generatedDoc is a file, or a block in a hand-written file, made from the
// code.
type generatedDoc struct {
	path  string // from the repository's root
	block string // the block's name, or "" for the whole file
	text  []byte
}

// generatedDocs lists everything `make docs` writes. A new manual page is
// one more entry here.
func generatedDocs() []generatedDoc {
	ref := config.Reference()
	fence := func(lang string, b []byte) []byte {
		return append(append([]byte("```"+lang+"\n"), b...), "```\n"...)
	}
	return []generatedDoc{
		{"README.md", "config-example", fence("toml", docgen.ConfigExample(ref))},
		{"README.md", "commands", fence("", []byte(overview()))},
		{"docs/config.md", "", docgen.ConfigMarkdown(ref)},
		{"dist/man/sealrelay.8", "", manPage().Roff()},
		{"dist/man/sealrelay-sendmail.8", "", sendmailManPage().Roff()},
		{"dist/man/sealrelay.toml.5", "", docgen.ConfigPage(ref, defaultConfig).Roff()},
		{"dist/deb/sealrelay.toml", "", packageConfig(ref)},
	}
}

// packageConfig is the example config the Debian package installs as
// /etc/sealrelay/sealrelay.toml: the reference's example, with the steps
// before the first start, and hostname left to its default (the host's
// name) rather than the example's.
func packageConfig(ref []config.Table) []byte {
	head := `# sealrelay.toml: the sealrelay agent's configuration. It holds no secret,
# only where the secrets are. Every key is shown with its default or an
# example; sealrelay.toml(5) describes each. Before the first start:
#
#   sealrelay keygen -o /etc/sealrelay/identity.txt
#   chown sealrelay: /etc/sealrelay/identity.txt
#   (add the public key it prints to the recipient list, and seal the relay
#   password into /etc/sealrelay/credentials.age: sealrelay(8), creds set)
#   set the [[relay]] table below, then
#   runuser -u sealrelay -- sealrelay check -c /etc/sealrelay/sealrelay.toml
#   systemctl enable --now sealrelay

`
	ex := docgen.ConfigExample(ref)
	ex = bytes.Replace(ex, []byte("\nhostname = "), []byte("\n# hostname = "), 1)
	if bytes.HasPrefix(ex, []byte("hostname = ")) {
		ex = append([]byte("# "), ex...)
	}
	return append([]byte(head), ex...)
}

// TestDocsUpToDate: the config reference (docs/config.md, the README's
// example, sealrelay.toml(5)) and the usage text (the README's command
// list, sealrelay(8)) are what the code generates. `make docs` (this test
// with -update) rewrites them.
func TestDocsUpToDate(t *testing.T) {
	for _, g := range generatedDocs() {
		name := g.path
		if g.block != "" {
			name += "#" + g.block
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(repoRoot, g.path)
			var err error
			if g.block != "" {
				err = docgen.CheckBlock(path, g.block, g.text, *updateDocs)
			} else {
				err = docgen.Check(path, g.text, *updateDocs)
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
}

// TestManPagesLint: mandoc finds nothing wrong with the generated manual
// pages, beyond the date they leave out (so that generating them twice
// gives the same bytes).
func TestManPagesLint(t *testing.T) {
	mandoc, err := exec.LookPath("mandoc")
	if err != nil {
		t.Fatal("mandoc is not installed; run `make deps` (tools/deps.sh)")
	}
	for _, g := range generatedDocs() {
		if !strings.HasPrefix(g.path, "dist/man/") {
			continue
		}
		page := filepath.Join(t.TempDir(), filepath.Base(g.path))
		if err := os.WriteFile(page, g.text, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(mandoc, "-Tlint", "-Wall", page).CombinedOutput()
		var problems []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" && !strings.Contains(l, "missing date") {
				problems = append(problems, l)
			}
		}
		if len(problems) > 0 || (err != nil && len(out) == 0) {
			t.Errorf("%s: mandoc -Tlint: %v\n%s", g.path, err, strings.Join(problems, "\n"))
		}
	}
}

// flagToken finds the flags a synopsis names.
var flagToken = regexp.MustCompile(`(?:^|[\s\[|])(--?[a-zA-Z][a-zA-Z0-9-]*)`)

// TestUsageNamesEveryFlag: each command's forms name every flag it
// defines, and define every flag they name, so the synopses cannot drift
// from what the command parses.
func TestUsageNamesEveryFlag(t *testing.T) {
	for _, c := range commands {
		var named []string
		for _, f := range c.forms {
			for _, m := range flagToken.FindAllStringSubmatch(f.args, -1) {
				named = append(named, m[1])
			}
		}
		var defined []string
		for _, o := range c.options() {
			defined = append(defined, o.flag)
			if !slices.Contains(named, o.flag) {
				t.Errorf("%s: flag %s is in no form of the command", c.name, o.flag)
			}
			if o.arg != strings.ToUpper(o.arg) {
				t.Errorf("%s: flag %s shows its argument as %q: name a placeholder in backquotes in its usage", c.name, o.flag, o.arg)
			}
		}
		for _, n := range named {
			if !slices.Contains(defined, n) {
				t.Errorf("%s: a form names %s, which the command does not define", c.name, n)
			}
		}
	}
}

// TestHelp: help and -h print the forms of the command from the table,
// and a usage error prints them after the message.
func TestHelp(t *testing.T) {
	var out bytes.Buffer
	e := &env{ctx: t.Context(), stdin: strings.NewReader(""), stdout: &out, stderr: &out}
	if code := run(e, []string{"help"}); code != 0 {
		t.Errorf("help: exit %d", code)
	}
	for _, c := range commands {
		for _, f := range c.forms {
			if !strings.Contains(out.String(), "\n  "+f.args) {
				t.Errorf("help lacks %q:\n%s", f.args, out.String())
			}
		}
	}
	out.Reset()
	if code := run(e, []string{"creds", "-h"}); code != 0 {
		t.Errorf("creds -h: exit %d", code)
	}
	if !strings.HasPrefix(out.String(), "usage: sealrelay creds set NAME -f FILE") ||
		!strings.Contains(out.String(), "\n       sealrelay creds list --vault -c CONFIG\n") ||
		!strings.Contains(out.String(), "\n  --password-stdin    read the password from standard input\n") {
		t.Errorf("creds -h:\n%s", out.String())
	}
	out.Reset()
	if code := run(e, []string{"queue", "flush"}); code != 2 {
		t.Errorf("queue flush: exit %d, want 2", code)
	}
	want := "sealrelay: unknown queue command \"flush\"\n" + findCommand("queue").usage()
	if out.String() != want {
		t.Errorf("queue flush printed\n%s\nwant\n%s", out.String(), want)
	}
}

// optionItems are c's options as a manual page lists them.
func optionItems(c *command) []docgen.Block {
	var out []docgen.Block
	for _, o := range c.options() {
		tag := docgen.Bold(o.flag)
		if o.arg != "" {
			tag += " " + docgen.Italic(o.arg)
		}
		out = append(out, docgen.Item{Tag: tag, Body: o.usage})
	}
	return out
}

// manPage is sealrelay(8), from the command table.
func manPage() *docgen.Page {
	syn := docgen.Synopsis{Command: "sealrelay"}
	var cmds []docgen.Block
	for _, c := range commands {
		cmds = append(cmds, docgen.Sub(c.name))
		for _, f := range c.forms {
			syn.Forms = append(syn.Forms, f.args)
			cmds = append(cmds, docgen.Item{Tag: docgen.Command("sealrelay " + f.args), Body: f.summary})
		}
		for _, p := range strings.Split(c.about, "\n\n") {
			cmds = append(cmds, docgen.Para(p))
		}
		cmds = append(cmds, optionItems(c)...)
	}
	d := config.Default()
	file := func(path, what string) docgen.Block { return docgen.Item{Tag: docgen.Italic(path), Body: what} }
	return &docgen.Page{
		Name:    "sealrelay",
		Section: "8",
		Manual:  "System Manager's Manual",
		Summary: "SMTP relay agent with sealed relay credentials",
		Source:  "the command table in cmd/sealrelay/usage.go",
		Sections: []docgen.Section{
			{Name: "SYNOPSIS", Blocks: []docgen.Block{syn}},
			{Name: "DESCRIPTION", Blocks: []docgen.Block{
				docgen.Para(`sealrelay accepts mail from local applications over SMTP, spools it
durably, and forwards it to an upstream relay host with SMTP AUTH. The
relay credentials are sealed with age to the keys of the servers that may
use them, or kept in Vault, and are unsealed only in memory.`),
				docgen.Para(`A message is answered 250 only once it is on stable storage. Under
auth = "required" no message is sent to a relay without authenticating,
and a failure to authenticate defers the message; it is never bounced
for that.`),
			}},
			{Name: "COMMANDS", Blocks: cmds},
			{Name: "EXIT STATUS", Blocks: []docgen.Block{
				docgen.Para(`0 on success, 1 on failure, 2 on a usage error. Messages go to
standard error as "sealrelay: ...", with a "sealrelay: hint: ..." line
where the fix is known.`),
			}},
			{Name: "FILES", Blocks: []docgen.Block{
				file(defaultConfig, "the agent's config, unless -c names another; see sealrelay.toml(5)"),
				file(d.Credentials.Identity, "this server's age identity (credentials.identity)"),
				file(d.Credentials.File, "the sealed credential file (credentials.file)"),
				file(d.SpoolDir(), "the spool (in data_dir)"),
				file(agent.ControlSocket(d.DataDir), "the running agent's control socket, for queue retry and delete"),
			}},
			{Name: "SEE ALSO", Blocks: []docgen.Block{
				docgen.Roff(string(docgen.Bold("sealrelay.toml")) + "(5), " + string(docgen.Bold("sealrelay-sendmail")) + "(8), " + string(docgen.Bold("age")) + "(1), " + string(docgen.Bold("age-keygen")) + "(1)"),
			}},
		},
	}
}
