package sasl

import (
	"errors"
	"strings"
	"testing"
)

func TestChoose(t *testing.T) {
	all := []string{"SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "EXTERNAL"}
	for _, tc := range []struct {
		name       string
		kind       Kind
		configured []string
		offered    []string
		want       string // "" for no mechanism
	}{
		{"configured order among equals", KindPassword, []string{"LOGIN", "PLAIN"}, []string{"PLAIN", "LOGIN"}, "LOGIN"},
		{"configured order among equals, other way", KindPassword, []string{"PLAIN", "LOGIN"}, []string{"LOGIN", "PLAIN"}, "PLAIN"},
		{"stronger configured later wins", KindPassword, []string{"PLAIN", "SCRAM-SHA-256"}, []string{"PLAIN", "SCRAM-SHA-256"}, "SCRAM-SHA-256"},
		{"stronger only when offered", KindPassword, []string{"SCRAM-SHA-256", "PLAIN"}, []string{"PLAIN", "LOGIN"}, "PLAIN"},
		{"CRAM-MD5 over PLAIN", KindPassword, []string{"PLAIN", "LOGIN", "CRAM-MD5"}, []string{"LOGIN", "PLAIN", "CRAM-MD5"}, "CRAM-MD5"},
		{"SCRAM-SHA-1 over CRAM-MD5", KindPassword, []string{"CRAM-MD5", "SCRAM-SHA-1"}, all, "SCRAM-SHA-1"},
		{"SCRAM-SHA-256 over SCRAM-SHA-1", KindPassword, []string{"SCRAM-SHA-1", "SCRAM-SHA-256"}, all, "SCRAM-SHA-256"},
		{"only a configured one", KindPassword, []string{"PLAIN"}, all, "PLAIN"},
		{"CRAM-MD5-only relay", KindPassword, []string{"SCRAM-SHA-256", "CRAM-MD5", "PLAIN"}, []string{"CRAM-MD5"}, "CRAM-MD5"},
		{"case does not matter", KindPassword, []string{"scram-sha-256", "plain"}, []string{"plain", "Scram-Sha-256"}, "SCRAM-SHA-256"},
		{"not offered", KindPassword, []string{"PLAIN", "LOGIN"}, []string{"CRAM-MD5"}, ""},
		{"oauth2 only for oauth2", KindPassword, []string{"XOAUTH2", "PLAIN"}, []string{"XOAUTH2"}, ""},
		{"password mechs not for oauth2", KindOAuth2, []string{"PLAIN", "XOAUTH2"}, []string{"PLAIN"}, ""},
		{"oauth2 configured order", KindOAuth2, []string{"OAUTHBEARER", "XOAUTH2"}, all, "OAUTHBEARER"},
		{"oauth2 configured order, other way", KindOAuth2, []string{"XOAUTH2", "OAUTHBEARER"}, all, "XOAUTH2"},
		{"oauth2 skips password mechs", KindOAuth2, []string{"SCRAM-SHA-256", "XOAUTH2"}, all, "XOAUTH2"},
		{"EXTERNAL for a certificate", KindCertificate, []string{"PLAIN", "EXTERNAL"}, all, "EXTERNAL"},
		{"EXTERNAL not for a password", KindPassword, []string{"EXTERNAL"}, all, ""},
		{"unknown names skipped", KindPassword, []string{"DIGEST-MD5", "PLAIN"}, []string{"DIGEST-MD5", "PLAIN"}, "PLAIN"},
		{"nothing offered", KindPassword, []string{"PLAIN"}, nil, ""},
		{"nothing configured", KindPassword, nil, all, ""},
	} {
		got, err := Choose(tc.kind, tc.configured, tc.offered)
		if got != tc.want {
			t.Errorf("%s: Choose(%s, %v, %v) = %q, %v; want %q", tc.name, tc.kind, tc.configured, tc.offered, got, err, tc.want)
		}
		var nm *NoMechanismError
		if (tc.want == "") != errors.As(err, &nm) {
			t.Errorf("%s: error %v, want a *NoMechanismError exactly when nothing is chosen", tc.name, err)
		}
	}
}

// The error says what the relay offers and what was configured for the
// credential's kind, or that nothing configured fits the kind.
func TestNoMechanismError(t *testing.T) {
	for _, tc := range []struct {
		kind                Kind
		configured, offered []string
		want                string
	}{
		{KindPassword, []string{"PLAIN", "LOGIN"}, []string{"CRAM-MD5", "SCRAM-SHA-256"},
			"no mechanism in common: the relay offers CRAM-MD5 SCRAM-SHA-256; configured for a password credential: PLAIN, LOGIN"},
		{KindOAuth2, []string{"PLAIN", "LOGIN"}, []string{"XOAUTH2"},
			"no mechanism in common: none of the configured mechanisms (PLAIN, LOGIN) takes a credential of kind oauth2 (OAUTHBEARER, XOAUTH2 do); the relay offers XOAUTH2"},
		{KindPassword, []string{"PLAIN"}, []string{"X\r\nINJECTED" + strings.Repeat("A", 50)},
			"no mechanism in common: the relay offers X??INJECTEDAAAAAAAAAAAAAAAAAAA...; configured for a password credential: PLAIN"},
	} {
		_, err := Choose(tc.kind, tc.configured, tc.offered)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Choose(%s, %v, %v): %v\nwant %s", tc.kind, tc.configured, tc.offered, err, tc.want)
		}
	}
}

func TestCheckConfigured(t *testing.T) {
	for _, tc := range []struct {
		kind       Kind
		configured []string
		want       string // "" for ok
	}{
		{KindPassword, []string{"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"}, ""},
		{KindPassword, []string{"cram-md5"}, ""},
		{KindPassword, []string{"PLAIN", "XOAUTH2"}, ""}, // XOAUTH2 is simply not used for a password
		{KindOAuth2, []string{"XOAUTH2", "OAUTHBEARER"}, ""},
		{KindCertificate, []string{"EXTERNAL"}, ""},
		{KindPassword, []string{"DIGEST-MD5"}, `sasl: mechanism "DIGEST-MD5" is not supported (supported: CRAM-MD5, EXTERNAL, LOGIN, OAUTHBEARER, PLAIN, SCRAM-SHA-1, SCRAM-SHA-256, XOAUTH2)`},
		{KindOAuth2, []string{"PLAIN", "LOGIN"}, "sasl: none of the mechanisms PLAIN, LOGIN takes a credential of kind oauth2 (OAUTHBEARER, XOAUTH2)"},
		{KindPassword, []string{"XOAUTH2"}, "sasl: none of the mechanisms XOAUTH2 takes a credential of kind password (SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, LOGIN, PLAIN)"},
	} {
		err := CheckConfigured(tc.kind, tc.configured)
		if (tc.want == "" && err != nil) || (tc.want != "" && (err == nil || err.Error() != tc.want)) {
			t.Errorf("CheckConfigured(%s, %v) = %v, want %q", tc.kind, tc.configured, err, tc.want)
		}
	}
}

func TestStrengthAndKnown(t *testing.T) {
	order := []string{"SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN"}
	for i := 1; i < len(order); i++ {
		if Strength(order[i-1]) <= Strength(order[i]) {
			t.Errorf("Strength(%s) = %d is not above Strength(%s) = %d", order[i-1], Strength(order[i-1]), order[i], Strength(order[i]))
		}
	}
	if Strength("PLAIN") != Strength("login") || Strength("XOAUTH2") != Strength("OAUTHBEARER") || Strength("DIGEST-MD5") != 0 {
		t.Errorf("PLAIN=LOGIN, XOAUTH2=OAUTHBEARER and unknown=0 do not hold")
	}
	if k, ok := Known("xoauth2"); !ok || k != KindOAuth2 {
		t.Errorf("Known(xoauth2) = %v %v", k, ok)
	}
	if _, ok := Known("GSSAPI"); ok {
		t.Errorf("Known(GSSAPI) is true")
	}
}

// NewPasswordClient builds each password mechanism and refuses others.
func TestNewPasswordClient(t *testing.T) {
	for _, mech := range []string{"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "scram-sha-256"} {
		c, err := NewPasswordClient(mech, "user", "pencil")
		if err != nil {
			t.Fatalf("%s: %v", mech, err)
		}
		if got, _, _ := c.Start(); got != strings.ToUpper(mech) {
			t.Errorf("NewPasswordClient(%s).Start() names %s", mech, got)
		}
	}
	_, err := NewPasswordClient("XOAUTH2", "user", "pencil")
	if err == nil || err.Error() != `sasl: mechanism "XOAUTH2" cannot be used with a password` {
		t.Errorf("NewPasswordClient(XOAUTH2): %v", err)
	}
}
