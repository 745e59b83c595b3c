package keys

import (
	"strings"
	"testing"
	"time"
)

// pubKey returns a fresh public key and its secret key line (test only).
func pubKey(t testing.TB, pq bool) (pub, secret string) {
	t.Helper()
	data, pub, err := Generate(pq, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return pub, strings.Split(string(data), "\n")[2]
}

func TestParseRecipients(t *testing.T) {
	a, _ := pubKey(t, false)
	b, _ := pubKey(t, false)
	c, _ := pubKey(t, false)
	in := "# the relays that may read credentials.age\n" +
		"\n" +
		"# relay1.example.com\n" +
		a + "\n" +
		"  # relay2.example.com  \n" +
		"\t" + b + "  \n" +
		"\n" +
		c + "\n"
	l, err := ParseRecipients(strings.NewReader(in), "recipients.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := []RecipientEntry{
		{Line: 4, Name: "relay1.example.com", PublicKey: a, Kind: Classic},
		{Line: 6, Name: "relay2.example.com", PublicKey: b, Kind: Classic},
		{Line: 8, Name: "", PublicKey: c, Kind: Classic},
	}
	if len(l.Entries) != len(want) {
		t.Fatalf("%d entries, want %d", len(l.Entries), len(want))
	}
	for i, w := range want {
		e := l.Entries[i]
		if e.Line != w.Line || e.Name != w.Name || e.PublicKey != w.PublicKey || e.Kind != w.Kind || e.Recipient == nil {
			t.Errorf("entry %d = %+v, want %+v", i, e, w)
		}
	}
	if l.File != "recipients.txt" || len(l.Recipients()) != 3 {
		t.Errorf("File %q, %d recipients", l.File, len(l.Recipients()))
	}
	if !l.Contains(b) {
		t.Errorf("Contains(%s) = false", b)
	}
	if other, _ := pubKey(t, false); l.Contains(other) {
		t.Error("Contains(a key not on the list) = true")
	}
}

func TestParseRecipientsPostQuantum(t *testing.T) {
	a, _ := pubKey(t, true)
	b, _ := pubKey(t, true)
	l, err := ParseRecipients(strings.NewReader("# one\n"+a+"\n# two\n"+b+"\n"), "pq.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l.Entries {
		if e.Kind != PostQuantum {
			t.Errorf("line %d: kind %v, want post-quantum", e.Line, e.Kind)
		}
	}
}

func TestParseRecipientsErrors(t *testing.T) {
	classic, classicSecret := pubKey(t, false)
	classic2, _ := pubKey(t, false)
	pq, pqSecret := pubKey(t, true)
	tests := []struct {
		name, in, want string
		secret         string // must not appear in the error
	}{
		{"secret key pasted", "# relay1\n" + classic + "\n# relay2\n" + classicSecret + "\n",
			"recipients.txt:4: this line is a secret key, not a public one; remove it from the list (and treat that key as exposed)", classicSecret},
		{"post-quantum secret key pasted", pqSecret + "\n",
			"recipients.txt:1: this line is a secret key, not a public one", pqSecret},
		{"duplicate", classic + "\n# again\n" + classic + "\n",
			"recipients.txt:3: the same recipient as line 1", ""},
		{"mixed classic then pq", "# relay1\n" + classic + "\n# relay2\n" + pq + "\n",
			"recipients.txt:4: a post-quantum (age1pq1...) recipient, but line 2 is classic X25519 (age1...): " +
				"age will not encrypt one file to both, because the classic key would leave the file open to a future quantum computer; " +
				"give every server the same kind of key", ""},
		{"mixed pq then classic", pq + "\n" + classic + "\n",
			"recipients.txt:2: a classic X25519 (age1...) recipient, but line 1 is post-quantum (age1pq1...): age will not encrypt one file to both", ""},
		{"damaged recipient", classic2 + "\n" + damage(classic) + "\n",
			"recipients.txt:2: malformed recipient (bad length or checksum)", damage(classic)},
		{"damaged pq recipient", damage(pq) + "\n",
			"recipients.txt:1: malformed post-quantum recipient (bad length or checksum)", damage(pq)},
		{"ssh key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHb0example user@host\n",
			"recipients.txt:1: not an age recipient (a recipient starts with age1; ssh keys are not accepted)", "AAAAC3Nza"},
		{"trailing comment", classic + " # relay1\n",
			"recipients.txt:1: malformed recipient", classic},
		{"not UTF-8", "# ok\n\xffage1\n", "recipients.txt:2: line is not valid UTF-8", ""},
		{"empty", "# nobody yet\n\n", "recipient list recipients.txt holds no recipients", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ParseRecipients(strings.NewReader(tt.in), "recipients.txt")
			if err == nil {
				t.Fatalf("parsed %d entries; want an error", len(l.Entries))
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error = %q\nwant %q", err, tt.want)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error quotes the line: %q", err)
			}
			if strings.Contains(err.Error(), "AGE-SECRET-KEY") {
				t.Errorf("error contains key material: %q", err)
			}
		})
	}
}

func TestParseRecipientsTooLarge(t *testing.T) {
	_, err := ParseRecipients(strings.NewReader(strings.Repeat("#\n", maxRecipientFile)), "big.txt")
	if err == nil || err.Error() != "recipient list big.txt is larger than 1048576 bytes" {
		t.Errorf("error = %v", err)
	}
}

func TestLoadRecipientsMissing(t *testing.T) {
	_, err := LoadRecipients(t.TempDir() + "/none.txt")
	if err == nil || !strings.Contains(err.Error(), "opening recipient list: open ") || !strings.Contains(err.Error(), "none.txt") {
		t.Errorf("error = %v", err)
	}
}
