// Package testlib holds the helpers that tests across the module share: a
// log sink tests read while the code writes (LogBuf), an address that
// refuses connections (RefusedAddr), polling with a bound (WaitFor), the
// test upstream started for one test (StartUpstream), files read and
// written or the test fails, free ports, the module's root and its
// top-level testdata, and the cache where the test servers' binaries live
// (CachePath, Tool).
//
// It is test-only (it imports "testing") and sits low: it imports nothing
// of the project but the test upstream, so that the tests of any package,
// secrets and the spool included, can use it. What a test shares with
// the demo and the benchmark (sealrelay on disk, the built binary, one
// message sent) is in internal/rig instead, which the release binary may
// link.
package testlib

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// WaitFor polls cond until it holds, and fails the test after d: a bound
// on a hang, not a timing assertion.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// StartUpstream starts a test upstream with cfg and closes it when the
// test ends.
func StartUpstream(t testing.TB, cfg upstream.Config) *upstream.Server {
	t.Helper()
	up, err := upstream.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	return up
}

// ReadFile returns the content of path, or fails the test.
func ReadFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// WriteFile writes data to path with mode 0644, or fails the test.
func WriteFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FreePort returns a port on 127.0.0.1 that was free a moment ago, for a
// server that must be told its port before it starts.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Tail returns the last n bytes of s, for a log quoted in an error.
func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Root returns the module's root directory (where go.mod is), found from
// this file's place in the source tree.
func Root() string {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		panic("testlib: cannot locate the source tree")
	}
	return filepath.Join(filepath.Dir(self), "..", "..", "..")
}

// Testdata returns the path of name in the module's top-level testdata
// directory, the fixtures several packages share.
func Testdata(name string) string {
	return filepath.Join(Root(), "testdata", filepath.FromSlash(name))
}

// ReadTree calls look with the content of every regular file under dir,
// passing over sockets and the files skip names (skip may be nil), and
// returns how many files it read: a test that searches files for a
// secret checks that it searched some. A file it cannot read fails the
// test.
func ReadTree(t testing.TB, dir string, skip func(path string) bool, look func(path string, data []byte)) int {
	t.Helper()
	files := 0
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error { //nolint:errcheck // errors are reported per file
		if err != nil || d.IsDir() || d.Type()&fs.ModeSocket != 0 || (skip != nil && skip(path)) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("reading %s: %v", path, err)
			return nil
		}
		files++
		look(path, b)
		return nil
	})
	return files
}
