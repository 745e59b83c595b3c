package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/rig"
)

// TestReleaseBinaryLinksNoTestCode: the sealrelay binary links no
// test-only package: nothing under internal/testing/ (where the test
// upstream's fault injection lives: scripted replies, drops, stalls, AUTH
// echo) and not the testing package. `sealrelay demo` runs the relay host
// of internal/relayhost, which is product code; the test checks that it
// is linked, so that the check looks at the right binary.
func TestReleaseBinaryLinksNoTestCode(t *testing.T) {
	bin := builtBinary(t)
	out, err := exec.Command(rig.GoCommand(), "tool", "nm", bin).Output()
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

// TestImportRules checks the import rules of the design (docs/) on the
// module's package graph (what non-test code imports).
func TestImportRules(t *testing.T) {
	const mod = "github.com/sealrelay/sealrelay/"
	out, err := exec.Command(rig.GoCommand(), "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	under := func(p string, dirs ...string) bool {
		for _, d := range dirs {
			if p == d || strings.HasPrefix(p, d+"/") {
				return true
			}
		}
		return false
	}
	product := []string{"internal/hint", "internal/roots", "internal/safeio", "internal/testseam", "internal/relayhost", "internal/addrpat", "internal/heldwrites"}
	rules := []struct {
		rule  string
		check func(pkg, imp string) bool // true: pkg may not import imp
	}{
		{"nothing imports the command", func(_, imp string) bool { return under(imp, "cmd") }},
		{"only tests and the benchmark import internal/testing", func(pkg, imp string) bool {
			return under(imp, "internal/testing") && !under(pkg, "internal/testing", "bench")
		}},
		{"only the command, tests and the benchmark import internal/rig", func(pkg, imp string) bool {
			return under(imp, "internal/rig") && !under(pkg, "cmd", "internal/testing", "bench")
		}},
		{"agent/* gets its Source from the command", func(pkg, imp string) bool {
			return under(pkg, "agent") && under(imp, "secrets/agefile", "secrets/vault")
		}},
		{"the spool imports no other agent package", func(pkg, imp string) bool {
			return pkg == "agent/spool" && under(imp, "agent") && !under(imp, "agent/spool")
		}},
		{"secrets and keys do not import the agent", func(pkg, imp string) bool {
			return under(pkg, "secrets", "keys") && under(imp, "agent")
		}},
		{"internal product packages import nothing of the project", func(pkg, imp string) bool {
			return under(pkg, product...)
		}},
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0], mod)
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			imp = strings.TrimPrefix(imp, mod)
			checked++
			for _, r := range rules {
				if r.check(pkg, imp) {
					t.Errorf("%s imports %s: %s", pkg, imp, r.rule)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("go list showed no import inside the module")
	}
}
