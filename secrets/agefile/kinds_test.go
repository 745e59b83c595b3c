package agefile

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/testing/testpki"
	"github.com/sealrelay/sealrelay/secrets"
)

// kindsFile is a credential file holding an entry of every kind, written
// by hand as an operator might (test only).
func kindsFile(t *testing.T) (toml string, certPEM, keyPEM string) {
	t.Helper()
	ca := testpki.CA(t, "sealrelay test CA")
	leaf := testpki.Leaf(t, ca, testpki.Options{CommonName: "relay1.example.com"})
	certPEM, keyPEM = leaf.CertPEM(ca), leaf.KeyPEM(t)
	toml = `# test only
[primary]
username = "relay@example.com"
password = "pw-primary-6b1f"

[m365]
kind = "oauth2"
username = "relay@contoso.example"
provider = "microsoft365"
tenant = "contoso.example"
client_id = "0000-1111"
client_secret = "cs-m365-44aa"
generation = "GEN2"

[gmail]
kind = "oauth2"
username = "relay@example.com"
provider = "google"
client_id = "id.apps.googleusercontent.com"
client_secret = "cs-gmail-9c0d"
refresh_token = "rt-gmail-1e2f"
scopes = ["https://mail.google.com/"]

[corp-cert]
kind = "certificate"
certificate = """
` + certPEM + `"""
private_key = """
` + keyPEM + `"""
generation = "GEN3"

[ses]
kind = "ses"
access_key_id = "AKIAIOSFODNN7EXAMPLE"
secret_access_key = "sak-ses/5a5a+x"
region = "eu-central-1"
`
	return toml, certPEM, keyPEM
}

// Every kind survives Parse, Marshal and Parse, and Marshal writes each
// entry's keys in the schema's order, PEM on several lines.
func TestKindsRoundTrip(t *testing.T) {
	in, certPEM, keyPEM := kindsFile(t)
	creds, err := Parse([]byte(in), "credentials.age")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]secrets.Credential{}
	for _, c := range creds {
		byName[c.Name] = c
	}
	if c := byName["m365"]; c.Kind() != secrets.KindOAuth2 || c.ClientSecret() != "cs-m365-44aa" || c.Generation != "GEN2" {
		t.Errorf("m365 = %v", c)
	}
	if c := byName["gmail"]; c.RefreshToken() != "rt-gmail-1e2f" || c.Field(secrets.KeyScopes) != "https://mail.google.com/" {
		t.Errorf("gmail = %v", c)
	}
	if c := byName["corp-cert"]; c.PrivateKey() != keyPEM || c.Field(secrets.KeyCertificate) != certPEM {
		t.Errorf("corp-cert = %v", c)
	}
	if c := byName["ses"]; c.Username != "AKIAIOSFODNN7EXAMPLE" || c.SecretAccessKey() != "sak-ses/5a5a+x" || c.Generation != "" {
		t.Errorf("ses = %v", c)
	}

	out, err := Marshal(creds)
	if err != nil {
		t.Fatal(err)
	}
	want := `[corp-cert]
kind = "certificate"
certificate = '''
` + certPEM + `'''
private_key = '''
` + keyPEM + `'''
generation = "GEN3"

[gmail]
kind = "oauth2"
username = "relay@example.com"
provider = "google"
client_id = "id.apps.googleusercontent.com"
scopes = ["https://mail.google.com/"]
client_secret = "cs-gmail-9c0d"
refresh_token = "rt-gmail-1e2f"

[m365]
kind = "oauth2"
username = "relay@contoso.example"
provider = "microsoft365"
tenant = "contoso.example"
client_id = "0000-1111"
client_secret = "cs-m365-44aa"
generation = "GEN2"

[primary]
username = "relay@example.com"
password = "pw-primary-6b1f"

[ses]
kind = "ses"
access_key_id = "AKIAIOSFODNN7EXAMPLE"
region = "eu-central-1"
secret_access_key = "sak-ses/5a5a+x"
`
	if string(out) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", out, want)
	}
	back, err := Parse(out, "marshalled")
	if err != nil {
		t.Fatal(err)
	}
	for i := range creds {
		if back[i].Name != creds[i].Name || !back[i].SameSecret(creds[i]) || back[i].Generation != creds[i].Generation {
			t.Errorf("%s changed in the round trip: %v", creds[i].Name, back[i])
		}
	}

	// Sealed and opened with a real identity.
	id, pub := newServer(t, "a")
	path := filepath.Join(t.TempDir(), "credentials.age")
	if err := Write(path, creds, recipients(t, pub)); err != nil {
		t.Fatal(err)
	}
	read, err := Read(path, id)
	if err != nil {
		t.Fatal(err)
	}
	for i := range creds {
		if !read[i].SameSecret(creds[i]) || read[i].Generation != creds[i].Generation || read[i].Version == "" {
			t.Errorf("%s changed through the sealed file: %v", creds[i].Name, read[i])
		}
	}
	tc, err := read[0].Certificate()
	if err != nil || tc.Leaf == nil || tc.Leaf.Subject.CommonName != "relay1.example.com" {
		t.Errorf("the certificate read back: %v", err)
	}
}

// A PEM value that a literal string cannot hold is written as a basic
// string and still reads back.
func TestMarshalOddPEM(t *testing.T) {
	in, certPEM, keyPEM := kindsFile(t)
	creds, err := Parse([]byte(in), "credentials.age")
	if err != nil {
		t.Fatal(err)
	}
	odd := "# the operator's note: it's ours\r\n" + keyPEM
	c, err := secrets.ParseEntry("odd", map[string]any{"kind": "certificate", "certificate": certPEM, "private_key": odd})
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(append(creds, c))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `private_key = "# the operator's note: it's ours\r\n-----BEGIN PRIVATE KEY-----\n`) {
		t.Errorf("the odd key is not a basic string:\n%s", out)
	}
	back, err := Parse(out, "marshalled")
	if err != nil {
		t.Fatal(err)
	}
	if back[3].Name != "odd" || back[3].PrivateKey() != odd {
		t.Error("the odd key changed in the round trip")
	}
}

// Schema errors come through the file with its name; duplicate keys of
// any kind are named.
func TestParseKindErrors(t *testing.T) {
	const secret = "cs-do-not-print-7777"
	for _, tc := range []struct{ name, in, want string }{
		{"missing tenant", "[m]\nkind = \"oauth2\"\nusername = \"u\"\nprovider = \"microsoft365\"\nclient_id = \"c\"\nclient_secret = \"" + secret + "\"\n",
			`credentials.age: entry "m" has no tenant (provider microsoft365 needs it, or token_url)`},
		{"ses username", "[s]\nkind = \"ses\"\nusername = \"u\"\n",
			`credentials.age: entry "s" has key "username", which is not for kind ses (an ses entry's username is its access_key_id)`},
		{"scopes a table", "[m]\nkind = \"oauth2\"\n[m.scopes]\nx = \"" + secret + "\"\n",
			`credentials.age: entry "m": scopes must be a list of strings, or one string of scopes separated by spaces`},
		{"duplicate client secret", "[m]\nkind = \"oauth2\"\nclient_secret = \"" + secret + "\"\nclient_secret = \"" + secret + "\"\n",
			`credentials.age: line 4: entry "m" sets client_secret twice`},
		{"unknown kind", "[m]\nkind = \"" + secret + "\"\n",
			`credentials.age: entry "m": kind is not password, oauth2, certificate or ses`},
	} {
		_, err := Parse([]byte(tc.in), "credentials.age")
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s:\n got %v\nwant %s", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error quotes the secret", tc.name)
		}
	}
}

// A file written before generations existed reads with none, and
// writing it back adds none; a credential's generation is kept.
func TestGenerations(t *testing.T) {
	creds, err := Parse([]byte("[old]\nusername = \"u\"\npassword = \"p\"\n"), "old.age")
	if err != nil || creds[0].Generation != "" {
		t.Fatalf("old entry: %v, generation %q", err, creds[0].Generation)
	}
	c := secrets.NewCredential("new", "u", "p", "")
	c.Generation = secrets.NewGeneration()
	out, err := Marshal(append(creds, c))
	if err != nil {
		t.Fatal(err)
	}
	want := "[new]\nusername = \"u\"\npassword = \"p\"\ngeneration = \"" + c.Generation + "\"\n\n[old]\nusername = \"u\"\npassword = \"p\"\n"
	if string(out) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", out, want)
	}
}
