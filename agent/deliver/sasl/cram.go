package sasl

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"errors"

	gosasl "github.com/emersion/go-sasl"
)

// cramMD5 is the CRAM-MD5 client (RFC 2195).
type cramMD5 struct {
	username, password string
	answered           bool
}

// NewCRAMMD5Client returns a CRAM-MD5 client (RFC 2195): AUTH without an
// initial response, then, to the server's challenge, "user digest" where
// digest is the lower-case hex HMAC-MD5 of the challenge keyed with the
// password. The password never crosses the wire, but the server must hold
// it in the clear; Choose ranks CRAM-MD5 below SCRAM and above PLAIN.
func NewCRAMMD5Client(username, password string) gosasl.Client {
	return &cramMD5{username: username, password: password}
}

func (a *cramMD5) Start() (string, []byte, error) { return CRAMMD5, nil, nil }

func (a *cramMD5) Next(challenge []byte) ([]byte, error) {
	if a.answered {
		return nil, errors.New("CRAM-MD5: the server sent a second challenge")
	}
	if len(challenge) == 0 {
		return nil, errors.New("CRAM-MD5: the server's challenge is empty")
	}
	a.answered = true
	return []byte(a.username + " " + cramDigest(a.password, challenge)), nil
}

// cramDigest is the hex HMAC-MD5 of challenge keyed with password.
func cramDigest(password string, challenge []byte) string {
	m := hmac.New(md5.New, []byte(password))
	m.Write(challenge)
	return hex.EncodeToString(m.Sum(nil))
}
