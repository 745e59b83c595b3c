package postfixtest

// What smtpd demands from its clients: SASL AUTH checked by Cyrus against a
// sasldb file (Config.SASLUsers) or by a Dovecot auth server
// (Config.DovecotSASL), and TLS client certificates (Config.ClientCAPEM).
// Found by trying, with Postfix 3.7 and Dovecot 2.3:
//
//   - With smtpd_sasl_type = dovecot, smtpd_sasl_path is the socket's path.
//     Here smtpd runs without chroot, so an absolute path anywhere works
//     (chrooted, only a path under the queue directory, or inet:, would).
//     smtpd connects when a client first says EHLO; if the socket is not
//     there it logs "fatal: no SASL authentication mechanisms" and master
//     throttles smtpd for 60 s: start Dovecot first.
//   - The mechanisms smtpd offers are the ones Dovecot offers; smtpd logs
//     the one used as sasl_method= on the queue ID's client= line, the
//     name as Dovecot returned it (lower-cased by its default
//     auth_username_format) as sasl_username=.
//   - line_length_limit (default 2048) also limits an AUTH line: a base64
//     XOAUTH2 string with a ~1150-character JWT is ~1600 characters, close
//     to the limit, so it is raised to 8192.
//   - permit_tls_all_clientcerts needs smtpd_tls_ask_ccert = yes and the
//     CA in smtpd_tls_CAfile. smtpd logs "Trusted TLS connection
//     established" for a client whose certificate verified, "Untrusted"
//     for one that did not, "Anonymous" for none.

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// checkAuth checks the fields of cfg about smtpd's clients.
func checkAuth(cfg Config) error {
	if len(cfg.SASLUsers) > 0 && cfg.TLSCert == nil {
		return errors.New("postfixtest: SASLUsers needs a TLSCert (AUTH is offered only after STARTTLS)")
	}
	for name := range cfg.SASLUsers {
		if u, domain, ok := strings.Cut(name, "@"); !ok || u == "" || domain == "" {
			return fmt.Errorf("postfixtest: SASL user %q is not user@domain", name)
		}
	}
	if cfg.DovecotSASL != "" {
		switch {
		case len(cfg.SASLUsers) > 0:
			return errors.New("postfixtest: SASLUsers and DovecotSASL exclude each other (smtpd has one SASL backend)")
		case cfg.TLSCert == nil:
			return errors.New("postfixtest: DovecotSASL needs a TLSCert (AUTH is offered only after STARTTLS)")
		case !filepath.IsAbs(cfg.DovecotSASL):
			return fmt.Errorf("postfixtest: DovecotSASL %q is not an absolute path", cfg.DovecotSASL)
		}
	}
	if len(cfg.ClientCAPEM) > 0 && cfg.TLSCert == nil {
		return errors.New("postfixtest: ClientCAPEM needs a TLSCert (client certificates come with STARTTLS)")
	}
	return nil
}

// smtpdAuth writes what smtpd needs to check its clients into params and
// etc/sasl.
func (p *Instance) smtpdAuth(params map[string]string, sasl string, uid int) error {
	var permit []string
	switch {
	case len(p.cfg.SASLUsers) > 0:
		db := filepath.Join(sasl, "sasldb2")
		if err := writeSASLDB(db, p.cfg.SASLUsers, uid); err != nil {
			return err
		}
		conf := "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: " + db + "\n"
		if err := os.WriteFile(filepath.Join(sasl, "smtpd.conf"), []byte(conf), 0o644); err != nil {
			return fmt.Errorf("postfixtest: %w", err)
		}
		maps.Copy(params, map[string]string{
			"smtpd_sasl_type":        "cyrus",
			"smtpd_sasl_path":        "smtpd",
			"cyrus_sasl_config_path": sasl,
		})
		permit = append(permit, "permit_sasl_authenticated")
	case p.cfg.DovecotSASL != "":
		maps.Copy(params, map[string]string{
			"smtpd_sasl_type":   "dovecot",
			"smtpd_sasl_path":   p.cfg.DovecotSASL,
			"line_length_limit": "8192",
		})
		permit = append(permit, "permit_sasl_authenticated")
	}
	if len(permit) > 0 {
		maps.Copy(params, map[string]string{
			"smtpd_sasl_auth_enable":      "yes",
			"smtpd_sasl_security_options": "noanonymous",
			"smtpd_tls_auth_only":         "yes",
		})
	}
	if len(p.cfg.ClientCAPEM) > 0 {
		caFile := filepath.Join(p.ConfigDir(), "client-ca.pem")
		if err := os.WriteFile(caFile, p.cfg.ClientCAPEM, 0o644); err != nil {
			return fmt.Errorf("postfixtest: %w", err)
		}
		params["smtpd_tls_ask_ccert"] = "yes"
		params["smtpd_tls_CAfile"] = caFile
		permit = append(permit, "permit_tls_all_clientcerts")
	}
	if len(permit) > 0 {
		params["smtpd_relay_restrictions"] = strings.Join(append(permit, "reject"), ", ")
	}
	return nil
}

// writeSASLDB creates the Cyrus sasldb file with saslpasswd2, each password
// on its standard input (never on a command line), owned by the postfix
// user (smtpd reads it after dropping privileges).
func writeSASLDB(db string, users map[string]string, uid int) error {
	for _, name := range slices.Sorted(maps.Keys(users)) {
		u, domain, _ := strings.Cut(name, "@") // checked by Start
		cmd := exec.Command(saslpasswd2, "-f", db, "-c", "-p", "-u", domain, u)
		cmd.Stdin = strings.NewReader(users[name])
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("postfixtest: saslpasswd2 for %s: %v %s", name, err, bytes.TrimSpace(out))
		}
	}
	if err := os.Chown(db, uid, -1); err != nil {
		return fmt.Errorf("postfixtest: sasldb %s: %w", db, err)
	}
	if err := os.Chmod(db, 0o600); err != nil {
		return fmt.Errorf("postfixtest: sasldb %s: %w", db, err)
	}
	return nil
}

// SASLLogin is one authenticated session as smtpd logs it on the line
// "QUEUEID: client=NAME[ADDR], sasl_method=METHOD, sasl_username=USER",
// which appears once a message of that session got a queue ID (after the
// first accepted RCPT).
type SASLLogin struct {
	QueueID  string
	Client   string // "localhost[127.0.0.1]"
	Method   string // "PLAIN", "XOAUTH2", "CRAM-MD5"...
	Username string
}

var saslLoginLine = regexp.MustCompile(`\b([0-9A-F]+|[0-9A-Za-z]{10,}): client=([^,\s]+), sasl_method=([^,\s]+), sasl_username=(\S+)`)

// SASLLogins returns the authenticated sessions in the log so far, oldest
// first.
func (p *Instance) SASLLogins() []SASLLogin {
	var out []SASLLogin
	for _, m := range saslLoginLine.FindAllStringSubmatch(p.Log(), -1) {
		out = append(out, SASLLogin{QueueID: m[1], Client: m[2], Method: m[3], Username: m[4]})
	}
	return out
}

// WaitSASLLogins returns the authenticated sessions Postfix logged once
// there are at least n, waiting up to timeout: Postfix writes its log
// through postlogd, a moment after the session it describes. At the
// timeout it returns what there is.
func (p *Instance) WaitSASLLogins(n int, timeout time.Duration) []SASLLogin {
	deadline := time.Now().Add(timeout)
	for {
		l := p.SASLLogins()
		if len(l) >= n || time.Now().After(deadline) {
			return l
		}
		time.Sleep(50 * time.Millisecond)
	}
}
