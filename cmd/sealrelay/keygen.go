package main

import (
	"flag"
	"fmt"

	"github.com/sealrelay/sealrelay/keys"
)

// keygenFlags defines keygen's flags.
func keygenFlags(fs *flag.FlagSet) (out, show *string, pq *bool) {
	return fs.String("o", "", "write a new identity to `FILE` (never overwritten)"),
		fs.String("y", "", "print the public key of the identity in `FILE`"),
		fs.Bool("pq", false, "make a hybrid post-quantum identity (age1pq1...)")
}

// cmdKeygen makes a server identity or prints an identity's public key. It
// never prints a secret key: without -o there is nowhere to put one.
func cmdKeygen(e *env, args []string) error {
	fs := newFlags("keygen")
	out, show, pq := keygenFlags(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usagef("keygen takes no arguments, got %q", pos[0])
	case *out != "" && *show != "":
		return usagef("keygen takes -o or -y, not both")
	case *show != "":
		if *pq {
			return usagef("--pq goes with -o: it chooses the kind of a new key")
		}
		id, err := keys.Load(*show)
		if err != nil {
			return err
		}
		if len(id.PublicKeys()) == 0 {
			return fmt.Errorf("identity file %s does not name its public key (a plugin identity needs a \"# public key:\" comment)", *show)
		}
		for _, k := range id.PublicKeys() {
			fmt.Fprintln(e.stdout, k)
		}
		return nil
	case *out != "":
		pub, err := keys.WriteNew(*out, *pq)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, pub)
		fmt.Fprintf(e.stderr, "sealrelay: wrote %s (mode 0600); add its public key to the recipient list\n", *out)
		return nil
	default:
		return usagef("keygen needs -o FILE to write a new identity (sealrelay never prints a secret key), or -y FILE to print a public key")
	}
}
