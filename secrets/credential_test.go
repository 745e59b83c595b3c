package secrets

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const secretPassword = "pa55-Word-never-printed"

// leaks reports whether s shows the password in any form a formatter could
// produce: as is, hex, base64, or quoted.
func leaks(s string) bool {
	for _, form := range []string{
		secretPassword,
		hex.EncodeToString([]byte(secretPassword)),
		base64.StdEncoding.EncodeToString([]byte(secretPassword)),
		"pa55",
	} {
		if strings.Contains(strings.ToLower(s), strings.ToLower(form)) {
			return true
		}
	}
	return false
}

func testCred() Credential {
	return NewCredential("primary", "relay@example.com", secretPassword, "sha256:0123456789ab")
}

func TestCredentialAccessors(t *testing.T) {
	c := testCred()
	if c.Password() != secretPassword || !c.HasPassword() || c.IsZero() {
		t.Errorf("accessors wrong: HasPassword %v IsZero %v", c.HasPassword(), c.IsZero())
	}
	if !(Credential{}).IsZero() || (Credential{}).HasPassword() {
		t.Error("zero Credential: IsZero false or HasPassword true")
	}
	other := NewCredential("other", "relay@example.com", secretPassword, "v2")
	if !c.SameSecret(other) {
		t.Error("SameSecret false for the same username and password")
	}
	if c.SameSecret(NewCredential("primary", "relay@example.com", secretPassword+"x", "")) {
		t.Error("SameSecret true for a different password")
	}
	if c.SameSecret(NewCredential("primary", "other@example.com", secretPassword, "")) {
		t.Error("SameSecret true for a different username")
	}
}

func TestCredentialString(t *testing.T) {
	c := testCred()
	want := `Credential{Name:"primary" Username:"relay@example.com" Password:[redacted] Version:"sha256:0123456789ab"}`
	if c.String() != want {
		t.Errorf("String() = %s\nwant %s", c.String(), want)
	}
	if c.GoString() != want {
		t.Errorf("GoString() = %s", c.GoString())
	}
	empty := NewCredential("primary", "u", "", "")
	if !strings.Contains(empty.String(), "Password:[empty]") {
		t.Errorf("a credential with no password shows %s; want Password:[empty]", empty)
	}
}

type holder struct {
	Cred Credential
}

type hiddenHolder struct {
	name string
	cred Credential
}

type pointerHolder struct {
	cred *Credential
}

func TestCredentialFormatVerbs(t *testing.T) {
	c := testCred()
	values := map[string]any{
		"value":                  c,
		"pointer":                &c,
		"in struct":              holder{c},
		"in struct pointer":      &holder{c},
		"in unexported field":    hiddenHolder{"x", c},
		"pointer in unexported":  pointerHolder{&c},
		"in slice":               []Credential{c, c},
		"in map":                 map[string]Credential{"primary": c},
		"in any slice":           []any{c},
		"in unexported, pointed": &hiddenHolder{"x", c},
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v"}
	for name, v := range values {
		for _, verb := range verbs {
			out := fmt.Sprintf(verb, v)
			if leaks(out) {
				t.Errorf("%s with %s shows the password: %s", name, verb, out)
			}
		}
		if leaks(fmt.Sprint(v)) || leaks(fmt.Sprintln(v)) {
			t.Errorf("%s with Sprint/Sprintln shows the password", name)
		}
	}
	// The redacted form is what shows, not nothing.
	if got := fmt.Sprintf("%+v", holder{c}); !strings.Contains(got, "Password:[redacted]") {
		t.Errorf("%%+v of a struct = %s; want the redacted credential inside", got)
	}
}

func TestCredentialSlog(t *testing.T) {
	c := testCred()
	for _, tt := range []struct {
		name string
		h    func(*bytes.Buffer) slog.Handler
		want string
	}{
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }, "cred.password=[redacted]"},
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }, `"password":"[redacted]"`},
	} {
		var b bytes.Buffer
		log := slog.New(tt.h(&b))
		log.Info("msg", "cred", c)
		log.Info("msg", "ptr", &c)
		log.Info("msg", "holder", holder{c}, "hidden", hiddenHolder{"x", c}, "list", []Credential{c})
		log.Info("msg", slog.Any("any", c), slog.Group("g", "cred", c))
		log.With("cred", c).Info("with")
		out := b.String()
		if leaks(out) {
			t.Errorf("%s handler shows the password:\n%s", tt.name, out)
		}
		if !strings.Contains(out, tt.want) || !strings.Contains(out, "relay@example.com") {
			t.Errorf("%s handler output lacks %s or the username:\n%s", tt.name, tt.want, out)
		}
	}
}

func TestCredentialJSON(t *testing.T) {
	c := testCred()
	for name, v := range map[string]any{
		"value":     c,
		"pointer":   &c,
		"in struct": struct{ Relay Credential }{c},
		"in slice":  []Credential{c, c},
		"in map":    map[string]*Credential{"p": &c},
	} {
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if leaks(string(out)) {
			t.Errorf("%s: JSON shows the password: %s", name, out)
		}
		if !strings.Contains(string(out), `"password":"[redacted]"`) {
			t.Errorf("%s: JSON = %s; want the redacted password", name, out)
		}
	}
	out, _ := json.Marshal(c)
	want := `{"name":"primary","username":"relay@example.com","password":"[redacted]","version":"sha256:0123456789ab"}`
	if string(out) != want {
		t.Errorf("JSON = %s\nwant %s", out, want)
	}
}

func TestCredentialInErrors(t *testing.T) {
	c := testCred()
	err := fmt.Errorf("delivery failed with %v: %w", c, errors.New("535"))
	if leaks(err.Error()) {
		t.Errorf("error shows the password: %v", err)
	}
	text, _ := c.MarshalText()
	if leaks(string(text)) {
		t.Errorf("MarshalText shows the password: %s", text)
	}
}
