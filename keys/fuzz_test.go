package keys

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseRecipients checks that the parser never panics, that its errors
// never quote a key-like line of the input, and that a list it accepts
// parses to the same entries when written back out.
func FuzzParseRecipients(f *testing.F) {
	f.Add([]byte("# relay1.example.com\nage1shlqpm828v76rvcplj6pt0p6ehtxr6w5lzhf8jrre0y7vprzpycqnafrly\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		l, err := ParseRecipients(bytes.NewReader(in), "recipients.txt")
		if err != nil {
			if l != nil {
				t.Fatal("a list returned with an error")
			}
			for _, line := range strings.Split(string(in), "\n") {
				line = strings.TrimSpace(line)
				if len(line) >= 10 && (strings.HasPrefix(line, "age1") || strings.HasPrefix(line, "AGE-")) &&
					strings.Contains(err.Error(), line) {
					t.Fatalf("error quotes line %q: %v", line, err)
				}
			}
			return
		}
		if len(l.Entries) == 0 {
			t.Fatal("an empty list accepted")
		}
		var out strings.Builder
		for _, e := range l.Entries {
			if e.Recipient == nil || mixes(l.Entries[0].Kind, e.Kind) {
				t.Fatalf("entry at line %d: recipient %v, kind %v after %v", e.Line, e.Recipient, e.Kind, l.Entries[0].Kind)
			}
			if e.Name != "" {
				out.WriteString("# " + e.Name + "\n")
			}
			out.WriteString(e.PublicKey + "\n\n")
		}
		back, err := ParseRecipients(strings.NewReader(out.String()), "again.txt")
		if err != nil {
			t.Fatalf("written back, the list does not parse: %v", err)
		}
		for i, e := range back.Entries {
			if e.PublicKey != l.Entries[i].PublicKey || e.Name != l.Entries[i].Name || e.Kind != l.Entries[i].Kind {
				t.Fatalf("entry %d changed: %+v, was %+v", i, e, l.Entries[i])
			}
		}
	})
}
