package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseBinaryLinksNoTestCode: the sealrelay binary links no
// test-only package: nothing under internal/testing/ (where the test
// upstream's fault injection lives: scripted replies, drops, stalls, AUTH
// echo) and not the testing package. `sealrelay demo` runs the relay host
// of internal/relayhost, which is product code; the test checks that it
// is linked, so that the check looks at the right binary.
func TestReleaseBinaryLinksNoTestCode(t *testing.T) {
	bin := builtBinary(t)
	out, err := exec.Command(filepath.Join(goRoot(), "bin", "go"), "tool", "nm", bin).Output()
	if err != nil {
		t.Fatalf("go tool nm %s: %v", bin, err)
	}
	const mod = "github.com/sealrelay/sealrelay/"
	var bad []string
	relayhost := false
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		sym := f[len(f)-1]
		switch {
		case strings.HasPrefix(sym, mod+"internal/testing/"), strings.HasPrefix(sym, "testing."):
			bad = append(bad, sym)
		case strings.HasPrefix(sym, mod+"internal/relayhost."):
			relayhost = true
		}
	}
	if len(bad) > 0 {
		t.Errorf("the binary links %d symbols of test-only code, e.g. %s", len(bad), strings.Join(bad[:min(len(bad), 5)], ", "))
	}
	if !relayhost {
		t.Error("the binary does not link internal/relayhost (the demo's relay host): not the binary this test means to check")
	}
}
