package main

import (
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/hydra"
	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
)

// sealDelegated writes entry name of the delegated form for d: its
// refresh token from a 0600 file, its client secret from stdin.
func (g *oauthRig) sealDelegated(t *testing.T, name string, d *hydra.Delegated) {
	t.Helper()
	rt := g.input(t, name+"-refresh-token.txt", d.RefreshToken+"\n")
	g.credsSet(t, name, d.Secret+"\n", "--username", d.Subject, "--client-id", d.ID, "--token-url", g.h.TokenURL,
		"--scope", "smtp", "--refresh-token-file", rt, "--secret-stdin")
}

// TestOAuth2RotatedRefreshTokenVault: the delegated form in Vault, with
// Hydra rotating the refresh token on every use. The agent writes the new
// one back, sealed, as a new KV version; reading that version back keeps
// the cached access token (no new request, no new rotation); and an
// agent started afresh works from the written-back token, the one sealed
// first being void by then.
func TestOAuth2RotatedRefreshTokenVault(t *testing.T) {
	h, r := startOAuthPeers(t, 0)
	vs := vaulttest.Start(t)
	d := h.DelegatedClient(t, "relay@example.test", "smtp")
	g := newOAuthRig(t, h, r, oauthOpts{Source: "vault", Vault: vs, IdleTimeout: "300ms"})
	g.sealDelegated(t, "upstream", d)
	path := "oauth-" + t.Name() + "/upstream"
	version := func() int {
		kv, err := vs.Client.KVv2(vaulttest.KVMount).Get(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := kv.Data["refresh_token"].(string); !strings.HasPrefix(s, "-----BEGIN AGE ENCRYPTED FILE-----") {
			t.Errorf("version %d: the refresh token in Vault is not sealed", kv.VersionMetadata.Version)
		}
		return kv.VersionMetadata.Version
	}

	a := startAgent(t, g.cfg)
	waitRelayed(t, r.Upstream, sendAll(t, a, "<rt.vault.1@rig>"))
	waitFor(t, 10*time.Second, "the rotated refresh token written back as version 2", func() bool {
		return strings.Contains(a.logs.String(), `msg="the identity provider rotated a refresh token; written back" component=oauth2 credential=upstream`) && version() == 2
	})
	waitFor(t, 10*time.Second, "the store to read version 2", func() bool {
		return strings.Contains(a.logs.String(), `msg="credential changed" component=credentials credential=upstream username=relay@example.test version=2`)
	})
	before := h.TokenRequests()
	time.Sleep(time.Second) // the pooled session is closed: the next message authenticates again
	waitRelayed(t, r.Upstream, sendAll(t, a, "<rt.vault.2@rig>"))
	if n := h.TokenRequests() - before; n != 0 || version() != 2 {
		t.Errorf("after the write-back was read: %d token requests, version %d; want the cached token and no new rotation", n, version())
	}
	waitLogin(t, r, 2, "XOAUTH2", d.Subject)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	if h.Introspect(t, d.RefreshToken).Active {
		t.Error("Hydra still takes the refresh token sealed first: it did not rotate")
	}
	a = startAgent(t, g.cfg)
	waitRelayed(t, r.Upstream, sendAll(t, a, "<rt.vault.3@rig>"))
	waitFor(t, 10*time.Second, "the next rotation written back as version 3", func() bool { return version() == 3 })
	noBounces(t, a)
}

// TestOAuth2RotatedRefreshTokenAgeFile: the delegated form in the age
// file. The agent cannot rewrite it: it keeps the rotated refresh token in
// memory, uses it for the next refresh (tokens live 4 s here), and warns
// once, saying what the operator can do; the file is untouched. A
// restart goes back to the sealed token, which Hydra has voided: mail is
// deferred, and `check` exits 1 naming invalid_grant.
func TestOAuth2RotatedRefreshTokenAgeFile(t *testing.T) {
	h, r := startOAuthPeers(t, 4*time.Second)
	d := h.DelegatedClient(t, "relay@example.test", "smtp")
	g := newOAuthRig(t, h, r, oauthOpts{IdleTimeout: "300ms"})
	g.sealDelegated(t, "upstream", d)
	sealed := readTestFile(t, g.dir+"/credentials.age")

	a := startAgent(t, g.cfg)
	waitRelayed(t, r.Upstream, sendAll(t, a, "<rt.age.1@rig>"))
	time.Sleep(3 * time.Second) // the token is handed out for 2 s
	waitRelayed(t, r.Upstream, sendAll(t, a, "<rt.age.2@rig>"))
	logs := a.logs.String()
	if n := strings.Count(logs, "the identity provider rotated the refresh token; the new one is kept in memory only"); n != 1 ||
		!strings.Contains(logs, "sealrelay creds set NAME --oauth2 ... --refresh-token-stdin") ||
		!strings.Contains(logs, "the identity provider rotated the refresh token again; the new one is kept in memory only") {
		t.Errorf("the warning was logged %d times (want once, then a short note):\n%s", n, grepLines(logs, "refresh token"))
	}
	if n := h.TokenRequests(); n != 2 {
		t.Errorf("%d token requests, want 2: the second with the rotated refresh token", n)
	}
	if readTestFile(t, g.dir+"/credentials.age") != sealed {
		t.Error("the agent rewrote the sealed file")
	}
	noBounces(t, a)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	a = startAgent(t, g.cfg)
	ids := sendAll(t, a, "<rt.age.3@rig>")
	waitDeferred(t, a, 0, 2)
	notRelayed(t, g, ids)
	code, out, _ := runCLI(t, "check", "-c", g.cfg)
	if want := "refused the request: invalid_grant"; code != 1 || !strings.Contains(out, want) {
		t.Errorf("check with the voided sealed refresh token: exit %d, want 1 and %q:\n%s", code, want, out)
	}
	noBounces(t, a)
}
