package keys

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	pathA, pubA := writeIdentity(t, false, 0o600)
	pathB, _ := writeIdentity(t, false, 0o600)
	a, err := Load(pathA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(pathB)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ParseRecipients(strings.NewReader("# a\n"+pubA+"\n"), "recipients.txt")
	if err != nil {
		t.Fatal(err)
	}
	const secret = "sealed-secret-value"
	sealed, err := Seal([]byte(secret), l)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(secret)) || !bytes.HasPrefix(sealed, []byte("-----BEGIN AGE ENCRYPTED FILE-----")) {
		t.Fatalf("Seal output is not armored ciphertext:\n%s", sealed)
	}
	plain, err := Open(sealed, a, "value")
	if err != nil || string(plain) != secret {
		t.Fatalf("Open = %q, %v", plain, err)
	}

	plain, err = Open(sealed, b, "value")
	var nr *NotRecipientError
	if plain != nil || !errors.As(err, &nr) {
		t.Fatalf("Open by a non-recipient = %q, %v", plain, err)
	}
	if want := "this server's key " + b.PublicKey() + " is not among the recipients of value"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}

	for _, tt := range []struct{ in, want string }{
		{"", "value is corrupt or truncated: it is empty"},
		{"hello " + secret, "value is corrupt or truncated: not an age file"},
		{string(sealed[:len(sealed)/2]), "value is corrupt or truncated: "},
	} {
		plain, err := Open([]byte(tt.in), a, "value")
		var ce *CorruptError
		if plain != nil || !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Open(%.20q) = %q, %v; want %q", tt.in, plain, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("error quotes the input: %v", err)
		}
		if ce != nil && !strings.Contains(ce.Hint(), "creds set") {
			t.Errorf("hint = %q", ce.Hint())
		}
	}
}
