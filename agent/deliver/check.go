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
	// Mechanism and Username describe a successful AUTH.
	Mechanism, Username string
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
// says QUIT. It sends no mail and uses no pooled connection.
func (d *Deliverer) Check(ctx context.Context) []CheckResult {
	out := make([]CheckResult, len(d.relays))
	for i, r := range d.relays {
		res := CheckResult{Relay: r.cfg.Name, Address: r.cfg.Address, Policy: r.cfg.Auth, Token: r.checkToken(ctx)}
		cn, est, err := r.establish(ctx)
		if err != nil {
			res.Err = err
		} else {
			res.OK = true
			if cn.tlsState != nil {
				res.TLS = tls.VersionName(cn.tlsState.Version)
			}
			if cn.authed {
				res.Mechanism, res.Username = cn.mech, cn.cred.Username
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
