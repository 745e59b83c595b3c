package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the test binary act as the sealrelay command in scripts:
// testscript runs it again under the name "sealrelay", and it runs the real
// command line through run.
func TestMain(m *testing.M) {
	testscript.Main(cleanupM{m}, map[string]func(){
		"sealrelay": main,
	})
}

// cleanupM removes the age binary built for the scripts after the tests.
type cleanupM struct{ m *testing.M }

func (c cleanupM) Run() int {
	code := c.m.Run()
	if ageDir != "" {
		os.RemoveAll(ageDir)
	}
	return code
}

var (
	ageOnce sync.Once
	ageDir  string // holds the age CLI, built once per test binary
	ageErr  error
)

// buildAge builds the real age CLI, at the version of filippo.io/age this
// module requires, into a temp dir, once. It uses `go install pkg@version`,
// which resolves age's own dependencies from its go.mod, so this module's
// go.sum need not list the CLI's extra dependencies.
func buildAge(t *testing.T) string {
	t.Helper()
	ageOnce.Do(func() {
		version, err := ageVersion()
		if err != nil {
			ageErr = err
			return
		}
		dir, err := os.MkdirTemp("", "sealrelay-age-")
		if err != nil {
			ageErr = err
			return
		}
		ageDir = dir
		goBin := filepath.Join(goRoot(), "bin", "go")
		cmd := exec.Command(goBin, "install", "filippo.io/age/cmd/age@"+version)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			ageErr = fmt.Errorf("building the age CLI %s: %v\n%s", version, err, out)
		}
	})
	if ageErr != nil {
		t.Fatal(ageErr)
	}
	return ageDir
}

// ageVersion returns the version of filippo.io/age linked into this test.
func ageVersion() (string, error) {
	bi, ok := debug.ReadBuildInfo()
	if ok {
		for _, d := range bi.Deps {
			if d.Path == "filippo.io/age" {
				if d.Replace != nil {
					return "", fmt.Errorf("filippo.io/age is replaced by %s; the interop test needs a released version", d.Replace.Path)
				}
				return d.Version, nil
			}
		}
	}
	out, err := exec.Command(filepath.Join(goRoot(), "bin", "go"), "list", "-m", "-f", "{{.Version}}", "filippo.io/age").Output()
	if err != nil {
		return "", fmt.Errorf("finding the version of filippo.io/age: %v", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// goRoot finds the Go installation: the go command on PATH, else the one
// the machine image installs.
func goRoot() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return "/usr/local/go"
}

// runScripts runs the named scripts from testdata/script with the age CLI on
// PATH and the helper commands below.
func runScripts(t *testing.T, names ...string) {
	dir := buildAge(t)
	var files []string
	for _, n := range names {
		files = append(files, filepath.Join("testdata", "script", n+".txt"))
	}
	testscript.Run(t, testscript.Params{
		Files: files,
		Setup: func(e *testscript.Env) error {
			e.Setenv("PATH", dir+string(os.PathListSeparator)+e.Getenv("PATH"))
			return nil
		},
		Cmds:                scriptCmds,
		RequireExplicitExec: true,
	})
}

// scriptCmds are the helper commands the scripts use.
var scriptCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"truncate": cmdTruncate,
	"flipbit":  cmdFlipbit,
	"catfiles": cmdCatfiles,
	"exits":    cmdExits,
	"mode":     cmdMode,
	"contains": cmdContains,
}

func TestScriptKeygen(t *testing.T)         { runScripts(t, "keygen") }
func TestScriptCredsSet(t *testing.T)       { runScripts(t, "creds_set") }
func TestScriptCredsList(t *testing.T)      { runScripts(t, "creds_list") }
func TestScriptCredsRm(t *testing.T)        { runScripts(t, "creds_rm") }
func TestScriptCredsReencrypt(t *testing.T) { runScripts(t, "creds_reencrypt") }

// cmdTruncate cuts FILE to N bytes: truncate FILE N
func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: truncate FILE N")
	}
	n, err := strconv.ParseInt(args[1], 10, 64)
	ts.Check(err)
	ts.Check(os.Truncate(ts.MkAbs(args[0]), n))
}

// cmdFlipbit flips the lowest bit of the byte at OFFSET in FILE; a negative
// OFFSET counts from the end: flipbit FILE OFFSET
func cmdFlipbit(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: flipbit FILE OFFSET")
	}
	off, err := strconv.Atoi(args[1])
	ts.Check(err)
	path := ts.MkAbs(args[0])
	data, err := os.ReadFile(path)
	ts.Check(err)
	if off < 0 {
		off += len(data)
	}
	if off < 0 || off >= len(data) {
		ts.Fatalf("offset %s is outside %s (%d bytes)", args[1], args[0], len(data))
	}
	data[off] ^= 1
	ts.Check(os.WriteFile(path, data, 0o600))
}

// cmdCatfiles writes the concatenation of the IN files to OUT:
// catfiles OUT IN...
func cmdCatfiles(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: catfiles OUT IN...")
	}
	var b []byte
	for _, in := range args[1:] {
		b = append(b, ts.ReadFile(in)...)
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// cmdExits runs a command and checks its exit status, so scripts tell usage
// errors (2) from failures (1): exits N CMD ARGS...
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits N CMD ARGS...")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("running %s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// cmdMode checks a file's permission bits: mode FILE 0600
func cmdMode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mode FILE PERM")
	}
	want, err := strconv.ParseUint(args[1], 8, 32)
	ts.Check(err)
	fi, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	if got := fi.Mode().Perm(); uint64(got) != want {
		ts.Fatalf("%s has mode %04o, want %04o", args[0], got, want)
	}
}

// cmdContains checks that FILE (or stdout, stderr) holds the text of
// NEEDLE, a file, trimmed: contains FILE NEEDLE
func cmdContains(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: contains FILE NEEDLE")
	}
	needle := strings.TrimSpace(ts.ReadFile(args[1]))
	if needle == "" {
		ts.Fatalf("%s is empty", args[1])
	}
	if found := strings.Contains(ts.ReadFile(args[0]), needle); found == neg {
		ts.Fatalf("%s: contains the text of %s is %v, want %v", args[0], args[1], found, !neg)
	}
}
