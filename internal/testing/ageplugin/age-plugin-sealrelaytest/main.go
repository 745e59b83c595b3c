// Command age-plugin-sealrelaytest is a test-only age plugin that stands in
// for a hardware key (age-plugin-yubikey, age-plugin-tpm, age-plugin-se):
// its private keys live in a directory that only the plugin knows, fixed
// when it is built (-ldflags "-X main.keyDir=DIR"), so whoever uses them
// holds only a handle, and every decryption runs this process.
//
// An identity's data is a mode byte and a 16-byte handle naming the key file
// in keyDir; a recipient's data is the X25519 public key. A file key is
// wrapped with HPKE (DHKEM X25519, HKDF-SHA256, ChaCha20-Poly1305) in a
// stanza of type "sealrelaytest". The mode says what the plugin does before
// it unwraps, as hardware plugins do:
//
//	plain    nothing
//	pin      asks for a PIN (request-secret) and fails unless given 123456
//	confirm  asks for a confirmation (as a touch would) and fails on no
//	message  displays a message, then unwraps
//
// Usage:
//
//	age-plugin-sealrelaytest --generate [--mode MODE] -o FILE
//
// writes a new identity file (mode 0600, a "# Recipient:" comment and the
// AGE-PLUGIN-SEALRELAYTEST-1... line) and prints the recipient.
package main

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"filippo.io/age"
	"filippo.io/age/plugin"
)

// keyDir holds the private keys, one file per handle. Set at build time.
var keyDir string

const (
	name       = "sealrelaytest"
	stanzaType = "sealrelaytest"
	testPIN    = "123456"
	handleLen  = 16
)

// The modes, the first byte of an identity's data.
var modes = map[string]byte{"plain": 0, "pin": 1, "confirm": 2, "message": 3}

var info = []byte("age-plugin-sealrelaytest")

func main() {
	p, err := plugin.New(name)
	if err != nil {
		fatalf("%v", err)
	}
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	generate := fs.Bool("generate", false, "generate a new key")
	mode := fs.String("mode", "plain", "with --generate: plain, pin, confirm or message")
	out := fs.String("o", "", "with --generate: the identity file to write")
	p.RegisterFlags(fs)
	fs.Parse(os.Args[1:]) //nolint:errcheck // ExitOnError
	if *generate {
		if err := generateKey(*mode, *out); err != nil {
			fatalf("%v", err)
		}
		return
	}
	p.HandleRecipient(func(data []byte) (age.Recipient, error) {
		pub, err := ecdh.X25519().NewPublicKey(data)
		if err != nil {
			return nil, fmt.Errorf("malformed recipient: %v", err)
		}
		return recipient{pub}, nil
	})
	p.HandleIdentity(func(data []byte) (age.Identity, error) {
		if len(data) != 1+handleLen {
			return nil, errors.New("malformed identity")
		}
		return &identity{p: p, mode: data[0], handle: data[1:]}, nil
	})
	os.Exit(p.Main())
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "age-plugin-sealrelaytest: "+format+"\n", args...)
	os.Exit(1)
}

// generateKey makes a key in keyDir and writes its identity file.
func generateKey(mode, out string) error {
	m, ok := modes[mode]
	if !ok {
		return fmt.Errorf("unknown mode %q", mode)
	}
	if out == "" {
		return errors.New("--generate needs -o FILE")
	}
	if keyDir == "" {
		return errors.New("built without a key directory (-ldflags -X main.keyDir=DIR)")
	}
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	handle := make([]byte, handleLen)
	rand.Read(handle)
	if err := os.WriteFile(filepath.Join(keyDir, hex.EncodeToString(handle)), priv.Bytes(), 0o600); err != nil {
		return err
	}
	rcpt := plugin.EncodeRecipient(name, priv.PublicKey().Bytes())
	id := plugin.EncodeIdentity(name, append([]byte{m}, handle...))
	content := fmt.Sprintf("# created: %s\n# test only: a sealrelaytest key in mode %s\n# Recipient: %s\n%s\n",
		time.Now().UTC().Format(time.RFC3339), mode, rcpt, id)
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Println(rcpt)
	return nil
}

type recipient struct{ pub *ecdh.PublicKey }

func (r recipient) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	pk, err := hpke.NewDHKEMPublicKey(r.pub)
	if err != nil {
		return nil, err
	}
	ct, err := hpke.Seal(pk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), info, fileKey)
	if err != nil {
		return nil, err
	}
	return []*age.Stanza{{Type: stanzaType, Body: ct}}, nil
}

type identity struct {
	p      *plugin.Plugin
	mode   byte
	handle []byte
}

func (id *identity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	var ours []*age.Stanza
	for _, s := range stanzas {
		if s.Type == stanzaType {
			ours = append(ours, s)
		}
	}
	if len(ours) == 0 {
		return nil, age.ErrIncorrectIdentity
	}
	switch id.mode {
	case modes["pin"]:
		pin, err := id.p.RequestValue("Enter the PIN of sealrelaytest key "+hex.EncodeToString(id.handle[:4]), true)
		if err != nil {
			return nil, fmt.Errorf("the key needs its PIN: %v", err)
		}
		if pin != testPIN {
			return nil, errors.New("wrong PIN")
		}
	case modes["confirm"]:
		yes, err := id.p.Confirm("Touch sealrelaytest key "+hex.EncodeToString(id.handle[:4])+" to decrypt", "touched", "")
		if err != nil {
			return nil, fmt.Errorf("the key needs a touch: %v", err)
		}
		if !yes {
			return nil, errors.New("not confirmed")
		}
	case modes["message"]:
		if err := id.p.DisplayMessage("sealrelaytest key " + hex.EncodeToString(id.handle[:4]) + " is working"); err != nil {
			return nil, err
		}
	}
	raw, err := os.ReadFile(filepath.Join(keyDir, hex.EncodeToString(id.handle)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errors.New("no such key in this plugin's store (was it generated by this build?)")
	}
	if err != nil {
		return nil, err
	}
	priv, err := ecdh.X25519().NewPrivateKey(raw)
	clear(raw)
	if err != nil {
		return nil, err
	}
	sk, err := hpke.NewDHKEMPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	for _, s := range ours {
		if fk, err := hpke.Open(sk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), info, s.Body); err == nil {
			return fk, nil
		}
	}
	return nil, age.ErrIncorrectIdentity
}
