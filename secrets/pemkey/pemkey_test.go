package pemkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/testing/testpki"
)

func TestParsePrivateKeyForms(t *testing.T) {
	ca := testpki.CA(t, "test CA")
	ec := testpki.Leaf(t, ca, testpki.Options{CommonName: "ec"})
	rsa := testpki.Leaf(t, ca, testpki.Options{CommonName: "rsa", RSA: true})
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edDER, err := x509.MarshalPKCS8PrivateKey(edKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		pem  string
		cert *x509.Certificate
	}{
		"EC PKCS8":                     {ec.KeyPEM(t), ec.Cert},
		"EC SEC1":                      {ec.LegacyKeyPEM(t), ec.Cert},
		"RSA PKCS8":                    {rsa.KeyPEM(t), rsa.Cert},
		"RSA PKCS1":                    {rsa.LegacyKeyPEM(t), rsa.Cert},
		"after a certificate":          {ec.CertPEM() + ec.KeyPEM(t), ec.Cert},
		"Ed25519 PKCS8 (no cert here)": {string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER})), nil},
	} {
		key, err := ParsePrivateKey([]byte(tc.pem))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if tc.cert != nil && !Matches(tc.cert, key) {
			t.Errorf("%s: the key does not match its certificate", name)
		}
		if tc.cert != nil && Matches(ca.Cert, key) {
			t.Errorf("%s: the key matches another certificate", name)
		}
	}
}

// Errors say what is wrong in words of their own and never quote PEM.
func TestParsePrivateKeyErrors(t *testing.T) {
	ca := testpki.CA(t, "test CA")
	good := testpki.Leaf(t, ca, testpki.Options{}).KeyPEM(t)
	body := strings.Split(good, "\n")[1]
	garbled := strings.Replace(good, body, "AAAA"+body[4:], 1)
	for _, tc := range []struct {
		name, pem, want string
	}{
		{"no PEM", "not a key " + body, "holds no PEM private key block"},
		{"only a certificate", ca.CertPEM(), "holds no PEM private key block"},
		{"garbled", garbled, "has a PRIVATE KEY block that does not parse"},
		{"PKCS8 encrypted", "-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + body + "\n-----END ENCRYPTED PRIVATE KEY-----\n", ErrEncrypted.Error()},
		{"legacy encrypted", "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\n" + body + "\n-----END RSA PRIVATE KEY-----\n", ErrEncrypted.Error()},
	} {
		_, err := ParsePrivateKey([]byte(tc.pem))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), body[:20]) {
			t.Errorf("%s: the error quotes the PEM: %v", tc.name, err)
		}
	}
	if _, err := ParsePrivateKey([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")); !errors.Is(err, ErrEncrypted) {
		t.Errorf("an encrypted key: %v, want ErrEncrypted", err)
	}
}

func TestParseCertificatesAndChain(t *testing.T) {
	root := testpki.CA(t, "root")
	leaf := testpki.Leaf(t, root, testpki.Options{CommonName: "relay1"})
	other := testpki.CA(t, "other")

	certs, err := ParseCertificates([]byte("# test only\n" + leaf.CertPEM(root)))
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || certs[0].Subject.CommonName != "relay1" || certs[1].Subject.CommonName != "root" {
		t.Fatalf("got %d certificates, want relay1 then root", len(certs))
	}
	if err := CheckChain(certs); err != nil {
		t.Errorf("a chain in order: %v", err)
	}
	reversed, _ := ParseCertificates([]byte(root.CertPEM(leaf)))
	if err := CheckChain(reversed); err == nil || err.Error() != "is not a chain in order, leaf first: certificate 1 is not signed by certificate 2 (or that one is not a CA)" {
		t.Errorf("a reversed chain: %v", err)
	}
	stranger, _ := ParseCertificates([]byte(leaf.CertPEM(other)))
	if err := CheckChain(stranger); err == nil {
		t.Error("a leaf followed by a CA that did not sign it passes")
	}

	if _, err := ParseCertificates([]byte(leaf.KeyPEM(t))); err == nil || err.Error() != "holds no PEM CERTIFICATE block" {
		t.Errorf("a key only: %v", err)
	}
	bad := "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	if _, err := ParseCertificates([]byte(leaf.CertPEM() + bad)); err == nil || !strings.HasPrefix(err.Error(), "does not parse (certificate 2): x509: ") {
		t.Errorf("a bad second block: %v", err)
	}
}
