package rig

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

const relayPass = "rig-Pa55word-never-logged"

// TestWriteSetupErrors: a setup without its required parts is refused,
// naming them.
func TestWriteSetupErrors(t *testing.T) {
	_, err := WriteSetup(t.TempDir(), Options{Relay: "127.0.0.1:25", User: "u", Password: "p"})
	if err == nil || !strings.Contains(err.Error(), "Relay, User, Password and CAPEM are required") {
		t.Fatalf("WriteSetup without CAPEM: %v", err)
	}
	_, err = WriteSetup(t.TempDir()+"/missing", Options{Relay: "127.0.0.1:25", User: "u", Password: "p", CAPEM: []byte("x")})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("WriteSetup into a missing directory: %v", err)
	}
}

// TestSetupSealsThePassword: the password is only in the sealed file.
func TestSetupSealsThePassword(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteSetup(dir, Options{Relay: "127.0.0.1:25", User: "u", Password: relayPass, CAPEM: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if b, err := os.ReadFile(dir + "/" + e.Name()); err == nil && bytes.Contains(b, []byte(relayPass)) {
			t.Errorf("%s holds the password in the clear", e.Name())
		}
	}
	id, err := keys.Load(dir + "/identity.txt")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := agefile.NewSource(dir+"/credentials.age", id).Fetch(context.Background(), []string{CredentialName})
	if err != nil {
		t.Fatal(err)
	}
	if c := creds[CredentialName]; c.Username != "u" || c.Password() != relayPass {
		t.Fatalf("the sealed entry %s opens to user %q and another password", CredentialName, c.Username)
	}
}
