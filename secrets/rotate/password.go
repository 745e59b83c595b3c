package rotate

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
)

// Password says how a new password is made: Length characters, each drawn
// uniformly from Alphabet with crypto/rand.
type Password struct {
	Length   int
	Alphabet string
}

// New makes a password.
func (p Password) New() (string, error) {
	if p.Length <= 0 || len(p.Alphabet) < 2 {
		return "", errors.New("rotate: a password needs a length and an alphabet of at least 2 characters")
	}
	n := big.NewInt(int64(len(p.Alphabet)))
	out := make([]byte, p.Length)
	for i := range out {
		k, err := rand.Int(rand.Reader, n)
		if err != nil {
			return "", fmt.Errorf("rotate: reading random bytes: %w", err)
		}
		out[i] = p.Alphabet[k.Int64()]
	}
	return string(out), nil
}
