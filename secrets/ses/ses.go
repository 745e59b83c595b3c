// Package ses derives the Amazon SES SMTP password from an IAM secret
// access key, in memory: the credential file and Vault hold the access key
// id, the secret access key and the region of an entry of kind "ses", and
// what the relay sees is the access key id as the user name and the
// derived password, spoken with any password mechanism.
//
// It lives under secrets/ because the derivation is part of opening the
// credential: a Source turns an "ses" entry into a password credential,
// and the delivery code never learns the secret access key.
//
// Neither the secret access key nor the password it derives appears in
// any error.
package ses

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
)

// version is the SMTP password version the derivation makes (the first
// byte of the decoded password).
const version = 0x04

// regionName is the shape of an AWS region name: "eu-central-1",
// "us-gov-west-1".
var regionName = regexp.MustCompile(`^[a-z]{2,}(-[a-z]+)+-[0-9]+$`)

// ValidRegion reports whether region has the shape of an AWS region name
// ("eu-central-1", "us-gov-west-1"), as SMTPPassword requires.
func ValidRegion(region string) bool { return regionName.MatchString(region) }

// SMTPPassword returns the SES SMTP password (version 4) for an IAM
// secret access key in region: HMAC-SHA256 keyed with "AWS4"+secret over
// "11111111", then over the region, "ses", "aws4_request" and
// "SendRawEmail", each keyed with the previous result; the byte 0x04 and
// that signature, base64 (standard, padded). The SMTP user name is the
// access key id.
//
// The password is specific to the region: SES in another region refuses
// it.
func SMTPPassword(secretAccessKey, region string) (string, error) {
	if secretAccessKey == "" {
		return "", errors.New("ses: the secret access key is empty")
	}
	if !ValidRegion(region) {
		return "", fmt.Errorf("ses: region %q is not an AWS region name (like eu-central-1)", region)
	}
	sig := []byte("AWS4" + secretAccessKey)
	for _, msg := range []string{"11111111", region, "ses", "aws4_request", "SendRawEmail"} {
		m := hmac.New(sha256.New, sig)
		m.Write([]byte(msg))
		sig = m.Sum(nil)
	}
	return base64.StdEncoding.EncodeToString(append([]byte{version}, sig...)), nil
}
