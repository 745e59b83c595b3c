package config

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// The opt-ins that send a secret over the network in clear are refused
// unless the peer is on loopback, or an option whose name says "insecure"
// is set; such an option is then reported by InsecureSettings, which
// serve and check log at every start.

// loopbackHosts names what counts as loopback, for messages.
const loopbackHosts = "127.0.0.0/8, ::1, localhost"

// isLoopbackHost reports whether host (a name or an address, as in
// host:port) is on loopback: an address in 127.0.0.0/8 or ::1 (also
// IPv4-mapped), or the name "localhost". Other names are not, whatever
// they resolve to today.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// InsecureSetting is an insecure option in use, located as an Error
// is: its String names the file, line and key, and what it exposes.
type InsecureSetting struct{ Error }

func (s InsecureSetting) String() string { return s.Error.Error() }

// InsecureSettings lists the insecure options this config uses, one per
// relay or Vault address they affect. The config is valid: each was asked
// for by name.
func (c *Config) InsecureSettings() []InsecureSetting {
	var out []InsecureSetting
	for i, r := range c.Relays {
		if r.InsecurePlaintextAuthToRemote {
			out = append(out, InsecureSetting{*c.errAt(relayKey(i, "insecure_plaintext_auth_to_remote"),
				"relay %q (%s) gets AUTH without TLS: the password crosses the network in clear", r.Name, r.Address)})
		}
	}
	v := &c.Credentials.Vault
	if c.Credentials.Source == "vault" && v.InsecureHTTP {
		for _, a := range v.Addresses {
			if host, ok := httpHost(a); ok && !isLoopbackHost(host) {
				out = append(out, InsecureSetting{*c.errAt(vaultKey("insecure_http", -1),
					"Vault at %s is reached without TLS: the token and the credentials cross the network in clear", a)})
			}
		}
	}
	return out
}

// validateInsecure refuses plaintext AUTH to a relay, and http:// to a
// Vault, that is not on loopback, unless the insecure option is set; and
// refuses an insecure option that has no effect.
func (c *Config) validateInsecure() error {
	for i, r := range c.Relays {
		host, _, _ := net.SplitHostPort(r.Address)
		switch {
		case r.InsecurePlaintextAuthToRemote && !r.AllowPlaintextAuth:
			return c.errAt(relayKey(i, "insecure_plaintext_auth_to_remote"), "has no effect without allow_plaintext_auth = true")
		case r.InsecurePlaintextAuthToRemote && isLoopbackHost(host):
			return c.errAt(relayKey(i, "insecure_plaintext_auth_to_remote"), "has no effect: the relay is on loopback")
		case r.AllowPlaintextAuth && !r.InsecurePlaintextAuthToRemote && !isLoopbackHost(host):
			return c.errAt(relayKey(i, "allow_plaintext_auth"),
				"AUTH without TLS is allowed only to a loopback relay (%s), not %q; "+
					"set insecure_plaintext_auth_to_remote = true to send the password in clear to it anyway", loopbackHosts, host)
		}
	}

	if c.Credentials.Source != "vault" {
		return nil
	}
	v := &c.Credentials.Vault
	remote := false
	for i, a := range v.Addresses {
		host, ok := httpHost(a)
		if !ok || isLoopbackHost(host) {
			continue
		}
		remote = true
		if v.InsecureHTTP {
			continue
		}
		msg := fmt.Sprintf("http:// is allowed only to a loopback Vault (%s), not %q: "+
			"the token and the credentials would cross the network in clear; use https://, or set insecure_http = true", loopbackHosts, host)
		switch {
		case v.addrFromEnv:
			return &Error{File: c.File, Key: "credentials.vault.address", Msg: "VAULT_ADDR: " + msg}
		case v.Address != "" && i == 0:
			return c.errAt(vaultKey("address", -1), "%s", msg)
		case v.Address != "":
			i--
		}
		return c.errAt(vaultKey("addresses", i), "%s", msg)
	}
	if v.InsecureHTTP && !remote {
		return c.errAt(vaultKey("insecure_http", -1), "has no effect: no address is http:// to a host other than loopback")
	}
	return nil
}

// httpHost returns the host of an http:// URL; ok is false for any other
// scheme.
func httpHost(addr string) (host string, ok bool) {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "http" {
		return "", false
	}
	return u.Hostname(), true
}

// keyAt locates a key: in the index-th [[table]] when index >= 0, else in
// [table]; elem >= 0 names an element of an array value.
type keyAt struct {
	table string
	index int
	key   string
	elem  int
}

func relayKey(i int, key string) keyAt    { return keyAt{"relay", i, key, -1} }
func vaultKey(key string, elem int) keyAt { return keyAt{"credentials.vault", -1, key, elem} }

// String is the key as errors name it: relay[0].tls,
// credentials.vault.addresses[1].
func (k keyAt) String() string {
	s := k.table
	if k.index >= 0 {
		s += fmt.Sprintf("[%d]", k.index)
	}
	s += "." + k.key
	if k.elem >= 0 {
		s += fmt.Sprintf("[%d]", k.elem)
	}
	return s
}

// errAt returns an Error for k, with its line where keyLine finds it.
func (c *Config) errAt(k keyAt, format string, args ...any) *Error {
	return &Error{File: c.File, Line: c.keyLine(k), Key: k.String(), Msg: fmt.Sprintf(format, args...)}
}

// keyLine returns the line where k's key is set. It reads the file as lines of
// "key = value" under table headers, as config files are written; for
// anything else (dotted keys, inline tables) it returns 0, and errors then
// give no line.
func (c *Config) keyLine(k keyAt) int {
	table, index := k.table, k.index
	sc := bufio.NewScanner(bytes.NewReader(c.raw))
	sc.Buffer(nil, maxConfigFile)
	n, seen, in := 0, -1, false
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			head, _, _ := strings.Cut(line, "#")
			head = strings.TrimSpace(head)
			switch {
			case strings.HasPrefix(head, "[[") && strings.HasSuffix(head, "]]"):
				name := strings.TrimSpace(head[2 : len(head)-2])
				if name == table {
					seen++
				}
				in = name == table && seen == index
			case strings.HasSuffix(head, "]"):
				in = index < 0 && strings.TrimSpace(head[1:len(head)-1]) == table
			}
			continue
		}
		if !in {
			continue
		}
		if name, _, ok := strings.Cut(line, "="); ok && strings.Trim(strings.TrimSpace(name), `"'`) == k.key {
			return n
		}
	}
	return 0
}
