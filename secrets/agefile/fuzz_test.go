package agefile

import (
	"regexp"
	"strings"
	"testing"
)

var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// FuzzParse checks that Parse never panics, that what it accepts survives
// Marshal and Parse again, and that its errors quote nothing from the input
// but valid entry and key names.
func FuzzParse(f *testing.F) {
	f.Add([]byte("[primary]\nusername = \"u@example.com\"\npassword = \"p\"\n"))
	f.Add([]byte("[m]\nkind = \"oauth2\"\nusername = \"u\"\nprovider = \"google\"\nclient_id = \"c\"\nclient_secret = \"s\"\nscopes = [\"a\", \"b\"]\ngeneration = \"G\"\n"))
	f.Add([]byte("[s]\nkind = \"ses\"\naccess_key_id = \"AKIAIOSFODNN7EXAMPLE\"\nregion = \"eu-west-1\"\nsecret_access_key = \"k\"\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		creds, err := Parse(in, "credentials.age")
		if err != nil {
			if creds != nil {
				t.Fatal("entries returned with an error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "credentials.age: ") {
				t.Fatalf("error does not start with the file name: %q", msg)
			}
			for _, q := range quoted.FindAllString(msg, -1) {
				if !ValidName(strings.Trim(q, `"`)) {
					t.Fatalf("error quotes %s, which is not a valid name: %q", q, msg)
				}
			}
			return
		}
		out, err := Marshal(creds)
		if err != nil {
			t.Fatalf("Marshal refused what Parse accepted: %v", err)
		}
		back, err := Parse(out, "marshalled")
		if err != nil {
			t.Fatalf("Parse(Marshal(x)) failed: %v", err)
		}
		if len(back) != len(creds) {
			t.Fatalf("round trip has %d entries, want %d", len(back), len(creds))
		}
		for i := range creds {
			if back[i].Name != creds[i].Name || !back[i].SameSecret(creds[i]) || back[i].Generation != creds[i].Generation {
				t.Fatalf("entry %d changed in the round trip", i)
			}
		}
	})
}
