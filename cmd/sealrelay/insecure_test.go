package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestInsecureSettingsWarnedAtStart: a config that sends AUTH in clear to a
// relay off loopback, or reaches Vault over http:// off loopback, loads
// only with the option named insecure, and then serve and check warn at
// every start, naming the file, line and key. Nothing here listens at the
// remote addresses (TEST-NET-1): the warning comes before any connection.
func TestInsecureSettingsWarnedAtStart(t *testing.T) {
	const remote = "192.0.2.1"
	cases := []struct {
		name    string
		relay   relayOpts
		edit    func(t *testing.T, cfg string)
		key     string // the warning names it, and the line that sets it
		warning string
	}{
		{
			name:  "plaintext auth to a remote relay",
			relay: relayOpts{TLS: "none", AllowPlain: true},
			edit: func(t *testing.T, cfg string) {
				writeTestFile(t, cfg, strings.Replace(readTestFile(t, cfg), "allow_plaintext_auth = true\n",
					"allow_plaintext_auth = true\ninsecure_plaintext_auth_to_remote = true\n", 1))
			},
			key:     "relay[0].insecure_plaintext_auth_to_remote",
			warning: `relay \"up\" (` + remote + `:25) gets AUTH without TLS: the password crosses the network in clear`,
		},
		{
			name: "http to a remote Vault",
			edit: func(t *testing.T, cfg string) {
				data := strings.Replace(readTestFile(t, cfg), "[credentials]\n", `[credentials]
identity = "identity.txt"
source = "vault"
[credentials.vault]
address = "http://`+remote+`:8200"
token_file = "vault-token"
timeout = "1s"
insecure_http = true
[credentials.age]
`, 1)
				data = strings.Replace(data, "[credentials.age]\nidentity = \"identity.txt\"\nfile = \"credentials.age\"\n", "", 1)
				writeTestFile(t, cfg, data)
				writeTestFile(t, filepath.Join(filepath.Dir(cfg), "vault-token"), "not-a-real-token\n")
				if err := os.Chmod(filepath.Join(filepath.Dir(cfg), "vault-token"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			key:     "credentials.vault.insecure_http",
			warning: "Vault at http://" + remote + ":8200 is reached without TLS: the token and the credentials cross the network in clear",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			rigFiles(t, dir, rigUser, rigPass)
			startUpstream(t, dir, upstream.Config{}) // for its CA file
			cfg := rigConfig(t, dir, remote+":25", tc.relay, "")
			writeTestFile(t, cfg, strings.Replace(readTestFile(t, cfg), `connect_timeout = "5s"`, `connect_timeout = "1s"`, 1))
			tc.edit(t, cfg)
			name := tc.key[strings.LastIndex(tc.key, ".")+1:]
			line := 0
			for i, l := range strings.Split(readTestFile(t, cfg), "\n") {
				if strings.HasPrefix(l, name+" = ") {
					line = i + 1
				}
			}
			want := []string{"level=WARN", `msg="insecure setting: a secret crosses the network in clear"`,
				"file=" + cfg, fmt.Sprintf("line=%d", line), "key=" + tc.key, tc.warning}
			assertWarned := func(what, log string) {
				t.Helper()
				for _, w := range want {
					if !strings.Contains(log, w) {
						t.Errorf("%s did not warn with %q:\n%s", what, w, log)
					}
				}
			}

			_, _, errs := runCLI(t, "check", "-c", cfg)
			assertWarned("check", errs)

			if strings.Contains(tc.key, "vault") {
				_, _, errs := runCLI(t, "creds", "list", "--vault", "-c", cfg)
				if w := "sealrelay: warning: " + cfg + ":" + fmt.Sprint(line) + ": " + tc.key + ": " + strings.ReplaceAll(tc.warning, `\"`, `"`); !strings.Contains(errs, w) {
					t.Errorf("creds list --vault did not warn with %q:\n%s", w, errs)
				}
			}

			for range 2 { // every start
				p := startProcess(t, cfg)
				p.cmd.Process.Signal(syscall.SIGTERM)
				p.wait(t, 20*time.Second)
				assertWarned("serve", p.stderr.String())
			}
		})
	}
}
