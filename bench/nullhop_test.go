package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain makes the test binary the null hop when it is started as one
// (startNullhop runs this program again), or TestCPUOf's check.
func TestMain(m *testing.M) {
	if os.Getenv(nullhopEnv) != "" {
		os.Exit(runNullhop(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	if os.Getenv(cpuCheckEnv) != "" {
		if err := cpuCheck(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestNullhop: the null and durable hops forward every message to the
// upstream with AUTH (measure fails on a message that arrives without,
// or on one that never arrives), their password is not in their command
// line, the durable hop starts TLS and writes every message to its synced
// file, and Stop leaves no process and no file.
func TestNullhop(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: Nullhop, true: Durable}[durable], func(t *testing.T) {
			pass := randomPassword()
			up, err := startRelayHost(pass)
			if err != nil {
				t.Fatal(err)
			}
			defer up.Close()
			e := &env{up: up, user: benchUser, pass: pass, baseDir: t.TempDir()}
			c, err := startNullhop(e, durable)
			if err != nil {
				t.Fatal(err)
			}
			pid := c.PIDs()[0]
			cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(cmdline, []byte(pass)) {
				t.Errorf("the hop's command line holds the password: %q", cmdline)
			}
			wl := Workload{Size: 2 << 10, Sessions: 4, PerConn: 3, Messages: 24}
			r, err := measure(context.Background(), e, c, Nullhop, wl, 1, time.Minute)
			if err != nil {
				t.Fatalf("measure: %v", err)
			}
			if r.Messages != 24 || r.PeakRSS == 0 {
				t.Errorf("result = %d messages, peak RSS %d; want 24 and some memory", r.Messages, r.PeakRSS)
			}
			sessions := up.Sessions()
			if len(sessions) > nullhopConns {
				t.Errorf("the upstream had %d sessions from the hop, more than its %d connections", len(sessions), nullhopConns)
			}
			for _, s := range sessions {
				if s.TLS != durable {
					t.Errorf("upstream session %d: TLS %v, want %v", s.ID, s.TLS, durable)
				}
			}
			if durable {
				fi, err := os.Stat(filepath.Join(c.dir, "messages"))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Size() < int64(wl.Messages*(wl.Size-200)) {
					t.Errorf("the synced file holds %d bytes for %d messages of about %d", fi.Size(), wl.Messages, wl.Size)
				}
			}
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("the hop (pid %d) is still there after Stop: kill 0 = %v", pid, err)
			}
			if ents, _ := os.ReadDir(e.baseDir); len(ents) > 0 {
				t.Errorf("left in the state directory after Stop: %v", ents)
			}
		})
	}
}

// TestNullhopSmoke: asked for beside the plain ceiling, the null and
// durable hops get their rows and their ratio columns.
func TestNullhopSmoke(t *testing.T) {
	smoke(t, []string{"-rounds", "1", "-workloads", "2KB-10x1", "-messages", "20", "-contenders", "plain,nullhop,durablehop", "-idle", "0", "-restart", "0"},
		"| 1 | 2KB-10x1 | nullhop |", "nullhop/plain", "nullhop CPU ms/msg", "| 1 | 2KB-10x1 | durablehop |", "durablehop/plain")
}

// TestNullhopUsage: the null hop refuses to start without its upstream,
// account and password, and says what it needs.
func TestNullhopUsage(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{nil, "pw\n", "-upstream and -user are required"},
		{[]string{"-upstream", "127.0.0.1:1"}, "pw\n", "-upstream and -user are required"},
		{[]string{"-upstream", "127.0.0.1:1", "-user", "u"}, "", "reading the password from stdin"},
	} {
		var stdout, stderr bytes.Buffer
		if code := runNullhop(tc.args, strings.NewReader(tc.stdin), &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q lacks %q", tc.args, stderr.String(), tc.want)
		}
	}
}
