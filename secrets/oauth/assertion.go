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
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sealrelay/sealrelay/secrets/pemkey"
)

// AssertionType is the client_assertion_type of a private_key_jwt token
// request (RFC 7523 section 2.2).
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// AssertionLifetime is how long a client assertion is valid (its exp);
// each token request signs a fresh one.
const AssertionLifetime = 5 * time.Minute

// signer signs client assertions with one private key.
type signer struct {
	key    crypto.Signer
	alg    string // RS256 or ES256
	header []byte // the JSON header, the same for every assertion
}

// Format hides the key whatever the verb.
func (s *signer) Format(f fmt.State, _ rune) { fmt.Fprintf(f, "oauth2 assertion signer %s", s.alg) }

// newSigner parses the private key (and the certificate, if any) and
// builds the assertion header: alg, typ, kid if keyID is set, x5t and
// x5t#S256 if a certificate is. Errors never quote key material.
func newSigner(certPEM string, keyPEM Secret, keyID string) (*signer, error) {
	key, err := parsePrivateKey([]byte(keyPEM.Reveal()))
	if err != nil {
		return nil, err
	}
	s := &signer{key: key}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("oauth2: private_key is RSA with %d bits; at least 2048 are needed", k.N.BitLen())
		}
		s.alg = "RS256"
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("oauth2: private_key is ECDSA on %s; only P-256 (ES256) is supported", k.Curve.Params().Name)
		}
		s.alg = "ES256"
	default:
		return nil, fmt.Errorf("oauth2: private_key is %T; RSA or ECDSA P-256 is needed", key)
	}
	h := map[string]string{"alg": s.alg, "typ": "JWT"}
	if keyID != "" {
		h["kid"] = keyID
	}
	if certPEM != "" {
		leaf, err := parseLeaf([]byte(certPEM))
		if err != nil {
			return nil, err
		}
		if !pemkey.Matches(leaf, key) {
			return nil, errors.New("oauth2: certificate does not hold the public key of private_key")
		}
		sum1 := sha1.Sum(leaf.Raw)
		sum256 := sha256.Sum256(leaf.Raw)
		h["x5t"] = base64.RawURLEncoding.EncodeToString(sum1[:])
		h["x5t#S256"] = base64.RawURLEncoding.EncodeToString(sum256[:])
	}
	s.header, _ = json.Marshal(h) // a map of strings always marshals
	return s, nil
}

// parsePrivateKey reads the first private key block of PEM data.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	key, err := pemkey.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("oauth2: private_key %w", err)
	}
	return key, nil
}

// parseLeaf returns the first certificate of a PEM chain.
func parseLeaf(data []byte) (*x509.Certificate, error) {
	certs, err := pemkey.ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("oauth2: certificate %w", err)
	}
	return certs[0], nil
}

// sign returns a client assertion (RFC 7523 section 3): iss and sub the
// client id, aud the token endpoint, a fresh jti, iat and nbf now, exp
// AssertionLifetime later.
func (s *signer) sign(clientID, audience string, now time.Time) (string, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("oauth2: client assertion id: %w", err)
	}
	claims, err := json.Marshal(map[string]any{
		"iss": clientID,
		"sub": clientID,
		"aud": audience,
		"jti": hex.EncodeToString(jti),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(AssertionLifetime).Unix(),
	})
	if err != nil {
		return "", fmt.Errorf("oauth2: client assertion claims: %w", err)
	}
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString(s.header) + "." + enc.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signed))
	var sig []byte
	switch k := s.key.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest[:])
	case *ecdsa.PrivateKey:
		var r, sv []byte
		rr, ss, e := ecdsa.Sign(rand.Reader, k, digest[:])
		if e == nil {
			r, sv = rr.FillBytes(make([]byte, 32)), ss.FillBytes(make([]byte, 32))
		}
		sig, err = append(r, sv...), e
	}
	if err != nil {
		return "", fmt.Errorf("oauth2: signing the client assertion: %w", err)
	}
	return signed + "." + enc.EncodeToString(sig), nil
}
