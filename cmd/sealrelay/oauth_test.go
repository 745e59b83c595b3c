package main

// OAuth2 end to end: sealrelay with an oauth2 credential sealed in the age
// file or in Vault, ORY Hydra issuing the tokens
// (internal/testing/peers/hydra), and Postfix with Dovecot as the relay,
// checking each token by introspection at Hydra
// (internal/testing/peers/dovecot). Dovecot runs with auth_debug off.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/rig"
	"github.com/sealrelay/sealrelay/internal/testing/peers/dovecot"
	"github.com/sealrelay/sealrelay/internal/testing/peers/hydra"
	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// startOAuthPeers starts Hydra (access tokens living ttl; 0: an hour) and
// Postfix with Dovecot accepting its tokens with the scope smtp.
func startOAuthPeers(t *testing.T, ttl time.Duration) (*hydra.Server, *dovecot.Relay) {
	t.Helper()
	h := hydra.Start(t, hydra.Options{AccessTokenTTL: ttl})
	return h, dovecot.StartOAuth2Relay(t, h.IntrospectURL)
}

// oauthRig is sealrelay set up on disk to relay through the Postfix of r
// with the oauth2 credential "upstream", sealed in the age file or in
// Vault.
type oauthRig struct {
	h      *hydra.Server
	r      *dovecot.Relay
	dir    string // the agent's files
	inputs string // the operator's secret files (key, refresh token), elsewhere
	cfg    string
	vault  bool
}

// oauthOpts shape an oauthRig's config.
type oauthOpts struct {
	Source     string            // age (default) or vault
	Vault      *vaulttest.Server // with Source vault
	Mechanisms string            // the TOML list; default ["XOAUTH2"]
	// IdleTimeout of pooled connections; default 2s. A short one makes
	// messages open new connections, each authenticating.
	IdleTimeout string
	// Extra is appended to the config's top (before any table).
	Extra string
}

func newOAuthRig(t *testing.T, h *hydra.Server, r *dovecot.Relay, o oauthOpts) *oauthRig {
	t.Helper()
	dir := t.TempDir()
	if _, err := rig.Seal(dir, "rig server"); err != nil {
		t.Fatal(err)
	}
	if err := r.CA.WriteFile(filepath.Join(dir, "relay-ca.pem")); err != nil {
		t.Fatal(err)
	}
	if o.Mechanisms == "" {
		o.Mechanisms = `["XOAUTH2"]`
	}
	if o.IdleTimeout == "" {
		o.IdleTimeout = "2s"
	}
	cfg, err := rig.WriteConfig(dir, rig.Config{
		Hostname: "agent.test",
		Relay: rig.Relay{Name: "postfix", Address: r.Addr(), Credential: "upstream", CAFile: "relay-ca.pem",
			Extra: fmt.Sprintf("mechanisms = %s\nidle_timeout = %q\nconnect_timeout = \"5s\"\ncommand_timeout = \"15s\"\n", o.Mechanisms, o.IdleTimeout)},
		Queue: rig.QuickQueue,
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.Extra != "" {
		writeTestFile(t, cfg, o.Extra+"\n"+readTestFile(t, cfg))
	}
	g := &oauthRig{h: h, r: r, dir: dir, inputs: t.TempDir(), cfg: cfg}
	if o.Source == "vault" {
		rigVault(t, cfg, o.Vault, "oauth-"+strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), true)
		g.vault = true
	}
	return g
}

// seal writes entry "upstream" for Hydra's client c asking for scope,
// with `creds set --oauth2` as an operator would: its client secret from
// stdin, or its private key (private_key_jwt) from a 0600 file.
func (g *oauthRig) seal(t *testing.T, c *hydra.Client, scope string) string {
	t.Helper()
	return g.sealAs(t, "upstream", c, scope)
}

// sealAs is seal for the entry name.
func (g *oauthRig) sealAs(t *testing.T, name string, c *hydra.Client, scope string) string {
	t.Helper()
	args := []string{"--username", c.ID, "--client-id", c.ID, "--token-url", g.h.TokenURL, "--scope", scope}
	stdin := ""
	if c.Key != nil {
		key := g.input(t, name+"-key.pem", c.KeyPEM())
		args = append(args, "--private-key-file", key, "--key-id", c.KeyID)
	} else {
		args, stdin = append(args, "--secret-stdin"), c.Secret+"\n"
	}
	return g.credsSet(t, name, stdin, args...)
}

// credsSet runs `creds set NAME --oauth2 ARGS` against the rig's source
// and returns what it printed.
func (g *oauthRig) credsSet(t *testing.T, name, stdin string, args ...string) string {
	t.Helper()
	base := []string{"creds", "set", name, "--oauth2"}
	if g.vault {
		base = append(base, "--vault", "-c", g.cfg)
	} else {
		base = append(base, "-f", filepath.Join(g.dir, rig.CredentialsFile), "-R", filepath.Join(g.dir, rig.RecipientsFile),
			"-i", filepath.Join(g.dir, rig.IdentityFile))
	}
	e := &env{ctx: t.Context(), stdin: strings.NewReader(stdin), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	if code := run(e, append(base, args...)); code != 0 {
		t.Fatalf("creds set --oauth2: exit %d: %s", code, e.stderr)
	}
	return e.stdout.(*syncBuffer).String() + e.stderr.(*syncBuffer).String()
}

// input writes an operator's secret file (0600) outside the agent's
// directory and returns its path.
func (g *oauthRig) input(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(g.inputs, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// setMechanisms rewrites the relay's mechanisms list.
func (g *oauthRig) setMechanisms(t *testing.T, list string) {
	t.Helper()
	data := regexp.MustCompile(`(?m)^mechanisms = .*$`).ReplaceAllString(readTestFile(t, g.cfg), "mechanisms = "+list)
	writeTestFile(t, g.cfg, data)
}

// waitMessage waits until the relay's upstream holds the message with id.
func waitMessage(t *testing.T, up *upstream.Server, id string) {
	t.Helper()
	waitRelayed(t, up, map[string]time.Time{id: time.Now()})
}

// waitLogin waits until Postfix logged n sessions of mech as user.
func waitLogin(t *testing.T, r *dovecot.Relay, n int, mech, user string) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("Postfix to log %d sessions with sasl_method=%s as %s", n, mech, user), func() bool {
		return r.Logins(mech, user) >= n
	})
}

// TestOAuth2EndToEnd: for each source (age file, Vault with sealed
// values) and each way the client authenticates to Hydra (a client
// secret, private_key_jwt), the credential sealed with `creds set
// --oauth2`, the agent gets a token from Hydra and delivers through
// Postfix, which logs the session authenticated with XOAUTH2, then, with
// the mechanisms changed, OAUTHBEARER; `check` prints the token step and
// the AUTH, and exits 0.
func TestOAuth2EndToEnd(t *testing.T) {
	h, r := startOAuthPeers(t, 0)
	vs := vaulttest.Start(t)
	clients := []*hydra.Client{h.CreateClient(t, hydra.ClientSpec{}), h.CreateClient(t, hydra.ClientSpec{AuthMethod: hydra.PrivateKeyJWT})}
	for _, source := range []string{"age", "vault"} {
		for _, c := range clients {
			t.Run(source+"/"+c.AuthMethod, func(t *testing.T) {
				g := newOAuthRig(t, h, r, oauthOpts{Source: source, Vault: vs})
				g.seal(t, c, "smtp")
				for i, mech := range []string{"XOAUTH2", "OAUTHBEARER"} {
					g.setMechanisms(t, `["`+mech+`"]`)
					before, logins := h.TokenRequests(), r.Logins(mech, c.ID)
					a := startAgent(t, g.cfg)
					id := fmt.Sprintf("<e2e.%s.%s.%d@rig>", source, c.AuthMethod, i)
					if err := send(a.Addr().String(), "app@client.test", "user@example.net", id); err != nil {
						t.Fatal(err)
					}
					waitMessage(t, r.Upstream, id)
					waitLogin(t, r, logins+1, mech, c.ID)
					if err := a.stop(); err != nil {
						t.Fatal(err)
					}
					if n := h.TokenRequests() - before; n != 1 {
						t.Errorf("%s: %d token requests, want 1", mech, n)
					}
					if st := a.Queue().Stats(); st.Delivered != 1 || st.Failed != 0 || st.Bounced != 0 {
						t.Errorf("%s: spool stats %+v", mech, st)
					}
				}
				code, out, errs := runCLI(t, "check", "-c", g.cfg)
				tokenLine := "relay postfix (" + r.Addr() + "): token from " + h.TokenURL + ": ok (client_credentials, scopes smtp, expires "
				authLine := "relay postfix (" + r.Addr() + "): ok, TLS 1.3, AUTH OAUTHBEARER as " + c.ID
				if code != 0 || !strings.Contains(out, tokenLine) || !strings.Contains(out, authLine) {
					t.Errorf("check: exit %d\n%s%s\nwant lines starting %q and %q", code, out, errs, tokenLine, authLine)
				}
			})
		}
	}
}
