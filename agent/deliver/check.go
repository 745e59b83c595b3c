package deliver

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
)

// CheckResult is what Check found for one relay.
type CheckResult struct {
	Relay   string
	Address string
	Policy  AuthPolicy
	// OK is true when the relay took a connection as its policy asks:
	// TLS as configured and, under required, AUTH.
	OK bool
	// TLS describes the connection's TLS ("TLS 1.3"), "" without TLS.
	TLS string
	// Mechanism and Username describe a successful AUTH (for EXTERNAL,
	// Username is the certificate's subject).
	Mechanism, Username string
	// ClientCertificate is the relay's client certificate entry, "" for
	// none. With one, a failure fails check whatever the auth policy: the
	// certificate is the relay's standing.
	ClientCertificate string
	// Certificate is the subject of the client certificate the handshake
	// showed, "" if the relay did not ask for it.
	Certificate string
	// Warning is set under auth = enabled when AUTH failed and deliveries
	// would go on without it.
	Warning string
	// Token is the token step of an oauth2 credential, tried before the
	// connection; nil for other kinds.
	Token *TokenCheck
	// Err says what failed; it is a *ConnError.
	Err error
}

// String is the one line `sealrelay check` prints for the relay.
func (c CheckResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "relay %s (%s): ", c.Relay, c.Address)
	if !c.OK {
		fmt.Fprintf(&b, "FAILED: %v", c.Err)
		return b.String()
	}
	b.WriteString("ok")
	if c.TLS != "" {
		b.WriteString(", " + c.TLS)
	} else {
		b.WriteString(", no TLS")
	}
	if c.Certificate != "" {
		b.WriteString(", client certificate " + c.Certificate)
	}
	switch {
	case c.Mechanism != "":
		fmt.Fprintf(&b, ", AUTH %s as %s", c.Mechanism, c.Username)
	case c.Warning != "":
		b.WriteString(", WARNING: " + c.Warning + "; delivering without AUTH")
	default:
		b.WriteString(", no AUTH (auth = " + string(c.Policy) + ")")
	}
	return b.String()
}

// Check connects to each relay as a delivery would (TCP, TLS, AUTH under
// the relay's policy, with the same refresh and retry after a 535), then
// says QUIT. It sends no mail and uses no pooled connection. A relay whose
// only standing is the client certificate (it has one and did not
// authenticate) is asked whether it would relay: MAIL FROM:<>, RCPT TO
// postmaster at this host, QUIT (checkRelaying).
func (d *Deliverer) Check(ctx context.Context) []CheckResult {
	out := make([]CheckResult, len(d.relays))
	for i, r := range d.relays {
		res := CheckResult{Relay: r.cfg.Name, Address: r.cfg.Address, Policy: r.cfg.Auth, ClientCertificate: r.cfg.ClientCertificate,
			Token: r.checkToken(ctx)}
		cn, est, err := r.establish(ctx)
		if err == nil && r.cfg.ClientCertificate != "" && !cn.authed {
			if err = cn.checkRelaying(ctx); err != nil {
				cn.quit()
			}
		}
		if err != nil {
			res.Err = err
		} else {
			res.OK = true
			if cn.tlsState != nil {
				res.TLS = tls.VersionName(cn.tlsState.Version)
			}
			if info, ok := cn.clientCert.CertificateInfo(); ok && cn.clientCertUse == credUsed {
				res.Certificate = info.Subject
			}
			if cn.authed {
				res.Mechanism, res.Username = cn.mech, cn.cred.Username
				if info, ok := cn.cred.CertificateInfo(); ok && certificateKind(cn.cred) {
					res.Username = info.Subject
				}
			}
			if est.fallback != nil {
				res.Warning = est.fallback.Error()
			}
			cn.quit()
		}
		out[i] = res
	}
	return out
}
