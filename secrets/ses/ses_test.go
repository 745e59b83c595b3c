package ses

import (
	"strings"
	"testing"
)

// The published vectors.
func TestSMTPPassword(t *testing.T) {
	for _, tc := range []struct{ region, secret, want string }{
		{"eu-central-1", "some+secret+key", "BMXhUYlu5Z3gSXVQORxlVa7XPaz91aGWdfHxvkOZdWZ2"},
		{"us-west-1", "another+secret+key", "BKVmjjMDFk/qqw8EROW99bjCS65PF8WKvK5bSr4Y6EqF"},
	} {
		got, err := SMTPPassword(tc.secret, tc.region)
		if err != nil || got != tc.want {
			t.Errorf("SMTPPassword(%q, %q) = %q, %v; want %q", tc.secret, tc.region, got, err, tc.want)
		}
	}
	a, _ := SMTPPassword("some+secret+key", "eu-west-1")
	if a == "BMXhUYlu5Z3gSXVQORxlVa7XPaz91aGWdfHxvkOZdWZ2" {
		t.Error("another region gave the same password")
	}
}

// Errors name what is wrong and never hold the secret.
func TestSMTPPasswordErrors(t *testing.T) {
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	for _, tc := range []struct{ secret, region, want string }{
		{"", "eu-central-1", "ses: the secret access key is empty"},
		{secret, "", `ses: region "" is not an AWS region name (like eu-central-1)`},
		{secret, "Frankfurt", `ses: region "Frankfurt" is not an AWS region name (like eu-central-1)`},
		{secret, "email-smtp.eu-central-1.amazonaws.com", `ses: region "email-smtp.eu-central-1.amazonaws.com" is not an AWS region name (like eu-central-1)`},
	} {
		_, err := SMTPPassword(tc.secret, tc.region)
		if err == nil || err.Error() != tc.want {
			t.Errorf("SMTPPassword(_, %q) = %v, want %q", tc.region, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("the error holds the secret")
		}
	}
	for _, region := range []string{"us-gov-west-1", "ap-southeast-2", "il-central-1", "cn-north-1"} {
		if _, err := SMTPPassword(secret, region); err != nil {
			t.Errorf("region %s: %v", region, err)
		}
	}
}
