package docgen

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/agent/config"
)

// TestConfigExampleLoads: the generated example is a config sealrelay
// accepts, and it holds the defaults except where it shows a sample value
// (for a key with no default, or one that depends on the host). Tables
// shown commented out take no effect as shipped, and their samples load
// too once uncommented.
func TestConfigExampleLoads(t *testing.T) {
	ref := config.Reference()
	for _, uncomment := range []bool{false, true} {
		example := string(ConfigExample(ref))
		if uncomment {
			example = commentedOut.ReplaceAllString(example, "$1")
		}
		got, err := config.Parse([]byte(example), "example.toml")
		if err != nil {
			t.Fatalf("the generated example (uncommented %v) does not load: %v", uncomment, err)
		}
		// The same samples, and nothing else, on the defaults.
		var samples strings.Builder
		for _, tb := range ref {
			if tb.Commented && !uncomment {
				continue
			}
			if tb.Name != "" {
				samples.WriteString(tb.Header() + "\n")
			}
			for _, k := range tb.Keys {
				if k.Computed || k.Example != k.Default {
					samples.WriteString(k.Name + " = " + k.Example + "\n")
				}
			}
		}
		want, err := config.Parse([]byte(samples.String()), "example.toml")
		if err != nil {
			t.Fatalf("the samples alone do not load: %v\n%s", err, samples.String())
		}
		if g, w := fmt.Sprintf("%+v", *got), fmt.Sprintf("%+v", *want); stripRaw(g) != stripRaw(w) {
			t.Errorf("the example (uncommented %v) loads as\n%s\nwant the defaults with its samples\n%s", uncomment, g, w)
		}
	}
}

// commentedOut matches the "# " of a line of a table the example shows
// commented out: a header or a key, not a comment of its own.
var commentedOut = regexp.MustCompile(`(?m)^# (\[|[a-z_]+ = )`)

// stripRaw drops the file's content from a Config printed with %+v.
func stripRaw(s string) string {
	i := strings.Index(s, "raw:[")
	j := strings.Index(s, "] Hostname:")
	if i < 0 || j < i {
		return s
	}
	return s[:i] + s[j+1:]
}

func TestSplice(t *testing.T) {
	doc := "# Title\n\n" + BeginMarker("b") + "\nold\ntext\n" + EndMarker("b") + "\n\nafter\n"
	got, err := Splice([]byte(doc), "b", []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	want := "# Title\n\n" + BeginMarker("b") + "\nnew\n" + EndMarker("b") + "\n\nafter\n"
	if string(got) != want {
		t.Errorf("Splice =\n%s\nwant\n%s", got, want)
	}
	again, err := Splice(got, "b", []byte("new\n"))
	if err != nil || string(again) != want {
		t.Errorf("splicing the same block again changed the file:\n%s (%v)", again, err)
	}

	for _, tc := range []struct{ name, doc, want string }{
		{"missing", "text\n", `the markers of the generated block "b" are missing`},
		{"twice", doc + doc, `the markers of the generated block "b" appear more than once`},
		{"reversed", EndMarker("b") + "\n" + BeginMarker("b") + "\n", `the end marker of the generated block "b" comes before its begin marker`},
	} {
		if _, err := Splice([]byte(tc.doc), "b", nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestCheck: a stale file is reported with the command that fixes it, and
// update rewrites it.
func TestCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "README.md")
	if err := os.WriteFile(path, []byte("a\n"+BeginMarker("b")+"\nold\n"+EndMarker("b")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := CheckBlock(path, "b", []byte("new\n"), false)
	if !errors.Is(err, ErrStale) || !strings.Contains(err.Error(), path+`: block "b" is out of date with the code that generates it: run `+"`make docs`") {
		t.Errorf("CheckBlock of a stale block: %v", err)
	}
	if err := CheckBlock(path, "b", []byte("new\n"), true); err != nil {
		t.Fatal(err)
	}
	if err := CheckBlock(path, "b", []byte("new\n"), false); err != nil {
		t.Errorf("after an update: %v", err)
	}

	whole := filepath.Join(t.TempDir(), "page.8")
	if err := Check(whole, []byte("x"), false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Check of a missing file: %v", err)
	}
	if err := Check(whole, []byte("x"), true); err != nil {
		t.Fatal(err)
	}
	if err := Check(whole, []byte("y"), false); err == nil || err.Error() != whole+" is out of date with the code that generates it: run `make docs`" {
		t.Errorf("Check of a stale file: %v", err)
	}
}

func TestRoff(t *testing.T) {
	if got, want := string(Command("keygen -o FILE [--pq]")), `\fBkeygen\fR \fB\-o\fR \fIFILE\fR [\fB\-\-pq\fR]`; got != want {
		t.Errorf("Command = %s\nwant      %s", got, want)
	}
	if got, want := string(Command("queue list|retry [ID]")), `\fBqueue\fR \fBlist\fR|\fBretry\fR [\fIID\fR]`; got != want {
		t.Errorf("Command = %s\nwant      %s", got, want)
	}
	p := &Page{Name: "x", Section: "1", Manual: "M", Summary: "s", Source: "src", Sections: []Section{{
		Name: "DESCRIPTION",
		Blocks: []Block{
			Para("a back\\slash and a -flag"),
			Para(strings.Repeat("word ", 15) + ".starts a line"),
			Sub("Sub"),
			Para("after a heading"),
			Verbatim("'quoted\n.dot"),
		},
	}}}
	want := `.\" x(1) is generated from src by ` + "`make docs`" + `; do not edit.
.TH "X" "1" "" "sealrelay" "M"
.SH NAME
x \- s
.SH "DESCRIPTION"
a back\eslash and a \-flag
.PP
word word word word word word word word word word word word word word word
\&.starts a line
.SS "Sub"
after a heading
.PP
.RS 4
.nf
\&'quoted
\&.dot
.fi
.RE
`
	if got := string(p.Roff()); got != want {
		t.Errorf("Roff =\n%s\nwant\n%s", got, want)
	}
}
