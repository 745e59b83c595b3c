package oauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

var (
	testRSAKey *rsa.PrivateKey
	testECKey  *ecdsa.PrivateKey
)

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	if testRSAKey == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		testRSAKey = k
	}
	return testRSAKey
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	if testECKey == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		testECKey = k
	}
	return testECKey
}

func pkcs8PEM(t testing.TB, key any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func rsaKeyPEM(t testing.TB) string { return pkcs8PEM(t, rsaKey(t)) }

// selfSigned returns a PEM certificate for key's public half.
func selfSigned(t testing.TB, key crypto.Signer) (string, []byte) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sealrelay test client (test only)"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), der
}

// decodeJWT splits a JWT into its header, claims and signature.
func decodeJWT(t *testing.T, jwt string) (map[string]any, map[string]any, string, []byte) {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("assertion has %d parts", len(parts))
	}
	var h, c map[string]any
	for i, dst := range []*map[string]any{&h, &c} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	return h, c, parts[0] + "." + parts[1], sig
}

// Assertions carry the RFC 7523 claims, the header names the key (kid,
// or the certificate's thumbprints), and the signature verifies with the
// public key: RS256 for RSA, ES256 (raw r||s) for P-256.
func TestAssertion(t *testing.T) {
	rk, ek := rsaKey(t), ecKey(t)
	certPEM, certDER := selfSigned(t, rk)
	s1, s256 := sha1.Sum(certDER), sha256.Sum256(certDER)
	x5t, x5tS256 := base64.RawURLEncoding.EncodeToString(s1[:]), base64.RawURLEncoding.EncodeToString(s256[:])
	// PKCS #1 and SEC 1 PEM are read too.
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}))
	sec1der, _ := x509.MarshalECPrivateKey(ek)
	sec1 := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1der}))

	for _, tc := range []struct {
		name, key, cert, kid string
		header               map[string]any
	}{
		{"RS256 kid", pkcs8PEM(t, rk), "", "k1", map[string]any{"alg": "RS256", "typ": "JWT", "kid": "k1"}},
		{"RS256 PKCS1 certificate", pkcs1, certPEM, "", map[string]any{"alg": "RS256", "typ": "JWT", "x5t": x5t, "x5t#S256": x5tS256}},
		{"RS256 certificate and kid", pkcs8PEM(t, rk), certPEM, "k2", map[string]any{"alg": "RS256", "typ": "JWT", "kid": "k2", "x5t": x5t, "x5t#S256": x5tS256}},
		{"ES256 kid", pkcs8PEM(t, ek), "", "e1", map[string]any{"alg": "ES256", "typ": "JWT", "kid": "e1"}},
		{"ES256 SEC1", sec1, "", "", map[string]any{"alg": "ES256", "typ": "JWT"}},
	} {
		s, err := newSigner(tc.cert, NewSecret(tc.key), tc.kid)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		now := time.Unix(1_800_000_000, 0)
		a1, err := s.sign("client-1", "https://idp.example/token", now)
		if err != nil {
			t.Fatal(err)
		}
		a2, _ := s.sign("client-1", "https://idp.example/token", now)
		h, c, signed, sig := decodeJWT(t, a1)
		_, c2, _, _ := decodeJWT(t, a2)
		if len(h) != len(tc.header) {
			t.Errorf("%s: header %v, want %v", tc.name, h, tc.header)
		}
		for k, v := range tc.header {
			if h[k] != v {
				t.Errorf("%s: header %s = %v, want %v", tc.name, k, h[k], v)
			}
		}
		want := map[string]any{"iss": "client-1", "sub": "client-1", "aud": "https://idp.example/token",
			"iat": float64(now.Unix()), "nbf": float64(now.Unix()), "exp": float64(now.Add(5 * time.Minute).Unix())}
		for k, v := range want {
			if c[k] != v {
				t.Errorf("%s: claim %s = %v, want %v", tc.name, k, c[k], v)
			}
		}
		if jti, _ := c["jti"].(string); len(jti) < 16 || c2["jti"] == jti {
			t.Errorf("%s: jti %v then %v, want fresh ones", tc.name, c["jti"], c2["jti"])
		}
		digest := sha256.Sum256([]byte(signed))
		switch h["alg"] {
		case "RS256":
			if err := rsa.VerifyPKCS1v15(&rk.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
				t.Errorf("%s: RS256 signature: %v", tc.name, err)
			}
		case "ES256":
			if len(sig) != 64 || !ecdsa.Verify(&ek.PublicKey, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
				t.Errorf("%s: ES256 signature (%d bytes) does not verify", tc.name, len(sig))
			}
		}
	}
}

// Keys and certificates that cannot be used are refused with a message
// that names the problem and quotes no key material.
func TestAssertionKeyErrors(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, _ := selfSigned(t, ecKey(t))
	good := rsaKeyPEM(t)
	garbled := strings.Replace(good, strings.Split(good, "\n")[2], strings.Repeat("A", 64), 1)
	for _, tc := range []struct{ name, key, cert, want string }{
		{"no PEM", "not a key", "", "oauth2: private_key holds no PEM private key block"},
		{"only a certificate", otherCert, "", "oauth2: private_key holds no PEM private key block"},
		{"garbled", garbled, "", "oauth2: private_key has a PRIVATE KEY block that does not parse"},
		{"encrypted", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "",
			"oauth2: private_key is encrypted; give it unencrypted (the credential store seals it)"},
		{"legacy encrypted", "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n-----END RSA PRIVATE KEY-----\n", "",
			"oauth2: private_key is encrypted; give it unencrypted (the credential store seals it)"},
		{"RSA 1024", pkcs8PEM(t, small), "", "oauth2: private_key is RSA with 1024 bits; at least 2048 are needed"},
		{"P-384", pkcs8PEM(t, p384), "", "oauth2: private_key is ECDSA on P-384; only P-256 (ES256) is supported"},
		{"certificate of another key", good, otherCert, "oauth2: certificate does not hold the public key of private_key"},
		{"certificate garbage", good, "nope", "oauth2: certificate holds no PEM CERTIFICATE block"},
	} {
		_, err := newSigner(tc.cert, NewSecret(tc.key), "")
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v\nwant %s", tc.name, err, tc.want)
		}
		for _, line := range strings.Split(tc.key, "\n")[1:] {
			if len(line) > 16 && err != nil && strings.Contains(err.Error(), line[:16]) {
				t.Errorf("%s: the error quotes the key", tc.name)
			}
		}
	}
}
