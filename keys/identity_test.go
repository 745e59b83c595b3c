package keys

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// writeIdentity writes a fresh identity (test only) with mode and returns
// its path and public key.
func writeIdentity(t *testing.T, pq bool, mode os.FileMode) (string, string) {
	t.Helper()
	data, pub, err := Generate(pq, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "identity.txt")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path, pub
}

func TestGenerateFormat(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, tt := range []struct {
		pq              bool
		pubRE, secretRE string
	}{
		{false, `^age1[02-9ac-hj-np-z]{58}$`, `^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}$`},
		{true, `^age1pq1[02-9ac-hj-np-z]+$`, `^AGE-SECRET-KEY-PQ-1[02-9AC-HJ-NP-Z]+$`},
	} {
		data, pub, err := Generate(tt.pq, now)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		if len(lines) != 3 {
			t.Fatalf("pq=%v: %d lines, want 3 as age-keygen writes:\n%s", tt.pq, len(lines), data)
		}
		if lines[0] != "# created: 2026-03-04T05:06:07Z" {
			t.Errorf("pq=%v: line 1 = %q", tt.pq, lines[0])
		}
		if lines[1] != "# public key: "+pub {
			t.Errorf("pq=%v: line 2 = %q, want the public key %s", tt.pq, lines[1], pub)
		}
		if !regexp.MustCompile(tt.pubRE).MatchString(pub) {
			t.Errorf("pq=%v: public key %q does not match %s", tt.pq, pub, tt.pubRE)
		}
		if !regexp.MustCompile(tt.secretRE).MatchString(lines[2]) {
			t.Errorf("pq=%v: line 3 is not a secret key of the right kind", tt.pq)
		}
		id, err := Parse(bytes.NewReader(data), "generated")
		if err != nil {
			t.Fatal(err)
		}
		if id.PublicKey() != pub {
			t.Errorf("pq=%v: parsed public key %s, want %s", tt.pq, id.PublicKey(), pub)
		}
	}
	_, a, _ := Generate(false, now)
	_, b, _ := Generate(false, now)
	if a == b {
		t.Error("two generated keys are the same")
	}
}

func TestWriteNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.txt")
	pub, err := WriteNew(path, false)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	id, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if id.PublicKey() != pub || id.Path() != path {
		t.Errorf("Load = %v, want public key %s", id, pub)
	}
	before, _ := os.ReadFile(path)

	_, err = WriteNew(path, true)
	want := "identity file " + path + " already exists; refusing to overwrite it"
	if err == nil || err.Error() != want {
		t.Fatalf("second WriteNew error = %v, want %q", err, want)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("the refused WriteNew changed the file")
	}
}

func TestWriteNewPostQuantum(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.txt")
	pub, err := WriteNew(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub, "age1pq1") {
		t.Errorf("public key %q is not post-quantum", pub)
	}
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
}

func TestWriteNewMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "identity.txt")
	_, err := WriteNew(path, false)
	if err == nil || !strings.Contains(err.Error(), "creating identity file: open "+path) {
		t.Errorf("error = %v, want one naming %s", err, path)
	}
}

func TestLoadRefusesLooseModes(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620, 0o660} {
		path, _ := writeIdentity(t, false, mode)
		id, err := Load(path)
		var pe *PermissionError
		if id != nil || !errors.As(err, &pe) {
			t.Fatalf("mode %04o: Load = %v, %v; want *PermissionError", mode, id, err)
		}
		want := "identity file " + path + " is accessible by group or others (mode " + fmt.Sprintf("%04o", mode) + "); refusing to use it"
		if err.Error() != want {
			t.Errorf("mode %04o: error = %q\nwant %q", mode, err, want)
		}
		if pe.Hint() != "make it readable by its owner only: chmod 600 "+path {
			t.Errorf("mode %04o: hint = %q", mode, pe.Hint())
		}
		if strings.Contains(err.Error()+pe.Hint(), "AGE-SECRET-KEY") {
			t.Errorf("mode %04o: error quotes key material", mode)
		}
	}
}

func TestLoadAcceptsOwnerOnly(t *testing.T) {
	for _, mode := range []os.FileMode{0o600, 0o400} {
		path, pub := writeIdentity(t, false, mode)
		id, err := Load(path)
		if err != nil {
			t.Fatalf("mode %04o: %v", mode, err)
		}
		if id.PublicKey() != pub {
			t.Errorf("mode %04o: public key %s, want %s", mode, id.PublicKey(), pub)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "missing.txt"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.txt") {
		t.Errorf("missing file: %v", err)
	}
	_, err = Load(dir)
	if err == nil || err.Error() != "identity file "+dir+" is not a regular file" {
		t.Errorf("directory: %v", err)
	}
}

func TestParseErrorsNeverQuoteKeys(t *testing.T) {
	data, _, err := Generate(false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.Split(string(data), "\n")[2]
	pqData, _, err := Generate(true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pqSecret := strings.Split(string(pqData), "\n")[2]
	tests := []struct{ name, in, want string }{
		{"damaged key", "# test only\n" + secret[:len(secret)-3] + "xyz\n", "identity file id.txt: line 2: malformed secret key"},
		{"damaged pq key", damage(pqSecret) + "\n", "identity file id.txt: line 1: malformed post-quantum secret key"},
		{"lowercase key", strings.ToLower(secret) + "\n", "identity file id.txt: line 1 is not an age secret key"},
		{"ssh key", "-----BEGIN OPENSSH PRIVATE KEY-----\n" + secret + "\n", "identity file id.txt: line 1 is not an age secret key"},
		{"key with junk", secret + " trailing\n", "identity file id.txt: line 1: malformed secret key"},
		{"no key", "# created: now\n\n", "identity file id.txt holds no secret key"},
		{"empty", "", "identity file id.txt holds no secret key"},
		{"not UTF-8", "# ok\n\xff\xfe" + secret + "\n", "identity file id.txt: line 2 is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.in), "id.txt")
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("error = %v\nwant %q", err, tt.want)
			}
			if strings.Contains(strings.ToUpper(err.Error()), "AGE-SECRET-KEY") || strings.Contains(err.Error(), secret[16:30]) {
				t.Errorf("error quotes key material: %q", err)
			}
		})
	}
}

func TestParseSeveralKeys(t *testing.T) {
	a, pubA, _ := Generate(false, time.Now())
	b, pubB, _ := Generate(true, time.Now())
	id, err := Parse(bytes.NewReader(append(a, b...)), "two.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got := id.PublicKeys(); len(got) != 2 || got[0] != pubA || got[1] != pubB {
		t.Errorf("PublicKeys = %v, want [%s %s]", got, pubA, pubB)
	}
	if len(id.Identities()) != 2 {
		t.Errorf("%d identities, want 2", len(id.Identities()))
	}
}

func TestIdentityStringHidesSecret(t *testing.T) {
	path, pub := writeIdentity(t, false, 0o600)
	id, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "identity " + path + " (" + pub + ")"
	for _, got := range []string{id.String(), id.GoString()} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

// damage changes the last character of a Bech32 string to another valid
// one, which breaks its checksum.
func damage(s string) string {
	last := "Q"
	if strings.HasSuffix(s, "Q") {
		last = "P"
	}
	return s[:len(s)-1] + last
}
