package docgen

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/sealrelay/sealrelay/agent/config"
)

// configSource names where the config reference comes from.
const configSource = "agent/config (the struct tags of Config, and Default)"

// commentColumn is where the comments of the example start, as in a
// hand-written config file.
const commentColumn = 36

// ConfigExample writes a sealrelay.toml holding every key: its default, or
// a sample value where it has none or it depends on the host. Each key has
// the first sentence of its description as a comment. A table marked
// Commented (an optional feature whose sample values would act) is
// written commented out.
func ConfigExample(tables []config.Table) []byte {
	var b strings.Builder
	for i, t := range tables {
		off := ""
		if t.Commented {
			off = "# "
		}
		if t.Name != "" {
			if i > 0 {
				b.WriteString("\n")
			}
			comment(&b, off+t.Header(), firstSentence(t.Doc))
		}
		for _, k := range t.Keys {
			comment(&b, off+k.Name+" = "+k.Example, firstSentence(k.Doc))
		}
	}
	return []byte(b.String())
}

// comment writes line with a comment after it at commentColumn, wrapped
// onto lines of their own, at the same column, after 104 columns.
func comment(b *strings.Builder, line, text string) {
	pad := func(s string) string {
		if len(s) < commentColumn {
			return s + strings.Repeat(" ", commentColumn-len(s))
		}
		return s + "  "
	}
	cur := pad(line) + "#"
	for _, w := range strings.Fields(text) {
		if len(cur)+1+len(w) > 104 && !strings.HasSuffix(cur, "#") {
			b.WriteString(cur + "\n")
			cur = strings.Repeat(" ", commentColumn) + "#"
		}
		cur += " " + w
	}
	b.WriteString(cur + "\n")
}

// sentenceEnd is the end of a sentence: a full stop before a capital.
var sentenceEnd = regexp.MustCompile(`\. +[A-Z]`)

// firstSentence returns the first sentence of s.
func firstSentence(s string) string {
	if loc := sentenceEnd.FindStringIndex(s); loc != nil {
		return s[:loc[0]+1]
	}
	return s
}

// ConfigMarkdown writes docs/config.md: every key of sealrelay.toml, table
// by table, with its type, default and description, then the example.
func ConfigMarkdown(tables []config.Table) []byte {
	var b strings.Builder
	b.WriteString("# sealrelay.toml\n\n")
	b.WriteString("<!-- Generated from " + configSource + " by `make docs`; do not edit. -->\n\n")
	for _, p := range paragraphs(config.About) {
		b.WriteString(p + "\n\n")
	}
	b.WriteString("The manual page sealrelay.toml(5) says the same; [the example](#example) holds every key.\n")
	for _, t := range tables {
		if t.Name == "" {
			b.WriteString("\n## Top level\n\n")
		} else {
			fmt.Fprintf(&b, "\n## `%s`\n\n%s\n\n", t.Header(), mdEscape(t.Doc))
		}
		b.WriteString("| Key | Type | Default | Description |\n|---|---|---|---|\n")
		for _, k := range t.Keys {
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", k.Name, k.Type, mdDefault(k), mdEscape(k.Doc))
		}
	}
	b.WriteString("\n## Example\n\n```toml\n")
	b.Write(ConfigExample(tables))
	b.WriteString("```\n")
	return []byte(b.String())
}

// mdDefault writes a key's default for a Markdown table.
func mdDefault(k config.Key) string {
	if k.Computed {
		return mdEscape(k.Default)
	}
	s := "`" + k.Default + "`"
	if n := k.Note(); n != "" {
		s += " (" + n + ")"
	}
	return s
}

// mdEscape keeps text from being read as Markdown or HTML in a table.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "<", `\<`, "*", `\*`).Replace(s)
}

// ConfigPage is sealrelay.toml(5); path is where the file is looked for.
func ConfigPage(tables []config.Table, path string) *Page {
	var desc []Block
	for _, p := range paragraphs(config.About) {
		desc = append(desc, Para(p))
	}
	var keys []Block
	for _, t := range tables {
		if t.Name == "" {
			keys = append(keys, Sub("Top level"))
		} else {
			keys = append(keys, Sub(t.Header()), Para(t.Doc))
		}
		for _, k := range t.Keys {
			def := "default: " + k.Default
			if n := k.Note(); n != "" {
				def += " (" + n + ")"
			}
			keys = append(keys, Item{Tag: Bold(k.Name) + Roff(" ("+Escape(k.Type+"; "+def)+")"), Body: k.Doc})
		}
	}
	return &Page{
		Name:    "sealrelay.toml",
		Section: "5",
		Manual:  "File Formats Manual",
		Summary: "configuration of the sealrelay agent",
		Source:  configSource,
		Sections: []Section{
			{Name: "SYNOPSIS", Blocks: []Block{Para(path)}},
			{Name: "DESCRIPTION", Blocks: desc},
			{Name: "KEYS", Blocks: keys},
			{Name: "EXAMPLE", Blocks: []Block{Verbatim(ConfigExample(tables))}},
			{Name: "SEE ALSO", Blocks: []Block{Roff(string(Bold("sealrelay")) + "(8)")}},
		},
	}
}

func (r Roff) roff(b *strings.Builder) { line(b, string(r)) }

// paragraphs splits text at blank lines and joins the lines of each.
func paragraphs(text string) []string {
	var out []string
	for _, p := range strings.Split(strings.TrimSpace(text), "\n\n") {
		out = append(out, strings.Join(strings.Fields(p), " "))
	}
	return out
}
