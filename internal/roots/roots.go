// Package roots builds the certificate pool sealrelay verifies TLS peers
// (relays, Vault) against: the system roots plus an operator's ca_file.
package roots

import (
	"crypto/x509"
	"fmt"
	"os"
)

// Load returns the system roots plus the PEM certificates in caFile ("" adds
// none). Errors name the file.
func Load(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading ca_file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s: no PEM certificate found", caFile)
	}
	return pool, nil
}
