package postfixtest

import "testing"

// StartT is Start for a test: it fails t if Postfix cannot run here or
// does not start, and stops the instance when the test ends, showing
// Postfix's log first if the test failed.
func StartT(t testing.TB, cfg Config) *Instance {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	p, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfix log %s:\n%s", p.LogFile(), p.Log())
		}
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return p
}
