package keys_test

import (
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/sealrelay/sealrelay/keys"
)

func ExampleParseRecipients() {
	list := `# relay1.example.com
age1shlqpm828v76rvcplj6pt0p6ehtxr6w5lzhf8jrre0y7vprzpycqnafrly
# relay2.example.com
age1f09z0g656r784f9w8v3xctzpsyslshuahhkxjmw9fhtxdnmy35ssah70c8
`
	l, err := keys.ParseRecipients(strings.NewReader(list), "recipients.txt")
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range l.Entries {
		fmt.Printf("line %d: %s (%s)\n", e.Line, e.Name, e.Kind)
	}
	// Output:
	// line 2: relay1.example.com (classic X25519 (age1...))
	// line 4: relay2.example.com (classic X25519 (age1...))
}

func ExampleParseRecipients_secretKeyPasted() {
	list := `# relay1.example.com
age1shlqpm828v76rvcplj6pt0p6ehtxr6w5lzhf8jrre0y7vprzpycqnafrly
# relay2.example.com
AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ
`
	_, err := keys.ParseRecipients(strings.NewReader(list), "recipients.txt")
	fmt.Println(err)
	// Output:
	// recipients.txt:4: this line is a secret key, not a public one; remove it from the list (and treat that key as exposed)
}

func ExampleGenerate() {
	file, publicKey, err := keys.Generate(false, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		log.Fatal(err)
	}
	lines := strings.Split(string(file), "\n")
	fmt.Println(lines[0])
	fmt.Println(lines[1] == "# public key: "+publicKey)
	fmt.Println(strings.HasPrefix(lines[2], "AGE-SECRET-KEY-1"))
	// Output:
	// # created: 2026-01-02T03:04:05Z
	// true
	// true
}
