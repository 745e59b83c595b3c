package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestUnsafeFilesRefusedByCommands: the commands refuse an identity another
// user owns, a credential file or recipient list that group or others can
// write, and a file in a directory others can write, saying which file,
// why, and how to fix it.
func TestUnsafeFilesRefusedByCommands(t *testing.T) {
	cases := []struct {
		name    string
		root    bool // needs chown
		breakIt func(t *testing.T, dir string)
		args    func(dir, cfg string) []string
		err     func(dir string) string
		hint    func(dir string) string
	}{
		{
			name: "identity of another user", root: true,
			breakIt: func(t *testing.T, dir string) { chown(t, filepath.Join(dir, "identity.txt"), 4242, 4242) },
			args:    func(dir, cfg string) []string { return []string{"check", "-c", cfg} },
			err: func(dir string) string {
				return "credentials.identity: identity file " + filepath.Join(dir, "identity.txt") + " is owned by uid 4242, not by uid 0 (the user sealrelay runs as) or root; refusing to use it: its owner can change it"
			},
			hint: func(dir string) string {
				return "give it to the user sealrelay runs as: chown 0 " + filepath.Join(dir, "identity.txt") + " (or to root)"
			},
		},
		{
			name:    "group-writable credential file",
			breakIt: func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, "credentials.age"), 0o664) },
			args:    func(dir, cfg string) []string { return []string{"check", "-c", cfg} },
			err: func(dir string) string {
				return "credential file " + filepath.Join(dir, "credentials.age") + " is accessible by group or others (mode 0664); refusing to use it"
			},
			hint: func(dir string) string {
				return "make it writable by its owner only: chmod go-w " + filepath.Join(dir, "credentials.age")
			},
		},
		{
			name:    "world-writable directory",
			breakIt: func(t *testing.T, dir string) { chmod(t, dir, 0o777) },
			args: func(dir, cfg string) []string {
				return []string{"creds", "list", "-f", filepath.Join(dir, "credentials.age"), "-i", filepath.Join(dir, "identity.txt")}
			},
			err: func(dir string) string {
				return "identity file " + filepath.Join(dir, "identity.txt") + ": directory " + dir + " is writable by group or others (mode 0777); refusing to use the file: whoever can write the directory can replace it"
			},
			hint: func(dir string) string { return "make the directory writable by its owner only: chmod go-w " + dir },
		},
		{
			name:    "group-writable recipient list",
			breakIt: func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, "recipients.txt"), 0o664) },
			args: func(dir, cfg string) []string {
				return []string{"creds", "reencrypt", "-f", filepath.Join(dir, "credentials.age"), "-R", filepath.Join(dir, "recipients.txt"), "-i", filepath.Join(dir, "identity.txt")}
			},
			err: func(dir string) string {
				return "recipient list " + filepath.Join(dir, "recipients.txt") + " is accessible by group or others (mode 0664); refusing to use it"
			},
			hint: func(dir string) string { return "chmod go-w " + filepath.Join(dir, "recipients.txt") },
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.root && os.Geteuid() != 0 {
				t.Skip("giving a file to another user (chown) needs root")
			}
			dir := t.TempDir()
			rigFiles(t, dir, rigUser, rigPass)
			up := startUpstream(t, dir, upstream.Config{})
			cfg := rigConfig(t, dir, up.Addr(), relayOpts{}, "")
			c.breakIt(t, dir)
			code, _, errs := runCLI(t, c.args(dir, cfg)...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if !strings.Contains(errs, "sealrelay: ") || !strings.Contains(errs, c.err(dir)) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", errs, c.err(dir))
			}
			if !strings.Contains(errs, "sealrelay: hint: ") || !strings.Contains(errs, c.hint(dir)) {
				t.Errorf("stderr:\n%s\nwant the hint %q", errs, c.hint(dir))
			}
			for _, s := range up.Sessions() {
				if len(s.Auths) > 0 {
					t.Errorf("the command authenticated to the relay: %+v", s.Auths)
				}
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
