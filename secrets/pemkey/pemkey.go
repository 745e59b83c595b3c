// Package pemkey parses PEM private keys and certificate chains in memory,
// for the credential kinds that hold them (a TLS client certificate, an
// OAuth2 client's private_key_jwt key).
//
// It promises that no error quotes PEM content: errors say which block
// failed and why, in words of their own. Its error texts are fragments
// meant to follow the name of the key that held the PEM ("private_key
// holds no PEM private key block").
package pemkey

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ErrEncrypted is returned for a private key encrypted with a passphrase:
// the credential store seals keys, so they are given unencrypted.
var ErrEncrypted = errors.New("is encrypted; give it unencrypted (the credential store seals it)")

// ParsePrivateKey reads the first private key block of data: PKCS #8
// ("PRIVATE KEY"), PKCS #1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE
// KEY"). Other blocks before it (a certificate) are skipped. An encrypted
// key is refused with ErrEncrypted.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("holds no PEM private key block")
		}
		if _, encrypted := b.Headers["Proc-Type"]; encrypted {
			return nil, ErrEncrypted
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, ErrEncrypted
		default:
			continue
		}
		if err != nil {
			// x509's message is dropped: it is about the key's bytes.
			return nil, fmt.Errorf("has a %s block that does not parse", b.Type)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("is %T, which cannot sign", key)
		}
		return s, nil
	}
}

// ParseCertificates reads every CERTIFICATE block of data, in order, and
// skips other blocks. At least one is needed.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	var blocks int
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		blocks++
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("does not parse (certificate %d): %w", blocks, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("holds no PEM CERTIFICATE block")
	}
	return certs, nil
}

// CheckChain checks that certs is a chain in order, leaf first: each
// certificate is signed by the one after it.
func CheckChain(certs []*x509.Certificate) error {
	for i := 0; i+1 < len(certs); i++ {
		if err := certs[i].CheckSignatureFrom(certs[i+1]); err != nil {
			return fmt.Errorf("is not a chain in order, leaf first: certificate %d is not signed by certificate %d (or that one is not a CA)", i+1, i+2)
		}
	}
	return nil
}

// Matches reports whether cert holds the public half of key.
func Matches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(key.Public())
}
