package keys

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/hint"
	"github.com/sealrelay/sealrelay/internal/testing/ageplugin"
)

// pluginKey generates a key of the test plugin in mode and loads its
// identity file.
func pluginKey(t *testing.T, p ageplugin.Plugin, mode string) (*Identity, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugin-identity.txt")
	rcpt := p.Generate(t, mode, path)
	id, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return id, rcpt
}

// sealTo seals secret to the recipients, one per line in rcpts.
func sealTo(t *testing.T, secret, rcpts string) ([]byte, *RecipientList) {
	t.Helper()
	l, err := ParseRecipients(strings.NewReader(rcpts), "recipients.txt")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := Seal([]byte(secret), l)
	if err != nil {
		t.Fatal(err)
	}
	return sealed, l
}

// noKeyMaterial fails if s quotes a plugin identity or a secret key.
func noKeyMaterial(t *testing.T, s string) {
	t.Helper()
	if quotesKey.MatchString(s) || strings.Contains(s, "AGE-PLUGIN-") {
		t.Errorf("quotes key material: %q", s)
	}
}

// TestPluginIdentity: a file sealed to a plugin recipient and a classic key
// opens with the plugin identity, through the plugin (whose private key
// this process never holds), and with the classic key.
func TestPluginIdentity(t *testing.T) {
	p := ageplugin.Build(t)
	t.Setenv("PATH", p.Path())
	id, rcpt := pluginKey(t, p, "plain")
	if !strings.HasPrefix(rcpt, "age1sealrelaytest1") {
		t.Fatalf("recipient %q", rcpt)
	}
	if id.PublicKey() != rcpt {
		t.Errorf("public key %q, want the identity file's Recipient comment %q", id.PublicKey(), rcpt)
	}
	if got := id.Plugins(); len(got) != 1 || got[0] != "sealrelaytest" {
		t.Errorf("Plugins() = %q", got)
	}
	if want := "file " + id.Path() + ", age plugin sealrelaytest"; id.Source() != want {
		t.Errorf("Source() = %q, want %q", id.Source(), want)
	}
	noKeyMaterial(t, id.String()+id.Source())

	classicPath, classicPub := writeIdentity(t, false, 0o600)
	classic, err := Load(classicPath)
	if err != nil {
		t.Fatal(err)
	}
	const secret = "plugin-sealed-secret"
	sealed, l := sealTo(t, secret, "# hardware\n"+rcpt+"\n# classic\n"+classicPub+"\n")
	if l.Entries[0].Kind != Plugin || l.Entries[1].Kind != Classic {
		t.Errorf("kinds %v, %v", l.Entries[0].Kind, l.Entries[1].Kind)
	}
	for _, who := range []*Identity{id, classic} {
		plain, err := Open(sealed, who, "value")
		if err != nil || string(plain) != secret {
			t.Errorf("Open with %s = %q, %v", who, plain, err)
		}
	}

	// Another key of the same plugin is not a recipient: the error names
	// that key's public key, as for a classic key.
	other, otherRcpt := pluginKey(t, p, "plain")
	_, err = Open(sealed, other, "value")
	var nr *NotRecipientError
	if !errors.As(err, &nr) || !strings.Contains(err.Error(), otherRcpt) {
		t.Errorf("Open with another plugin key: %v, want a NotRecipientError naming %s", err, otherRcpt)
	}

	// A plugin that shows a message (as one that waits for a touch does)
	// still opens the file: messages are not questions.
	msg, msgRcpt := pluginKey(t, p, "message")
	sealed2, _ := sealTo(t, secret, msgRcpt+"\n")
	if plain, err := Open(sealed2, msg, "value"); err != nil || string(plain) != secret {
		t.Errorf("Open with a plugin that displays a message = %q, %v", plain, err)
	}
}

// TestPluginAsks: sealrelay has no one to answer a plugin's question. A
// plugin that asks for a PIN or a confirmation fails with an error that
// says so, names the plugin and what it asked, and hints at a key policy
// that needs no one.
func TestPluginAsks(t *testing.T) {
	p := ageplugin.Build(t)
	t.Setenv("PATH", p.Path())
	for _, tc := range []struct{ mode, want string }{
		{"pin", `opening value: age plugin sealrelaytest asked for a PIN or passphrase ("Enter the PIN of sealrelaytest key `},
		{"confirm", `opening value: age plugin sealrelaytest asked for a confirmation ("Touch sealrelaytest key `},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			id, rcpt := pluginKey(t, p, tc.mode)
			sealed, _ := sealTo(t, "x", rcpt+"\n")
			plain, err := Open(sealed, id, "value")
			if err == nil || plain != nil {
				t.Fatalf("Open = %q, %v; want an error", plain, err)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to start with %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "which sealrelay cannot give: it runs unattended; the plugin then failed: the key needs") {
				t.Errorf("error %q does not say why, with the plugin's own failure", err)
			}
			var pe *PluginError
			if !errors.As(err, &pe) || pe.Plugin != "sealrelaytest" {
				t.Errorf("error is not a *PluginError for sealrelaytest: %#v", err)
			}
			hints := hint.All(err)
			if len(hints) != 1 || !strings.Contains(hints[0], "a PIN policy and a touch policy of never") {
				t.Errorf("hints %q", hints)
			}
			noKeyMaterial(t, err.Error())
		})
	}
}

// TestPluginNotInstalled: a plugin identity or recipient whose plugin is
// not on $PATH fails naming the binary and $PATH, with a hint to install
// it for the service's user.
func TestPluginNotInstalled(t *testing.T) {
	p := ageplugin.Build(t)
	t.Setenv("PATH", p.Path())
	id, rcpt := pluginKey(t, p, "plain")
	sealed, l := sealTo(t, "x", rcpt+"\n")

	empty := t.TempDir()
	t.Setenv("PATH", empty)
	want := "age plugin sealrelaytest: age-plugin-sealrelaytest is not on $PATH (" + empty + ")"
	wantHint := "install age-plugin-sealrelaytest in a directory on the PATH of the user sealrelay runs as"
	_, openErr := Open(sealed, id, "value")
	_, sealErr := Seal([]byte("x"), l)
	for what, err := range map[string]error{"Open": openErr, "Seal": sealErr} {
		var pe *PluginError
		if !errors.As(err, &pe) || !pe.NotFound {
			t.Errorf("%s: %v (%T), want a *PluginError with NotFound", what, err, err)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q\nwant it to contain %q", what, err, want)
		}
		if h := hint.All(err); len(h) != 1 || !strings.HasPrefix(h[0], wantHint) {
			t.Errorf("%s: hints %q", what, h)
		}
		noKeyMaterial(t, err.Error())
	}
}

func TestCleanPluginText(t *testing.T) {
	for in, want := range map[string]string{
		"touch your key\n\tnow\x07":                 "touch your key now",
		"key AGE-PLUGIN-YUBIKEY-1QQQQQQQ is locked": "(withheld: it quotes a key)",
		"see age-secret-key-1xyzxyzxyz":             "(withheld: it quotes a key)",
		"age-plugin-yubikey: no YubiKey found":      "age-plugin-yubikey: no YubiKey found",
		strings.Repeat("é", 300):                    strings.Repeat("é", maxPluginText) + "...",
	} {
		if got := cleanPluginText(in); got != want {
			t.Errorf("cleanPluginText(%q) = %q, want %q", in, got, want)
		}
	}
}
