package vault

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/internal/testing/testpki"
	"github.com/sealrelay/sealrelay/secrets"
)

// kindEntries returns an entry of every kind but password, each with its
// secret values (test only).
func kindEntries(t *testing.T) ([]secrets.Credential, []string) {
	t.Helper()
	ca := testpki.CA(t, "sealrelay test CA")
	leaf := testpki.Leaf(t, ca, testpki.Options{CommonName: "relay1.example.com"})
	jwt := testpki.Leaf(t, ca, testpki.Options{CommonName: "entra app", RSA: true})
	var out []secrets.Credential
	for name, data := range map[string]map[string]any{
		"m365": {"kind": "oauth2", "username": "relay@contoso.example", "provider": "microsoft365", "tenant": "contoso.example",
			"client_id": "cid-1", "client_secret": "vk-client-secret-1a", "scopes": []string{"https://outlook.office365.com/.default"}},
		"gmail": {"kind": "oauth2", "username": "relay@example.com", "provider": "google", "client_id": "cid-2",
			"client_secret": "vk-client-secret-2b", "refresh_token": "vk-refresh-token-2c"},
		"entra-cert": {"kind": "oauth2", "username": "relay@contoso.example", "provider": "microsoft365", "tenant": "contoso.example",
			"client_id": "cid-3", "private_key": jwt.KeyPEM(t), "certificate": jwt.CertPEM()},
		"corp-cert": {"kind": "certificate", "certificate": leaf.CertPEM(ca), "private_key": leaf.KeyPEM(t)},
		"ses":       {"kind": "ses", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "region": "eu-central-1", "secret_access_key": "vk-ses/secret+key"},
	} {
		data["generation"] = secrets.NewGeneration()
		c, err := secrets.ParseEntry(name, data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b secrets.Credential) int { return strings.Compare(a.Name, b.Name) })
	return out, []string{"vk-client-secret-1a", "vk-client-secret-2b", "vk-refresh-token-2c", "vk-ses/secret+key",
		strings.Split(jwt.KeyPEM(t), "\n")[2], strings.Split(leaf.KeyPEM(t), "\n")[1]}
}

// Every kind is written by PutCredential and read back by Fetch, sealed
// (every secret value an age ciphertext, the rest in clear) and not; List
// shows kinds, generations and fields, never a secret.
func TestKindsRoundTrip(t *testing.T) {
	t.Parallel()
	creds, secretValues := kindEntries(t)
	ours, oursList := identity(t, "ours")
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprintf("sealed=%v", sealed), func(t *testing.T) {
			cfg := Config{Sealed: sealed}
			rl := oursList
			if sealed {
				cfg.Identity = ours
			} else {
				rl = nil
			}
			s, logs, path := tokenSource(t, cfg)
			logs.forbid(secretValues...)
			for _, c := range creds {
				if _, err := s.PutCredential(ctx(t), c, rl); err != nil {
					t.Fatalf("PutCredential(%s): %v", c.Name, err)
				}
				raw, err := shared.Client.KVv2(vaulttest.KVMount).Get(context.Background(), path+"/"+c.Name)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range c.RevealEntry() {
					stored := raw.Data[f.Key]
					switch {
					case f.Key == secrets.KeyScopes:
						if fmt.Sprint(stored) != "["+f.Value+"]" {
							t.Errorf("%s: scopes stored as %v, want a list", c.Name, stored)
						}
					case f.Secret && sealed:
						if s, _ := stored.(string); !isArmored(s) || strings.Contains(s, f.Value) {
							t.Errorf("%s: %s is not sealed in Vault", c.Name, f.Key)
						}
					case stored != f.Value:
						t.Errorf("%s: %s stored as %.30q, want it in clear", c.Name, f.Key, stored)
					}
				}
			}
			var names []string
			for _, c := range creds {
				names = append(names, c.Name)
			}
			got, err := s.Fetch(ctx(t), names)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range creds {
				g := got[c.Name]
				if !g.SameSecret(c) || g.Generation != c.Generation || g.Version != "1" || g.Kind() != c.Kind() {
					t.Errorf("%s read back as %v", c.Name, g)
				}
			}
			if tc, err := got["corp-cert"].Certificate(); err != nil || tc.Leaf.Subject.CommonName != "relay1.example.com" {
				t.Errorf("corp-cert: Certificate() = %v", err)
			}
			if cfg, err := got["entra-cert"].OAuth2(); err != nil || cfg.AuthMethod != "private_key_jwt" {
				t.Errorf("entra-cert: OAuth2() = %v, %v", cfg, err)
			}

			list, err := s.List(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range list {
				c := creds[i]
				p := e.Public
				if e.Name != c.Name || p.Kind() != c.Kind() || p.Generation != c.Generation || e.Sealed != sealed ||
					e.Username != c.Username || !slices.Equal(p.Fields(), c.Fields()) || e.Err != nil ||
					!slices.Equal(p.SecretKeys(), c.SecretKeys()) || len(p.SecretKeys()) == 0 || p.TokenEndpoint() != c.TokenEndpoint() {
					t.Errorf("List[%d] = %+v\nwant %s %v", i, e, c.Name, c.Fields())
				}
			}
			for _, sec := range secretValues {
				if out := fmt.Sprintf("%+v %#v", list, got); strings.Contains(out, sec) {
					t.Errorf("List or Fetch prints a secret: %.20s", sec)
				}
			}
		})
	}
}

// Entries written by hand with `vault kv put`: scopes as one string, a
// sealed entry with one secret left in clear, a schema error.
func TestKindsByHand(t *testing.T) {
	t.Parallel()
	ours, _ := identity(t, "ours")
	s, logs, path := tokenSource(t, Config{})
	logs.forbid("hand-secret-77")
	shared.Put(t, path+"/hand", map[string]any{"kind": "oauth2", "username": "u", "token_url": "https://idp.example/token",
		"client_id": "c", "client_secret": "hand-secret-77", "scopes": "smtp  offline_access"})
	shared.Put(t, path+"/broken", map[string]any{"kind": "oauth2", "username": "u", "provider": "microsoft365",
		"client_id": "c", "client_secret": "hand-secret-77"})
	got, err := s.Fetch(ctx(t), []string{"hand"})
	if err != nil {
		t.Fatal(err)
	}
	if sc := got["hand"].Scopes(); !slices.Equal(sc, []string{"smtp", "offline_access"}) || got["hand"].Generation != "" {
		t.Errorf("scopes from a string = %q, generation %q", sc, got["hand"].Generation)
	}
	_, err = s.Fetch(ctx(t), []string{"broken"})
	wantErr(t, err, "secret/data/"+path+`/broken: missing key: entry "broken" has no tenant (provider microsoft365 needs it, or token_url)`)
	if !errors.Is(err, secrets.ErrMissingKey) || !strings.Contains(hintOf(err), "sealrelay creds set broken --vault") {
		t.Errorf("error kind or hint wrong: %v / %s", err, hintOf(err))
	}
	list, err := s.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "broken" || list[0].Err == nil || list[0].Username != "u" || list[1].Err != nil {
		t.Errorf("List = %+v", list)
	}

	sealedSrc, _ := newSource(t, Config{Path: path, Auth: "token", TokenFile: s.cfg.TokenFile, Sealed: true, Identity: ours})
	_, err = sealedSrc.Fetch(ctx(t), []string{"hand"})
	wantErr(t, err, "secret/data/"+path+"/hand: sealed setting does not match the stored value: sealed = true, but the client_secret is not an age-armored ciphertext")
	if strings.Contains(err.Error(), "hand-secret") {
		t.Error("the error quotes the secret")
	}
}

// A refresh token the provider rotated is written back as a new version:
// sealed with Sealed, with a new generation and everything else kept,
// and only over the version it was read at (check-and-set). Without a
// recipient list a sealed source refuses, as it does for a password or
// client-credentials entry; no error holds the token.
func TestWriteRefreshToken(t *testing.T) {
	t.Parallel()
	ours, oursList := identity(t, "ours")
	const (
		first   = "vk-refresh-original-1a2b"
		rotated = "vk-refresh-rotated-3c4d"
		again   = "vk-refresh-again-5e6f"
	)
	gmail, err := secrets.ParseEntry("gmail", map[string]any{"kind": "oauth2", "username": "relay@example.com", "provider": "google",
		"client_id": "cid-2", "client_secret": "vk-client-secret-2b", "refresh_token": first, "generation": secrets.NewGeneration()})
	if err != nil {
		t.Fatal(err)
	}
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprintf("sealed=%v", sealed), func(t *testing.T) {
			cfg, rl := Config{Sealed: sealed}, oursList
			if sealed {
				cfg.Identity, cfg.Recipients = ours, oursList
			} else {
				rl = nil
			}
			s, logs, path := tokenSource(t, cfg)
			logs.forbid(first, rotated, again, "vk-client-secret-2b")
			if _, err := s.PutCredential(ctx(t), gmail, rl); err != nil {
				t.Fatal(err)
			}
			cur := fetchCred(t, s, "gmail")
			v, err := s.WriteRefreshToken(ctx(t), cur, rotated)
			if err != nil || v != "2" {
				t.Fatalf("WriteRefreshToken = %q, %v; want version 2", v, err)
			}
			got := fetchCred(t, s, "gmail")
			if got.RefreshToken() != rotated || got.ClientSecret() != cur.ClientSecret() || got.Username != cur.Username ||
				got.Field(secrets.KeyProvider) != "google" || got.Generation == cur.Generation || got.Version != "2" {
				t.Errorf("read back: %v", got)
			}
			raw, err := shared.Client.KVv2(vaulttest.KVMount).Get(context.Background(), path+"/gmail")
			if err != nil {
				t.Fatal(err)
			}
			if stored, _ := raw.Data["refresh_token"].(string); isArmored(stored) != sealed || (sealed && strings.Contains(stored, rotated)) {
				t.Errorf("the rotated refresh token is stored as %.30q (sealed = %v)", stored, sealed)
			}

			// cur is at version 1: writing after it would undo version 2.
			_, err = s.WriteRefreshToken(ctx(t), cur, again)
			wantErr(t, err, "secret/data/"+path+"/gmail", "check-and-set")
			if fetchCred(t, s, "gmail").RefreshToken() != rotated {
				t.Error("a write over an older version went through")
			}
			if err != nil && strings.Contains(fmt.Sprintf("%v %+v", err, err), again) {
				t.Error("the error holds the token")
			}
		})
	}

	t.Run("sealed without recipients", func(t *testing.T) {
		t.Parallel()
		s, _, _ := tokenSource(t, Config{Sealed: true, Identity: ours})
		if _, err := s.PutCredential(ctx(t), gmail, oursList); err != nil {
			t.Fatal(err)
		}
		_, err := s.WriteRefreshToken(ctx(t), fetchCred(t, s, "gmail"), rotated)
		wantErr(t, err, `credential "gmail": sealed = true and no recipient list to seal the refresh token to (credentials.recipients)`)
	})
}
