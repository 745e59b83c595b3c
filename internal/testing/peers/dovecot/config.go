package dovecot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// writeConfig writes dovecot.conf (and oauth2.conf) for the instance.
func (s *Server) writeConfig() error {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	yesNo := map[bool]string{true: "yes", false: "no"}
	w("# private Dovecot instance written by internal/testing/peers/dovecot: the auth service only")
	w("instance_name = sealrelay-%s", filepath.Base(s.dir))
	w("base_dir = %s", filepath.Join(s.dir, "run"))
	w("state_dir = %s", filepath.Join(s.dir, "state"))
	w("log_path = %s", s.LogFile())
	w("protocols =")
	w("listen = 127.0.0.1")
	w("ssl = no")
	w("auth_mechanisms = %s", strings.ToLower(strings.Join(s.cfg.Mechanisms, " ")))
	// Postfix says "secured" for a client that did STARTTLS: plaintext
	// mechanisms only then.
	w("disable_plaintext_auth = yes")
	w("auth_cache_size = 0")
	w("auth_failure_delay = 0")
	w("auth_verbose = yes")
	w("auth_debug = %s", yesNo[s.cfg.Debug])
	if o := s.cfg.OAuth2; o != nil {
		mechs := "xoauth2 oauthbearer"
		if o.Plain {
			mechs += " plain"
		}
		conf := filepath.Join(s.dir, "oauth2.conf")
		w("passdb {\n  driver = oauth2\n  mechanisms = %s\n  args = %s\n}", mechs, conf)
		var ob strings.Builder
		fmt.Fprintf(&ob, "introspection_mode = post\nintrospection_url = %s\n", o.IntrospectionURL)
		ob.WriteString("username_attribute = sub\nactive_attribute = active\nactive_value = true\n")
		if o.Scope != "" {
			fmt.Fprintf(&ob, "scope = %s\n", o.Scope)
		}
		if err := os.WriteFile(conf, []byte(ob.String()), 0o644); err != nil {
			return fmt.Errorf("dovecot: %w", err)
		}
	}
	for i := range s.slots {
		w("passdb {\n  driver = passwd-file\n  args = scheme=PLAIN %s\n}", s.passwdFile(i))
	}
	w("userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=/nonexistent\n}")
	w("service auth {\n  unix_listener %s {\n    mode = 0660\n    user = %s\n    group = %s\n  }\n}",
		s.SocketPath(), s.cfg.ListenerUser, s.cfg.ListenerUser)
	// No auth penalty: see the package doc.
	w("service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}")
	if err := os.WriteFile(s.ConfigFile(), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}
	return nil
}
