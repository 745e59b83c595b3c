package config

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Rotation is the [rotation] table: what `sealrelay creds rotate` needs
// (docs/credentials.md, "Rotation"). The agent itself reads none of it.
type Rotation struct {
	Fleet            []string `toml:"fleet" example:"[\"10.0.0.1:9425\", \"10.0.0.2:9425\"]" doc:"The agents that must hold a new secret before the old one is retired: each agent's metrics_address (host:port, or an http:// or https:// URL), whose /generations the rotation reads. Empty with source = \"vault\": the agents that report to Vault under credentials.vault.agents_path."`
	SetHook          []string `toml:"set_hook" example:"[\"/usr/share/doc/sealrelay/examples/rotate/dovecot-passwd-file\", \"/etc/dovecot/relay.passwd.0\", \"/etc/dovecot/relay.passwd.1\"]" doc:"The program, with its arguments, that makes the new secret valid at the relay beside the old one. It reads the secret as JSON on standard input, never from its arguments or environment; exit status 0 means the relay accepts it. Not needed when make_hook makes the secret at the provider."`
	RetireHook       []string `toml:"retire_hook" example:"[\"/usr/share/doc/sealrelay/examples/rotate/dovecot-passwd-file\", \"/etc/dovecot/relay.passwd.0\", \"/etc/dovecot/relay.passwd.1\"]" doc:"The program that retires the old secret at the relay once every agent holds the new one, and the new one when a rotation is aborted. It reads JSON on standard input, as set_hook does."`
	MakeHook         []string `toml:"make_hook" doc:"A program that makes the new secret, for kinds sealrelay cannot make itself (an ses access key, an oauth2 client secret), or a new username: it reads JSON on standard input and prints JSON on standard output. Empty: sealrelay makes a random password."`
	PasswordLength   int      `toml:"password_length" doc:"The length of a password sealrelay makes. With the alphabet it must give at least 128 bits."`
	PasswordAlphabet string   `toml:"password_alphabet" doc:"The characters a password sealrelay makes is drawn from, each equally likely: printable ASCII without spaces, each once."`
	HookTimeout      Duration `toml:"hook_timeout" doc:"How long a hook may run; then it is killed and the step fails."`
	WaitTimeout      Duration `toml:"wait_timeout" doc:"How long a rotation waits for every agent to hold the new secret with no connection left on the old one; then it names the agents that did not switch, retires nothing, and exits 1 (--resume waits again)."`
	PollInterval     Duration `toml:"poll_interval" doc:"How often the agents are asked while the rotation waits."`
	StateDir         string   `toml:"state_dir" default:"the credential file's directory; data_dir with source = \"vault\"" example:"\"/var/lib/sealrelay\"" doc:"Where an unfinished rotation keeps its state file (mode 0600; it never holds a secret in clear)."`
}

// defaultRotation returns the defaults of [rotation].
func defaultRotation() Rotation {
	return Rotation{
		PasswordLength:   32,
		PasswordAlphabet: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
		HookTimeout:      dur(2 * time.Minute),
		WaitTimeout:      dur(15 * time.Minute),
		PollInterval:     dur(2 * time.Second),
	}
}

// PasswordBits is how many bits of randomness a password made with the
// config's length and alphabet holds.
func (r *Rotation) PasswordBits() float64 {
	return float64(r.PasswordLength) * math.Log2(float64(len(r.PasswordAlphabet)))
}

// resolveRotation makes the hooks' programs and state_dir absolute; a
// program named without a slash is left to $PATH.
func (c *Config) resolveRotation(dir string) {
	r := &c.Rotation
	for _, h := range [][]string{r.SetHook, r.RetireHook, r.MakeHook} {
		if len(h) > 0 && strings.Contains(h[0], "/") && !filepath.IsAbs(h[0]) {
			h[0] = filepath.Join(dir, h[0])
		}
	}
	if r.StateDir != "" && !filepath.IsAbs(r.StateDir) {
		r.StateDir = filepath.Join(dir, r.StateDir)
	}
}

// validateRotation checks [rotation]. Whether the hooks' programs exist
// is checked by the rotation, on the host that runs it.
func (c *Config) validateRotation() error {
	r := &c.Rotation
	if v := c.Credentials.Vault; c.Credentials.Source == "vault" {
		ap := strings.Trim(v.AgentsPath, "/")
		if ap == strings.Trim(v.Path, "/") || strings.HasPrefix(ap, strings.Trim(v.Path, "/")+"/") || slices.Contains(strings.Split(ap, "/"), "..") {
			return c.bad("credentials.vault.agents_path", "%q must be a folder of its own, outside path %q: the agents' reports are no credential entries", v.AgentsPath, v.Path)
		}
	}
	for i, f := range r.Fleet {
		if err := checkFleetAddress(f); err != nil {
			return c.bad(fmt.Sprintf("rotation.fleet[%d]", i), "%v", err)
		}
	}
	for _, h := range []struct {
		key  string
		argv []string
	}{{"set_hook", r.SetHook}, {"retire_hook", r.RetireHook}, {"make_hook", r.MakeHook}} {
		if len(h.argv) > 0 && h.argv[0] == "" {
			return c.bad("rotation."+h.key, "the program (its first element) is empty")
		}
	}
	if r.PasswordLength < 1 || r.PasswordLength > 1024 {
		return c.bad("rotation.password_length", "must be between 1 and 1024, not %d", r.PasswordLength)
	}
	seen := map[rune]bool{}
	for _, ch := range r.PasswordAlphabet {
		if ch <= ' ' || ch > '~' {
			return c.bad("rotation.password_alphabet", "holds %q: only printable ASCII without spaces", ch)
		}
		if seen[ch] {
			return c.bad("rotation.password_alphabet", "holds %q twice: every character must be equally likely", ch)
		}
		seen[ch] = true
	}
	if len(seen) < 2 {
		return c.bad("rotation.password_alphabet", "needs at least 2 characters")
	}
	if bits := r.PasswordBits(); bits < 128 {
		return c.bad("rotation.password_length", "%d characters of a %d-character alphabet give %.0f bits; at least 128 are needed (%d characters)",
			r.PasswordLength, len(r.PasswordAlphabet), bits, int(math.Ceil(128/math.Log2(float64(len(r.PasswordAlphabet))))))
	}
	for _, d := range []struct {
		key string
		d   Duration
	}{{"hook_timeout", r.HookTimeout}, {"wait_timeout", r.WaitTimeout}, {"poll_interval", r.PollInterval}} {
		if d.d.Duration <= 0 {
			return c.bad("rotation."+d.key, "must be positive")
		}
	}
	return nil
}

// checkFleetAddress accepts host:port or an http(s) URL with a host.
func checkFleetAddress(f string) error {
	if strings.Contains(f, "://") {
		u, err := url.Parse(f)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return fmt.Errorf("%q is not an http:// or https:// URL of an agent's metrics listener", f)
		}
		return nil
	}
	if host, port, err := net.SplitHostPort(f); err != nil || host == "" || port == "" {
		return fmt.Errorf("%q is not host:port (an agent's metrics_address)", f)
	}
	return nil
}
