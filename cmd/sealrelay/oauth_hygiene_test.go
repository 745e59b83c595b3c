package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/dovecot"
	"github.com/sealrelay/sealrelay/internal/testing/peers/hydra"
	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
)

// hygieneRelays are three relays, all the rig's Postfix, each with a
// credential of one oauth2 form, and the routes that pick them by sender.
func hygieneRelays(r *dovecot.Relay) string {
	var b strings.Builder
	for _, rl := range []struct{ name, mech string }{{"secret", "XOAUTH2"}, {"jwt", "OAUTHBEARER"}, {"delegated", "XOAUTH2"}} {
		fmt.Fprintf(&b, "\n[[relay]]\nname = %q\naddress = %q\ncredential = %q\nca_file = \"relay-ca.pem\"\nserver_name = \"localhost\"\n"+
			"mechanisms = [%q]\nidle_timeout = \"300ms\"\nconnect_timeout = \"5s\"\ncommand_timeout = \"15s\"\n", rl.name, r.Addr(), rl.name, rl.mech)
	}
	b.WriteString(`
[[route]]
name = "secret"
senders = ["@secret.test"]
relays = ["secret"]

[[route]]
name = "jwt"
senders = ["@jwt.test"]
relays = ["jwt"]

[[route]]
name = "default"
relays = ["delegated"]
`)
	return b.String()
}

// TestOAuth2SecretHygiene runs the built binary with three oauth2
// credentials (a client secret, a private key for private_key_jwt, a
// refresh token that Hydra rotates), in the age file (text log) and in
// Vault (sealed, JSON log), through deliveries, a token the relay refuses
// (revoked at Hydra), the token endpoint down long enough for messages
// to expire into DSNs, `check` (failing and passing), `queue list` and
// `creds list`. Then it looks for every client secret, the private key,
// every refresh token and every access token Hydra handed out (as they
// are, in base64, and in the XOAUTH2 and OAUTHBEARER payloads) in the
// log, the commands' output, the DSNs, every file the agent's directory
// holds, and the process's cmdline and environ. Dovecot's own log is the
// relay's, not the agent's, and not searched (it runs with auth_debug
// off).
func TestOAuth2SecretHygiene(t *testing.T) {
	h, r := startOAuthPeers(t, time.Minute)
	vs := vaulttest.Start(t)
	for _, tc := range []struct{ source, format string }{{"age", "text"}, {"vault", "json"}} {
		t.Run(tc.source+"/"+tc.format, func(t *testing.T) {
			oauthHygiene(t, h, r, vs, tc.source, tc.format)
		})
	}
}

func oauthHygiene(t *testing.T, h *hydra.Server, r *dovecot.Relay, vs *vaulttest.Server, source, format string) {
	secretClient := h.CreateClient(t, hydra.ClientSpec{Secret: "Hygiene-Client-Secret-" + source + "-9d2f"})
	keyClient := h.CreateClient(t, hydra.ClientSpec{AuthMethod: hydra.PrivateKeyJWT})
	d := h.DelegatedClient(t, "relay@example.test", "smtp")
	firstRefresh := d.RefreshToken

	g := newOAuthRig(t, h, r, oauthOpts{Source: source, Vault: vs,
		Extra: fmt.Sprintf("log_format = %q\n", format)})
	cfgText := readTestFile(t, g.cfg)
	cfgText = cfgText[:strings.Index(cfgText, "\n[[relay]]")] + hygieneRelays(r) + cfgText[strings.Index(cfgText, "\n[credentials]"):]
	writeTestFile(t, g.cfg, strings.Replace(cfgText, "drain_timeout", "max_lifetime = \"6s\"\ndrain_timeout", 1))
	vaultToken := "OAuthHygieneToken-must-never-leak-" + source
	if source == "vault" {
		vs.Policy(t, "oauth-hygiene", vaulttest.WritePolicy("secret", "oauth-"+strings.ReplaceAll(t.Name(), "/", "-")))
		vs.CreateToken(t, vaulttest.Token{ID: vaultToken, Policies: []string{"oauth-hygiene"}})
		if err := os.WriteFile(filepath.Join(g.dir, "vault-token"), []byte(vaultToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var printed bytes.Buffer
	keep := func(s string) { printed.WriteString(s) }
	keep(g.sealAs(t, "secret", secretClient, "smtp"))
	keep(g.sealAs(t, "jwt", keyClient, "smtp"))
	g.sealDelegated(t, "delegated", d)
	cli := func(want int, args ...string) {
		t.Helper()
		code, out, errs := runCLI(t, args...)
		keep(out + errs)
		if code != want {
			t.Errorf("%v: exit %d, want %d\n%s%s", args, code, want, out, errs)
		}
	}

	tmp := filepath.Join(g.dir, "tmp")
	os.Mkdir(tmp, 0o700)
	p := startProcess(t, g.cfg, "TMPDIR="+tmp)
	procFiles := procSnapshot(t, p)
	// Message-IDs name the source: the relay's upstream is shared.
	sendFrom := func(from, id string) {
		t.Helper()
		if err := send(p.addr, from, "user@example.net", strings.Replace(id, "@rig", "."+source+"@rig", 1)); err != nil {
			t.Fatal(err)
		}
	}
	relayed := func(ids ...string) {
		t.Helper()
		want := map[string]time.Time{}
		for _, id := range ids {
			want[strings.Replace(id, "@rig", "."+source+"@rig", 1)] = time.Now()
		}
		waitRelayed(t, r.Upstream, want)
	}

	// Each form delivers.
	sendFrom("app@secret.test", "<hy.secret@rig>")
	sendFrom("app@jwt.test", "<hy.jwt@rig>")
	sendFrom("app@other.test", "<hy.delegated@rig>")
	relayed("<hy.secret@rig>", "<hy.jwt@rig>", "<hy.delegated@rig>")

	// revoke revokes the access tokens Hydra gave the clients, and waits
	// until the pooled sessions are closed (idle 300 ms), so that the
	// next message authenticates with the cached, revoked token.
	revoke := func(clients ...*hydra.Client) {
		t.Helper()
		for _, tok := range h.IssuedTokens() {
			owner := h.Introspect(t, tok).ClientID
			for _, c := range clients {
				if strings.Count(tok, ".") == 2 && owner == c.ID {
					h.Revoke(t, c, tok)
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}

	// The relay refuses a token Hydra revoked; a new one is fetched.
	revoke(secretClient)
	sendFrom("app@secret.test", "<hy.revoked@rig>")
	relayed("<hy.revoked@rig>")
	if !strings.Contains(p.stderr.String(), "relay refused the access token") {
		t.Error("the revoked token was not refused: the run missed the 535 path")
	}

	// The token endpoint down, and the tokens in use revoked: the relay
	// refuses them, no new one can be had, mail is deferred, `queue list`
	// and `check` say why, and two messages expire (max_lifetime 6 s)
	// into DSNs that wait as well.
	// (Revoking the delegated client's token would void its refresh token
	// too: the DSNs go out through that relay.)
	h.Down(t)
	revoke(keyClient)
	sendFrom("app@jwt.test", "<hy.down.1@rig>")
	sendFrom("app@jwt.test", "<hy.down.2@rig>")
	waitFor(t, 20*time.Second, "the waiting mail to expire into DSNs", func() bool {
		return strings.Count(p.stderr.String(), "status=expired")+strings.Count(p.stderr.String(), `"status":"expired"`) >= 2
	})
	cli(0, "queue", "list", "-c", g.cfg)
	cli(1, "check", "-c", g.cfg)
	h.Up(t)
	waitFor(t, 30*time.Second, "the DSNs at the relay", func() bool {
		return strings.Count(dsnsTo(r, source), "Final-Recipient") >= 2
	})
	// With the age file, check refreshes with the sealed refresh token,
	// which Hydra voided when the agent first used it (Vault holds the
	// one written back).
	if source == "vault" {
		cli(0, "check", "-c", g.cfg)
	} else {
		cli(1, "check", "-c", g.cfg)
	}
	if source == "vault" {
		cli(0, "creds", "list", "--vault", "-c", g.cfg)
	} else {
		cli(0, "creds", "list", "-f", filepath.Join(g.dir, "credentials.age"), "-i", filepath.Join(g.dir, "identity.txt"))
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	keep(p.stderr.String())
	dsns := bytes.NewBufferString(dsnsTo(r, source))

	issued := h.IssuedTokens()
	forbidden := map[string]string{
		"client secret":                secretClient.Secret,
		"delegated client's secret":    d.Secret,
		"refresh token sealed first":   firstRefresh,
		"Vault token":                  vaultToken,
		"any age secret key":           "AGE-SECRET-KEY-",
		"private key, first line body": strings.Split(keyClient.KeyPEM(), "\n")[1],
	}
	users := []string{secretClient.ID, keyClient.ID, d.Subject}
	for i, tok := range issued {
		name := fmt.Sprintf("token %d handed out", i)
		forbidden[name] = tok
		forbidden[name+", its signature"] = tok[strings.LastIndex(tok, ".")+1:]
		forbidden[name+" base64"] = base64.StdEncoding.EncodeToString([]byte(tok))
		forbidden[name+" base64url"] = base64.RawURLEncoding.EncodeToString([]byte(tok))
		for _, u := range users {
			forbidden[name+" in XOAUTH2 as "+u] = base64.StdEncoding.EncodeToString([]byte("user=" + u + "\x01auth=Bearer " + tok + "\x01\x01"))
			_, port, _ := strings.Cut(r.Addr(), ":")
			forbidden[name+" in OAUTHBEARER as "+u] = base64.StdEncoding.EncodeToString([]byte("n,a=" + u + ",\x01host=localhost\x01port=" + port + "\x01auth=Bearer " + tok + "\x01\x01"))
		}
	}
	for _, s := range []string{secretClient.Secret, d.Secret, firstRefresh} {
		forbidden["base64 of "+s[:6]+"..."] = base64.StdEncoding.EncodeToString([]byte(s))
	}
	// Positive controls: the run did what it should, and the search
	// looks at what the agent had.
	if len(issued) < 6 {
		t.Errorf("Hydra handed out %d tokens: the run did not exercise the forms and the rotation", len(issued))
	}
	if !strings.Contains(printed.String(), "token endpoint "+h.TokenURL+" unreachable") || !strings.Contains(dsns.String(), "token endpoint") ||
		!strings.Contains(printed.String(), "rotated") || !strings.Contains(printed.String(), keyClient.ID) {
		t.Error("the output, the log or the DSNs lack what the run did: the search would be blind")
	}
	printed.Write(dsns.Bytes())
	hygieneScan(t, g.dir, printed.Bytes(), keyClient.ID, procFiles, forbidden)
}

// dsnsTo returns the DSNs the relay's upstream received for messages of
// this source's run (their Message-IDs name the source).
func dsnsTo(r *dovecot.Relay, source string) string {
	var b strings.Builder
	for _, m := range r.Upstream.Messages() {
		if m.From == "" && strings.Contains(string(m.Data), "."+source+"@rig>") {
			b.Write(m.Data)
		}
	}
	return b.String()
}
