// Package hint is how an error tells the operator how to fix it: an error
// with a Hint method carries a fix, and All collects the fixes in an error's
// tree for the CLI, which prints each on a "sealrelay: hint:" line.
//
// Errors implement Hinter without importing this package (keys, the
// spool, the Vault source and the config do), so it sits below all of them
// and imports nothing of the project.
package hint

// Hinter is implemented by errors that know how the operator can fix them.
type Hinter interface {
	Hint() string
}

// All returns the Hint of every Hinter in err's tree (following Unwrap,
// both forms), in the order found, each text once.
func All(err error) []string {
	var out []string
	seen := map[string]bool{}
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if h, ok := err.(Hinter); ok && !seen[h.Hint()] {
			seen[h.Hint()] = true
			out = append(out, h.Hint())
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}
