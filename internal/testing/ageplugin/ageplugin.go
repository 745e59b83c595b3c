// Package ageplugin builds age-plugin-sealrelaytest, a test-only age plugin
// (see its package doc) whose private keys live in a directory only the
// plugin knows, for tests of plugin identities and plugin recipients. It is
// for tests only: nothing the product builds imports it.
package ageplugin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Name is the plugin's name: recipients are age1sealrelaytest1..., and age
// runs it as age-plugin-sealrelaytest.
const Name = "sealrelaytest"

// PIN is the PIN the plugin accepts for a key generated with mode "pin".
const PIN = "123456"

// Plugin is a built plugin.
type Plugin struct {
	// Dir holds the binary age-plugin-sealrelaytest: put it on PATH.
	Dir string
	// KeyDir holds the private keys; only the plugin reads it.
	KeyDir string
}

// Build builds the plugin into a directory of the test's, with a key
// directory of its own beside it, and returns it; both go when the test
// ends.
func Build(t testing.TB) Plugin {
	t.Helper()
	root := t.TempDir()
	p := Plugin{Dir: filepath.Join(root, "bin"), KeyDir: filepath.Join(root, "keys")}
	if err := os.Mkdir(p.KeyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	goBin := "go"
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		goBin = filepath.Join(strings.TrimSpace(string(out)), "bin", "go")
	}
	cmd := exec.Command(goBin, "build",
		"-ldflags", "-X main.keyDir="+p.KeyDir,
		"-o", filepath.Join(p.Dir, "age-plugin-"+Name),
		"github.com/sealrelay/sealrelay/internal/testing/ageplugin/age-plugin-sealrelaytest")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building age-plugin-%s: %v\n%s", Name, err, out)
	}
	return p
}

// Path returns a PATH value with the plugin's directory first.
func (p Plugin) Path() string {
	return p.Dir + string(os.PathListSeparator) + os.Getenv("PATH")
}

// Generate makes a new key in the given mode (plain, pin, confirm or
// message), writes its identity file to path with mode 0600, and returns
// the recipient (age1sealrelaytest1...).
func (p Plugin) Generate(t testing.TB, mode, path string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(p.Dir, "age-plugin-"+Name), "--generate", "--mode", mode, "-o", path).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("age-plugin-%s --generate: %v\n%s", Name, err, stderr)
	}
	return strings.TrimSpace(string(out))
}
