package keys

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"unicode"

	"filippo.io/age"
	"filippo.io/age/plugin"
)

// An age plugin identity (AGE-PLUGIN-NAME-1...) names a key that the
// plugin age-plugin-NAME holds: in a YubiKey (age-plugin-yubikey), a TPM
// (age-plugin-tpm) or the Secure Enclave (age-plugin-se). age runs the
// plugin from $PATH each time a file is opened, and the private key never
// enters this process. sealrelay runs unattended: a plugin that asks for a
// PIN or a confirmation gets no answer, and the error says what it asked.

// PluginError reports an age plugin that could not open a file or seal
// one: it is not installed, it asked for what a daemon cannot give, or it
// failed. Its text holds only what the plugin said, cleaned, never the
// identity or key material.
type PluginError struct {
	Plugin   string // the plugin's name: "yubikey" runs age-plugin-yubikey
	NotFound bool   // age-plugin-NAME is not on $PATH
	Path     string // $PATH when NotFound
	Asked    string // what the plugin asked for: "a PIN (\"Enter PIN\")"
	Said     string // the last message the plugin displayed
	Reason   string // the plugin's own error
}

func (e *PluginError) Error() string {
	var b strings.Builder
	switch {
	case e.NotFound:
		fmt.Fprintf(&b, "age plugin %s: age-plugin-%s is not on $PATH (%s)", e.Plugin, e.Plugin, e.Path)
		return b.String()
	case e.Asked != "":
		fmt.Fprintf(&b, "age plugin %s asked for %s, which sealrelay cannot give: it runs unattended", e.Plugin, e.Asked)
		if e.Reason != "" {
			fmt.Fprintf(&b, "; the plugin then failed: %s", e.Reason)
		}
	default:
		fmt.Fprintf(&b, "age plugin %s failed: %s", e.Plugin, e.Reason)
	}
	if e.Said != "" {
		fmt.Fprintf(&b, " (it said: %q)", e.Said)
	}
	return b.String()
}

// Hint tells the operator what the plugin needs.
func (e *PluginError) Hint() string {
	switch {
	case e.NotFound:
		return fmt.Sprintf("install age-plugin-%s in a directory on the PATH of the user sealrelay runs as (under systemd, the unit's Environment=PATH=)", e.Plugin)
	case e.Asked != "":
		return "make the key usable without anyone present: a PIN policy and a touch policy of never (age-plugin-yubikey --pin-policy never --touch-policy never); see the README, \"Server keys in hardware (age plugins)\""
	default:
		return fmt.Sprintf("run the plugin by hand as the user sealrelay runs as to see what it needs: AGEDEBUG=plugin age -d -i IDENTITY FILE (age-plugin-%s)", e.Plugin)
	}
}

// pluginIdentity is an age plugin identity. Each Unwrap starts the plugin
// afresh, with a UI of its own that records what the plugin asked and said.
type pluginIdentity struct {
	name     string // the plugin: "yubikey"
	encoding string // AGE-PLUGIN-...: never printed
}

var _ age.Identity = (*pluginIdentity)(nil)

func newPluginIdentity(s string) (*pluginIdentity, error) {
	name, _, err := plugin.ParseIdentity(s)
	if err != nil {
		return nil, err
	}
	return &pluginIdentity{name: name, encoding: s}, nil
}

// Unwrap runs the plugin. Failures other than "not this key" become a
// *PluginError.
func (p *pluginIdentity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	ui := &pluginSession{}
	id, err := plugin.NewIdentity(p.encoding, ui.clientUI())
	if err != nil {
		return nil, &PluginError{Plugin: p.name, Reason: "malformed plugin identity"}
	}
	fk, err := id.Unwrap(stanzas)
	if err == nil || errors.Is(err, age.ErrIncorrectIdentity) {
		return fk, err
	}
	return nil, ui.pluginError(p.name, err)
}

// pluginSession records one run of a plugin: what it asked for, which is
// refused, and what it displayed.
type pluginSession struct {
	mu    sync.Mutex
	asked string
	said  string
}

// clientUI serves a plugin for a daemon: there is no one to answer a
// prompt, so requests for input and confirmation fail; messages are kept
// for the error.
func (s *pluginSession) clientUI() *plugin.ClientUI {
	return &plugin.ClientUI{
		DisplayMessage: func(name, message string) error {
			s.mu.Lock()
			s.said = cleanPluginText(message)
			s.mu.Unlock()
			return nil
		},
		RequestValue: func(name, prompt string, secret bool) (string, error) {
			what := "a value"
			if secret {
				what = "a PIN or passphrase"
			}
			s.refuse(what, prompt)
			return "", fmt.Errorf("age plugin %s asked for %s, which sealrelay cannot give", name, what)
		},
		Confirm: func(name, prompt, yes, no string) (bool, error) {
			s.refuse("a confirmation", prompt)
			return false, fmt.Errorf("age plugin %s asked for a confirmation, which sealrelay cannot give", name)
		},
	}
}

func (s *pluginSession) refuse(what, prompt string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := cleanPluginText(prompt); p != "" {
		what += fmt.Sprintf(" (%q)", p)
	}
	s.asked = what
}

// pluginError turns what age's plugin client returned into a *PluginError.
func (s *pluginSession) pluginError(name string, err error) *PluginError {
	s.mu.Lock()
	defer s.mu.Unlock()
	pe := &PluginError{Plugin: name, Asked: s.asked, Said: s.said}
	var nf *plugin.NotFoundError
	if errors.As(err, &nf) {
		pe.NotFound, pe.Path = true, os.Getenv("PATH")
		return pe
	}
	// age's client says "NAME plugin: ..." before the plugin's own text.
	pe.Reason = cleanPluginText(strings.TrimPrefix(err.Error(), name+" plugin: "))
	return pe
}

// pluginRecipientError turns an error from sealing to a plugin recipient
// into a *PluginError where it is one.
func pluginRecipientError(err error) error {
	var nf *plugin.NotFoundError
	if errors.As(err, &nf) {
		return &PluginError{Plugin: nf.Name, NotFound: true, Path: os.Getenv("PATH")}
	}
	return err
}

// quotesKey matches an age secret key or plugin identity, in either case.
var quotesKey = regexp.MustCompile(`(?i)age-(plugin-[a-z0-9+._-]+|secret-key(-pq)?)-1[02-9ac-hj-np-z]{6}`)

// maxPluginText caps what is kept of a plugin's prompt, message or error.
const maxPluginText = 200

// cleanPluginText makes text a plugin sent fit for a log line: printable,
// on one line, at most maxPluginText characters, and withheld entirely if
// it looks as if it quotes a key.
func cleanPluginText(s string) string {
	if quotesKey.MatchString(s) {
		return "(withheld: it quotes a key)"
	}
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || !unicode.IsPrint(r)
	}), " ")
	if r := []rune(s); len(r) > maxPluginText {
		s = string(r[:maxPluginText]) + "..."
	}
	return s
}

// pluginUI serves plugin recipients (sealing), which need no one: requests
// for input fail, and messages are dropped.
var pluginUI = (&pluginSession{}).clientUI()
