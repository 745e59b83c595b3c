package agefile_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

// A server's key, a recipient list holding it, and a credential file sealed
// to that list, read back with the key.
func Example() {
	dir, err := os.MkdirTemp("", "agefile-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	keyFile, publicKey, err := keys.Generate(false, time.Now())
	if err != nil {
		log.Fatal(err)
	}
	identityPath := filepath.Join(dir, "identity.txt")
	if err := os.WriteFile(identityPath, keyFile, 0o600); err != nil {
		log.Fatal(err)
	}
	id, err := keys.Load(identityPath)
	if err != nil {
		log.Fatal(err)
	}
	list, err := keys.ParseRecipients(strings.NewReader("# relay1.example.com\n"+publicKey+"\n"), "recipients.txt")
	if err != nil {
		log.Fatal(err)
	}

	path := filepath.Join(dir, "credentials.age")
	err = agefile.Write(path, []secrets.Credential{
		secrets.NewCredential("primary", "relay-account@example.com", "s3cret-example", ""),
	}, list)
	if err != nil {
		log.Fatal(err)
	}

	creds, err := agefile.Read(path, id)
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range creds {
		fmt.Println(c.Name, c.Username, c.HasPassword())
		fmt.Printf("%v\n", c.Password() == "s3cret-example")
	}
	// Output:
	// primary relay-account@example.com true
	// true
}
