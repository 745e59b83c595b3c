// Package testpki makes certificates and keys for tests (test only): a CA,
// leaf certificates signed by it, and their PEM forms, so that tests of
// certificate credentials never carry key material in the tree.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// Cert is a certificate and its private key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Options shape a certificate. The zero value is a P-256 key, valid from
// an hour ago for a year.
type Options struct {
	CommonName string
	NotBefore  time.Time
	NotAfter   time.Time
	RSA        bool // a 2048-bit RSA key instead of P-256
}

// CA returns a self-signed CA certificate.
func CA(t testing.TB, name string) Cert {
	t.Helper()
	return issue(t, Options{CommonName: name}, true, nil)
}

// Leaf returns a TLS client certificate signed by ca.
func Leaf(t testing.TB, ca Cert, opt Options) Cert {
	t.Helper()
	return issue(t, opt, false, &ca)
}

func issue(t testing.TB, opt Options, isCA bool, parent *Cert) Cert {
	t.Helper()
	var key crypto.Signer
	var err error
	if opt.RSA {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	if opt.NotBefore.IsZero() {
		opt.NotBefore = time.Now().Add(-time.Hour)
	}
	if opt.NotAfter.IsZero() {
		opt.NotAfter = opt.NotBefore.Add(365 * 24 * time.Hour)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opt.CommonName, Organization: []string{"sealrelay test only"}},
		NotBefore:             opt.NotBefore,
		NotAfter:              opt.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if isCA {
		tmpl.IsCA = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = nil
	}
	signer, parentCert := key, tmpl
	if parent != nil {
		signer, parentCert = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return Cert{Cert: cert, Key: key}
}

// CertPEM returns the certificate, followed by the chain given, as PEM.
func (c Cert) CertPEM(chain ...Cert) string {
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
	for _, p := range chain {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Cert.Raw})...)
	}
	return string(b)
}

// KeyPEM returns the private key as PKCS #8 PEM.
func (c Cert) KeyPEM(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// LegacyKeyPEM returns the private key in its older form: PKCS #1 ("RSA
// PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY").
func (c Cert) LegacyKeyPEM(t testing.TB) string {
	t.Helper()
	switch k := c.Key.(type) {
	case *rsa.PrivateKey:
		return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	}
	t.Fatalf("testpki: no legacy form for %T", c.Key)
	return ""
}

// Pool returns a pool holding only c, as a relay's client CA.
func (c Cert) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Cert)
	return p
}
