package deliver

// TLS client certificates (docs/auth.md, "Client certificates"): the
// certificate a relay's handshake shows, read from the store at each
// handshake; the pooled connections it makes stale when it rotates; and
// the rule that a relay refusing this client at MAIL or RCPT defers the
// message rather than bounce it.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/secrets"
)

// tlsConfig is the TLS configuration of cn's handshake: the relay's, and,
// with a client certificate, a GetClientCertificate that reads it from
// the store when the relay asks for one and notes on cn which one it
// showed. A certificate that cannot be read fails the handshake: the
// relay would refuse this client anyway, and a failed handshake defers.
func (cn *conn) tlsConfig() *tls.Config {
	r := cn.r
	name := r.cfg.ClientCertificate
	if name == "" {
		return r.tlsConf
	}
	conf := r.tlsConf.Clone()
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cred, err := r.d.creds.Get(name)
		if err == nil {
			var cert tls.Certificate
			if cert, err = cred.Certificate(); err == nil {
				cn.clientCert, cn.clientCertUse = cred, credUsed
				return &cert, nil
			}
		}
		cn.clientCertUse = credUnavailable
		return nil, &ClientCertError{Name: name, Err: err}
	}
	return conf
}

// ClientCertError says the relay's client certificate could not be
// shown: the entry is unavailable, or is not a certificate.
type ClientCertError struct {
	Name string // the client_certificate entry
	Err  error
}

func (e *ClientCertError) Error() string {
	return fmt.Sprintf("client certificate %q not shown: %v", e.Name, e.Err)
}

func (e *ClientCertError) Unwrap() error { return e.Err }

// clientCertStale reports whether cn showed a client certificate that the
// store has since replaced: a new connection would show the new one.
func (r *relay) clientCertStale(cn *conn) bool {
	if cn.clientCertUse != credUsed {
		return false
	}
	cur, err := r.d.creds.Get(r.cfg.ClientCertificate)
	return err == nil && !cur.SameSecret(cn.clientCert)
}

// ClientRefusedError is a relay's 5xx to MAIL or RCPT that refuses this
// client rather than the message: 5.7.1 (Postfix's "Access denied" or
// "Relay access denied") or 5.7.64 (Microsoft 365's "TenantAttribution;
// Relay Access Denied"), on a session whose only standing with the relay
// is the client certificate (it has one, and did not authenticate). Such
// a reply is what a relay says to a certificate it does not trust, so
// the recipients are deferred, like any authentication problem, and
// retried until max_lifetime, never bounced at once.
type ClientRefusedError struct {
	Name  string // the client_certificate entry
	Shown bool   // the relay asked for the certificate and got it
	Err   error  // the *replyError
}

func (e *ClientRefusedError) Error() string {
	if !e.Shown {
		return fmt.Sprintf("%v (the relay refuses this client, and did not ask for the client certificate %q)", e.Err, e.Name)
	}
	return fmt.Sprintf("%v (the relay refuses this client: does it trust the client certificate %q?)", e.Err, e.Name)
}

func (e *ClientRefusedError) Unwrap() error { return e.Err }

// clientRefused wraps err, the relay's answer to MAIL or RCPT, in a
// *ClientRefusedError when it refuses this client (see there).
func (cn *conn) clientRefused(err error) error {
	if cn.r.cfg.ClientCertificate == "" || cn.authed {
		return err
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code < 500 {
		return err
	}
	if e := se.EnhancedCode; e == (smtp.EnhancedCode{5, 7, 1}) || e == (smtp.EnhancedCode{5, 7, 64}) {
		return &ClientRefusedError{Name: cn.r.cfg.ClientCertificate, Shown: cn.clientCertUse == credUsed, Err: err}
	}
	return err
}

// refusedCertificate adds to err, the failure to set up cn, that the
// relay may have refused the client certificate cn showed: a TLS alert
// after the relay asked for it, or a security refusal (x.7.x) to the EHLO
// that follows the handshake, as Postfix's smtpd_tls_req_ccert answers
// (421 4.7.1 Client certificate not trusted). With TLS 1.3 the relay
// checks the certificate after the client's handshake is done, so its
// alert ("bad certificate", "unknown certificate authority", "certificate
// required") arrives at the next read: the greeting or the EHLO.
func (cn *conn) refusedCertificate(err error) error {
	var ce *ConnError
	if cn.clientCertUse != credUsed || !errors.As(err, &ce) {
		return err
	}
	var oe *net.OpError
	var se *smtp.SMTPError
	alert := errors.As(err, &oe) && oe.Op == "remote error"
	refusal := ce.Stage == StageEHLO && errors.As(err, &se) && se.EnhancedCode[1] == 7
	if !alert && !refusal {
		return err
	}
	info, _ := cn.clientCert.CertificateInfo()
	return &ConnError{Stage: ce.Stage, Err: &certRefusal{err: ce.Err, note: fmt.Sprintf(" (the relay refused the client certificate %q, %s)", cn.r.cfg.ClientCertificate, info.Subject)}}
}

// certRefusal is a failure to set up a connection that refusedCertificate
// put down to the client certificate: the relay's alert or reply (shown
// as describe shows it), and a note naming the certificate. Its reason
// is ReasonTLS.
type certRefusal struct {
	err  error
	note string
}

func (e *certRefusal) Error() string { return describe(e.err) + e.note }
func (e *certRefusal) Unwrap() error { return e.err }

// StageRelaying is Check's question to a relay whose standing is the
// client certificate: would it relay for this client?
const StageRelaying Stage = "relaying"

// checkRelaying asks the relay whether it would relay for this client,
// without sending mail: MAIL FROM:<>, RCPT TO:<postmaster@HOSTNAME> (an
// address outside the relay's domains that must exist, RFC 5321 4.5.1),
// then the caller's QUIT. A refusal of this client (ClientRefusedError), an
// authentication reply or a broken connection fails the check; other
// replies (a relay that verifies recipients, say) say nothing about the
// certificate and pass.
func (cn *conn) checkRelaying(ctx context.Context) error {
	done := cn.watch(ctx)
	defer done()
	cmd := "MAIL FROM:<>"
	err := cn.c.Mail("", nil)
	if err == nil {
		cmd = "RCPT TO:<postmaster@" + cn.r.d.hostname + ">"
		err = cn.c.Rcpt("postmaster@"+cn.r.d.hostname, nil)
	}
	if err != nil {
		cn.fail(err)
		err = cn.clientRefused(&replyError{cmd: cmd, err: err})
		var se *smtp.SMTPError
		if cn.broken || errors.As(err, new(*ClientRefusedError)) || (errors.As(err, &se) && authProblem(se)) {
			return &ConnError{StageRelaying, err}
		}
	}
	// No RSET: the caller's QUIT ends the transaction (RFC 5321 4.1.1.10),
	// and go-smtp's client would say EHLO again after an RSET, which
	// strict relays refuse.
	cn.inTransaction = true
	return nil
}

// certificateKind reports whether cred is a client certificate: a new
// one takes a new TLS handshake, not just another AUTH.
func certificateKind(cred secrets.Credential) bool { return cred.Kind() == secrets.KindCertificate }
