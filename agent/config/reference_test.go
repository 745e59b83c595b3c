package config

import (
	"fmt"
	"strings"
	"testing"
	"unicode"
)

// TestReferenceDefaultsAreDefaults: for every key whose documented default
// is a value, a config that sets the key to it loads the same as one that
// leaves it out; so the reference shows what Default holds, written so
// that it loads back.
func TestReferenceDefaultsAreDefaults(t *testing.T) {
	const relay = "[[relay]]\naddress = \"a:1\"\n"
	n := 0
	for _, tb := range Reference() {
		// An array of tables other than [[relay]] is there once, with
		// nothing set, in both configs.
		base := relay
		if tb.Array && tb.Name != "relay" {
			base += tb.Header() + "\n"
		}
		want, err := Parse([]byte(base), "c.toml")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range tb.Keys {
			if k.Computed {
				continue
			}
			set := k.Name + " = " + k.Default + "\n"
			var data string
			switch tb.Name {
			case "":
				data = set + relay
			case "relay":
				data = relay + set
			default:
				data = relay + tb.Header() + "\n" + set
			}
			got, err := Parse([]byte(data), "c.toml")
			if err != nil {
				t.Errorf("%s.%s = %s: %v", tb.Name, k.Name, k.Default, err)
				continue
			}
			got.raw = want.raw
			// %+v shows an empty slice and none alike, as TOML does.
			if fmt.Sprintf("%+v", *got) != fmt.Sprintf("%+v", *want) {
				t.Errorf("setting %s.%s = %s to its documented default changes the config", tb.Name, k.Name, k.Default)
			}
			n++
		}
	}
	if n < 50 {
		t.Errorf("only %d keys checked", n)
	}
}

// TestReferenceDocs: every key and table has its description, in plain
// ASCII sentences (the manual page and Markdown take them as they are);
// a computed default has an example; and no description of a number or a
// duration repeats its default, which Default alone holds.
func TestReferenceDocs(t *testing.T) {
	for _, tb := range Reference() {
		checkDoc(t, tb.Header(), tb.Doc)
		for _, k := range tb.Keys {
			name := strings.TrimPrefix(tb.Name+"."+k.Name, ".")
			checkDoc(t, name, k.Doc)
			if k.Computed && k.Example == k.Default {
				t.Errorf("%s: a computed default needs an example tag", name)
			}
			if (k.Type == "integer" || k.Type == "duration") && strings.Contains(k.Doc, strings.Trim(k.Default, `"`)) {
				t.Errorf("%s: the description repeats the default %s: say it in Default only", name, k.Default)
			}
		}
	}
}

func checkDoc(t *testing.T, name, doc string) {
	t.Helper()
	if !strings.HasSuffix(doc, ".") {
		t.Errorf("%s: the description %q does not end a sentence", name, doc)
	}
	if strings.ContainsFunc(doc, func(r rune) bool { return r > unicode.MaxASCII || r == '`' || r == '\\' }) {
		t.Errorf("%s: the description %q holds a character other than plain ASCII", name, doc)
	}
}

func TestShortDuration(t *testing.T) {
	for in, want := range map[string]string{"5m0s": "5m", "1m0s": "1m", "120h0m0s": "120h", "1h30m0s": "1h30m", "30s": "30s", "1m30s": "1m30s", "0s": "0s"} {
		var d Duration
		if err := d.UnmarshalTOML(in); err != nil {
			t.Fatal(err)
		}
		if got := shortDuration(d.Duration); got != want {
			t.Errorf("shortDuration(%s) = %s, want %s", in, got, want)
		}
	}
}
