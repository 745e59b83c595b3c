// Package docgen writes sealrelay's generated documentation: manual pages
// in roff (the man(7) macros), the reference and example of
// sealrelay.toml, and blocks of generated text inside hand-written files.
// The sources are the code itself (agent/config's Reference, the command
// table of cmd/sealrelay); `make docs` writes the files, and a test fails
// when one of them differs from what the code generates.
//
// A page is a Page value: a new page (sendmail(8), say) is one more
// function building one, and one more file in the test that lists them.
package docgen

import (
	"strings"
	"unicode"
)

// Page is a manual page.
type Page struct {
	Name     string // "sealrelay", "sealrelay.toml"
	Section  string // "8", "5"
	Manual   string // the header's centre: "System Manager's Manual"
	Summary  string // the NAME line after the dash: what the page is about
	Source   string // what it is generated from, for the comment at the top
	Sections []Section
}

// Section is a section of a page (.SH), its name in capitals by convention.
type Section struct {
	Name   string
	Blocks []Block
}

// Block is a piece of a section.
type Block interface{ roff(b *strings.Builder) }

// Para is a paragraph of plain text.
type Para string

// Sub is a subsection heading (.SS).
type Sub string

// Item is a tagged paragraph (.TP): Tag on a line of its own, Body
// indented below it.
type Item struct {
	Tag  Roff
	Body string
}

// Verbatim is text shown as it is, in a fixed font and indented: an
// example file.
type Verbatim string

// Synopsis is a command's forms (.SY ... .YS), each a line as Command
// formats it.
type Synopsis struct {
	Command string   // "sealrelay"
	Forms   []string // "keygen -o FILE [--pq]"
}

// Roff is text already in roff: Escape'd, with font changes.
type Roff string

// Bold is s in bold: what is typed as it is.
func Bold(s string) Roff { return Roff(`\fB` + Escape(s) + `\fR`) }

// Italic is s in italics: a placeholder.
func Italic(s string) Roff { return Roff(`\fI` + Escape(s) + `\fR`) }

// Command formats a command line as manual pages do: words in capitals
// (FILE, CONFIG) are placeholders, in italics; other words are typed as
// they are, in bold; brackets, bars and dots are left plain.
func Command(s string) Roff {
	var b strings.Builder
	word := func(r rune) bool { return r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && word(rune(s[j])) {
			j++
		}
		if j == i {
			b.WriteString(Escape(s[i : i+1]))
			i++
			continue
		}
		w := s[i:j]
		if w == strings.ToUpper(w) && strings.ContainsFunc(w, unicode.IsLetter) && w[0] != '-' {
			b.WriteString(string(Italic(w)))
		} else {
			b.WriteString(string(Bold(w)))
		}
		i = j
	}
	return Roff(b.String())
}

// Escape makes plain text safe in roff: a backslash is \e, and a hyphen
// \- (a minus sign, so options can be copied from the page).
func Escape(s string) string {
	return strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
}

// Roff writes the page.
func (p *Page) Roff() []byte {
	var b strings.Builder
	b.WriteString(`.\" ` + p.Name + "(" + p.Section + ") is generated from " + p.Source + " by `make docs`; do not edit.\n")
	b.WriteString(`.TH "` + strings.ToUpper(p.Name) + `" "` + p.Section + `" "" "sealrelay" "` + p.Manual + "\"\n")
	b.WriteString(".SH NAME\n")
	text(&b, Escape(p.Name)+` \- `+Escape(p.Summary))
	for _, s := range p.Sections {
		b.WriteString(`.SH "` + s.Name + "\"\n")
		for i, bl := range s.Blocks {
			// A paragraph needs a break after anything but a heading.
			switch bl.(type) {
			case Para, Verbatim:
				if _, sub := prev(s.Blocks, i).(Sub); i > 0 && !sub {
					b.WriteString(".PP\n")
				}
			}
			bl.roff(&b)
		}
	}
	return []byte(b.String())
}

// prev returns the block before the i-th, or nil.
func prev(blocks []Block, i int) Block {
	if i == 0 {
		return nil
	}
	return blocks[i-1]
}

func (p Para) roff(b *strings.Builder) { text(b, Escape(string(p))) }

func (s Sub) roff(b *strings.Builder) { b.WriteString(`.SS "` + string(s) + "\"\n") }

func (it Item) roff(b *strings.Builder) {
	b.WriteString(".TP\n")
	line(b, string(it.Tag))
	text(b, Escape(it.Body))
}

func (v Verbatim) roff(b *strings.Builder) {
	b.WriteString(".RS 4\n.nf\n")
	for _, l := range strings.Split(strings.TrimRight(string(v), "\n"), "\n") {
		line(b, Escape(l))
	}
	b.WriteString(".fi\n.RE\n")
}

func (s Synopsis) roff(b *strings.Builder) {
	for _, f := range s.Forms {
		b.WriteString(".SY " + s.Command + "\n")
		text(b, string(Command(f)))
		b.WriteString(".YS\n")
	}
}

// text writes a paragraph of roff text, wrapped at spaces into lines of
// about 78 columns: a diff of the page then shows what changed.
func text(b *strings.Builder, s string) {
	n := 0
	cur := ""
	for _, w := range strings.Fields(s) {
		if n > 0 && n+1+len(w) > 78 {
			line(b, cur)
			cur, n = "", 0
		}
		if n > 0 {
			cur += " "
			n++
		}
		cur += w
		n += len(w)
	}
	if cur != "" {
		line(b, cur)
	}
}

// line writes one line of roff text; one that starts with a dot or an
// apostrophe would be read as a request, so it gets a \& first.
func line(b *strings.Builder, s string) {
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		b.WriteString(`\&`)
	}
	b.WriteString(s + "\n")
}
