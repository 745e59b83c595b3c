package deliver

// Which credential AUTH uses, which mechanism it speaks and which SASL
// client speaks it (docs/auth.md, "Mechanisms").

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	gosasl "github.com/emersion/go-sasl"

	"github.com/sealrelay/sealrelay/agent/deliver/sasl"
	"github.com/sealrelay/sealrelay/secrets"
)

// checkMechanisms spells rc's mechanisms in upper case (DefaultMechanisms
// when it has none) and refuses a name no SASL client here speaks, and
// EXTERNAL without a client certificate or with a credential.
func checkMechanisms(rc *Relay) error {
	if len(rc.Mechanisms) == 0 {
		rc.Mechanisms = DefaultMechanisms
	}
	mechs := make([]string, len(rc.Mechanisms))
	for i, m := range rc.Mechanisms {
		mechs[i] = strings.ToUpper(m)
		if _, ok := sasl.Known(m); !ok {
			return fmt.Errorf("SASL mechanism %q is not supported (supported: %s)", m, strings.Join(supportedMechanisms, ", "))
		}
	}
	rc.Mechanisms = mechs
	if slices.Contains(mechs, sasl.External) && (rc.ClientCertificate == "" || rc.Credential != "") {
		return errors.New("EXTERNAL authenticates with the client certificate alone: it needs a client certificate and no credential")
	}
	return nil
}

// supportedMechanisms are the names checkMechanisms accepts, for its
// error.
var supportedMechanisms = []string{sasl.Plain, sasl.Login, sasl.CRAMMD5, sasl.SCRAMSHA1, sasl.SCRAMSHA256, sasl.XOAuth2, sasl.OAuthBearer, sasl.External}

// authCredential names the entry AUTH uses: the credential, or without
// one the client certificate when EXTERNAL is configured; "" for none.
func (rc *Relay) authCredential() string {
	if rc.Credential == "" && slices.Contains(rc.Mechanisms, sasl.External) {
		return rc.ClientCertificate
	}
	return rc.Credential
}

// saslKind is the kind of secret cred hands to AUTH.
func saslKind(cred secrets.Credential) (sasl.Kind, error) {
	switch cred.Kind() {
	case secrets.KindPassword, secrets.KindSES:
		return sasl.KindPassword, nil
	case secrets.KindOAuth2:
		return sasl.KindOAuth2, nil
	case secrets.KindCertificate:
		return sasl.KindCertificate, nil
	}
	return 0, fmt.Errorf("credential %q is of kind %s, which AUTH cannot use", cred.Name, cred.Kind())
}

// chooseMech picks the mechanism for cred: the strongest configured one
// the relay offers (sasl.Choose). EXTERNAL needs the client certificate
// to have been shown in this connection's handshake.
func (r *relay) chooseMech(cn *conn, cred secrets.Credential) (string, error) {
	kind, err := saslKind(cred)
	if err != nil {
		return "", err
	}
	_, offered := cn.c.Extension("AUTH")
	mech, err := sasl.Choose(kind, r.cfg.Mechanisms, strings.Fields(offered))
	if err != nil {
		return "", err
	}
	if mech == sasl.External && cn.clientCertUse != credUsed {
		return "", errors.New("EXTERNAL not sent: the relay did not ask for the client certificate in the TLS handshake")
	}
	return mech, nil
}

// saslClient returns the SASL client that speaks mech with cred.
func saslClient(mech string, cred secrets.Credential) (gosasl.Client, error) {
	kind, err := saslKind(cred)
	if err != nil {
		return nil, err
	}
	switch kind {
	case sasl.KindPassword:
		return sasl.NewPasswordClient(mech, cred.Username, cred.Password())
	case sasl.KindCertificate:
		// The identity is the certificate's: no authorization identity.
		return gosasl.NewExternalClient(""), nil
	}
	return nil, fmt.Errorf("%s with a credential of kind %s is not available", mech, cred.Kind())
}

// authAs names an AUTH exchange for errors and logs: "PLAIN as user", or
// for EXTERNAL the certificate's subject.
func authAs(mech string, cred secrets.Credential) string {
	if info, ok := cred.CertificateInfo(); ok && certificateKind(cred) {
		return mech + " with certificate " + info.Subject
	}
	return mech + " as " + cred.Username
}
