package main

import (
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/sandbox"
	"github.com/sealrelay/sealrelay/internal/testing/sdnotifytest"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestServeInUnitSandbox runs the built `sealrelay serve` inside the
// sandbox of dist/systemd/sealrelay.service as far as it can be built
// without systemd (internal/testing/sandbox: setpriv, bwrap and a seccomp filter
// from the unit's own settings), laid out as a package installs it: the
// config in a read-only directory, the spool in the only writable one.
// The agent must start, say READY=1 and feed the watchdog, take a message
// (250) and deliver it authenticated, write its spool with private modes,
// and drain on SIGTERM; and from outside, /proc shows the sandbox in force.
// systemd itself is not PID 1 here, so systemd-run cannot be used; the
// directives the sandbox cannot exercise are logged.
func TestServeInUnitSandbox(t *testing.T) {
	u, err := sandbox.ParseUnit(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	notApplied := u.NotApplied()
	for _, k := range slices.Sorted(maps.Keys(notApplied)) {
		t.Logf("not exercised: %s= (%s)", k, notApplied[k])
	}

	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = 65534, 65534 // nobody: the test cannot add a sealrelay user
	}
	base, err := os.MkdirTemp("", "sealrelay-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755) //nolint:errcheck // checked by the agent's start
	etc, state, bin := filepath.Join(base, "etc"), filepath.Join(base, "state"), filepath.Join(base, "sealrelay")
	for dir, mode := range map[string]os.FileMode{etc: 0o750, state: 0o711} { // ConfigurationDirectoryMode, StateDirectoryMode
		if err := os.Mkdir(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := sandbox.CopyExecutable(builtBinary(t), bin); err != nil {
		t.Fatal(err)
	}

	rigFiles(t, etc, rigUser, rigPass)
	up := startUpstream(t, etc, upstream.Config{})
	cfg := rigConfig(t, etc, up.Addr(), relayOpts{}, "")
	writeTestFile(t, cfg, strings.Replace(readTestFile(t, cfg), `data_dir = "data"`, `data_dir = "`+state+`"`, 1))
	if uid >= 0 {
		// root:sealrelay 0750 and 0640; the identity the service user's own.
		for _, p := range []string{etc, cfg, filepath.Join(etc, "credentials.age")} {
			chown(t, p, 0, gid)
		}
		chown(t, state, uid, gid)
		chown(t, filepath.Join(etc, "identity.txt"), uid, gid)
	}
	for _, p := range []string{cfg, filepath.Join(etc, "credentials.age")} {
		if err := os.Chmod(p, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// The maildrop, as the unit's ExecStartPre= makes it (as root): the
	// agent may not set its set-gid bit inside the sandbox.
	maildropDir := filepath.Join(state, "maildrop")
	if out, err := exec.Command("install", "-d", "-m", "3733", "-o", strconv.Itoa(max(uid, 0)), "-g", strconv.Itoa(max(gid, 0)), maildropDir).CombinedOutput(); err != nil {
		t.Fatalf("install -d %s: %v %s", maildropDir, err, out)
	}

	sock := sdnotifytest.Listen(t)
	// systemd's notify socket is writable by all; so is this one.
	os.Chmod(filepath.Dir(sock.Path), 0o755) //nolint:errcheck
	os.Chmod(sock.Path, 0o777)               //nolint:errcheck

	c, err := u.Command(sandbox.Options{
		UID: uid, GID: gid,
		ReadOnly:  []string{bin, etc, filepath.Dir(sock.Path)},
		ReadWrite: []string{state},
		Env:       []string{"PATH=/usr/bin:/bin", "NOTIFY_SOCKET=" + sock.Path, "WATCHDOG_USEC=2000000"},
	}, bin, "serve", "-c", cfg)
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	c.Stderr = stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { c.Wait(); close(exited) }() //nolint:errcheck // the exit code is read below
	t.Cleanup(func() {
		c.Process.Kill() //nolint:errcheck // it may have exited
		<-exited
		if t.Failed() {
			t.Logf("sandboxed agent's log:\n%s", stderr.String())
		}
	})
	pid, err := c.ChildPID(20 * time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}

	var ready sdnotifytest.Message
	var pos int
	for i := 0; ; i++ {
		var ok bool
		if ready, pos, ok = sock.WaitFor("READY=1", 0, time.Second); ok {
			break
		}
		select {
		case <-exited:
			t.Fatalf("the sandboxed agent exited before READY=1: %v\n%s", c.ProcessState, stderr.String())
		default:
		}
		if i == 30 {
			t.Fatalf("no READY=1 from the sandboxed agent within 30s:\n%s", stderr.String())
		}
	}
	m := statusAddr.FindStringSubmatch(ready.Value("STATUS"))
	if m == nil {
		t.Fatalf("READY=1 status %q", ready.Value("STATUS"))
	}
	if _, _, ok := sock.WaitFor("WATCHDOG=1", pos, 10*time.Second); !ok {
		t.Fatal("no watchdog ping from the sandboxed agent")
	}

	if err := send(m[1], "app@client.test", "user@example.net", "<sandbox@rig>"); err != nil {
		t.Fatalf("the sandboxed agent did not take a message: %v", err)
	}
	if err := up.WaitMessages(1, 30*time.Second); err != nil {
		t.Fatalf("the sandboxed agent did not deliver: %v", err)
	}
	for _, s := range up.Sessions() {
		if s.MailIssued() && !s.Authenticated() {
			t.Errorf("session %d sent MAIL without AUTH", s.ID)
		}
	}

	st, err := sandbox.ProcStatus(pid)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"NoNewPrivs": "1", "Seccomp": "2", "Umask": "0077",
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapBnd": "0000000000000000", "CapAmb": "0000000000000000",
	}
	if uid >= 0 {
		want["Uid"] = "65534\t65534\t65534\t65534"
	}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("/proc/%d/status %s: %q, want %q", pid, k, st[k], v)
		}
	}
	if limits := readTestFile(t, "/proc/"+strconv.Itoa(pid)+"/limits"); !hasCoreLimitZero(limits) {
		t.Errorf("core file size is not limited to 0:\n%s", limits)
	}
	checkPrivateModes(t, state, uid)

	n := len(sock.Messages())
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := sock.WaitFor("STOPPING=1", n, 10*time.Second); !ok {
		t.Error("no STOPPING=1 after SIGTERM")
	}
	select {
	case <-exited:
		if code := c.ProcessState.ExitCode(); code != 0 {
			t.Errorf("exit %d after SIGTERM, want 0", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the sandboxed agent did not exit after SIGTERM")
	}
}

// hasCoreLimitZero reads "Max core file size  0  0  bytes" in /proc/PID/limits.
func hasCoreLimitZero(limits string) bool {
	for _, line := range strings.Split(limits, "\n") {
		if strings.HasPrefix(line, "Max core file size") {
			f := strings.Fields(strings.TrimPrefix(line, "Max core file size"))
			return len(f) >= 2 && f[0] == "0" && f[1] == "0"
		}
	}
	return false
}

// checkPrivateModes: everything the agent wrote under dir is its own, with
// no access for group or others; dir itself is only searchable by them,
// and the maildrop in it is the one place they may write (mode 3733).
func checkPrivateModes(t *testing.T, dir string, uid int) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		open := fs.FileMode(0)
		switch p {
		case dir:
			open = 0o011
		case filepath.Join(dir, "maildrop"):
			if info.Mode()&(fs.ModeSetgid|fs.ModeSticky|fs.ModePerm) != fs.ModeSetgid|fs.ModeSticky|0o733 {
				t.Errorf("%s: mode %v, want 3733", p, info.Mode())
			}
			open = 0o033
		}
		if info.Mode().Perm()&0o077&^open != 0 {
			t.Errorf("%s: mode %v, open to group or others", p, info.Mode())
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && uid >= 0 && int(st.Uid) != uid {
			t.Errorf("%s: owned by %d, want %d", p, st.Uid, uid)
		}
		files++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Errorf("only %d entries under %s: the spool was not written there", files, dir)
	}
}

func chown(t *testing.T, path string, uid, gid int) {
	t.Helper()
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}
