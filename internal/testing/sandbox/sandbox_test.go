package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
)

// The test binary doubles as the probe: run with SANDBOX_PROBE=STATE_DIR it
// tries what the sandbox should allow and refuse, prints one JSON object
// mapping each probe to "ok" or its errno name, and exits.
func TestMain(m *testing.M) {
	if dir := os.Getenv("SANDBOX_PROBE"); dir != "" {
		json.NewEncoder(os.Stdout).Encode(probe(dir)) //nolint:errcheck // the test reads it
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func result(err error) string {
	var errno unix.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno):
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

func errnoOf(_, _ uintptr, e unix.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

func probe(state string) map[string]string {
	r := map[string]string{}
	sock := func(fam int) error {
		fd, err := unix.Socket(fam, unix.SOCK_DGRAM, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
	r["socket AF_INET"] = result(sock(unix.AF_INET))
	r["socket AF_UNIX"] = result(sock(unix.AF_UNIX))
	r["socket AF_NETLINK"] = result(sock(unix.AF_NETLINK))
	mmap := func(prot int) error {
		b, err := unix.Mmap(-1, 0, 4096, prot, unix.MAP_PRIVATE|unix.MAP_ANON)
		if err == nil {
			unix.Munmap(b)
		}
		return err
	}
	r["mmap write+exec"] = result(mmap(unix.PROT_READ | unix.PROT_WRITE | unix.PROT_EXEC))
	r["mmap read+exec"] = result(mmap(unix.PROT_READ | unix.PROT_EXEC))
	if b, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON); err == nil {
		r["mprotect to exec"] = result(unix.Mprotect(b, unix.PROT_READ|unix.PROT_EXEC))
		unix.Munmap(b)
	}
	r["unshare user"] = result(unix.Unshare(unix.CLONE_NEWUSER))
	r["clone3"] = result(errnoOf(unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)))
	r["personality query"] = result(errnoOf(unix.Syscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0)))
	r["personality change"] = result(errnoOf(unix.Syscall(unix.SYS_PERSONALITY, 0x0020000, 0, 0))) // ADDR_NO_RANDOMIZE
	r["setuid"] = result(errnoOf(unix.RawSyscall(unix.SYS_SETUID, uintptr(os.Getuid()), 0, 0)))
	lim := unix.Rlimit{Cur: 1024, Max: 1024}
	r["setrlimit"] = result(errnoOf(unix.RawSyscall(unix.SYS_SETRLIMIT, unix.RLIMIT_NOFILE, uintptr(unsafe.Pointer(&lim)), 0)))
	r["prlimit64 core 0"] = result(unix.Prlimit(0, unix.RLIMIT_CORE, &unix.Rlimit{}, nil))
	r["prctl dumpable 0"] = result(unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0))
	// Calls that would change the machine if they succeeded run only
	// without any capability, where they must fail whatever the filter.
	if st, err := ProcStatus(os.Getpid()); err != nil || st["CapEff"] != "0000000000000000" {
		r["sethostname"], r["clock_settime"], r["mount"] = "not tried: capabilities", "not tried: capabilities", "not tried: capabilities"
	} else {
		r["sethostname"] = result(unix.Sethostname([]byte("sandbox-probe")))
		r["clock_settime"] = result(unix.ClockSettime(unix.CLOCK_REALTIME, &unix.Timespec{}))
		r["mount"] = result(unix.Mount("none", state, "tmpfs", 0, ""))
	}
	r["syslog"] = result(errnoOf(unix.Syscall(unix.SYS_SYSLOG, 10, 0, 0))) // SYSLOG_ACTION_SIZE_BUFFER
	r["exec /bin/true"] = result(exec.Command("/bin/true").Run())

	f := filepath.Join(state, "probe-file")
	r["write state dir"] = result(os.WriteFile(f, []byte("x"), 0o600))
	r["chmod setuid"] = result(unix.Chmod(f, 0o4700))
	r["chmod 0600"] = result(unix.Chmod(f, 0o600))
	r["write /etc"] = result(os.WriteFile("/etc/sealrelay-sandbox-probe", []byte("x"), 0o600))
	// The private /tmp holds only the directories made for the binds.
	ents, _ := os.ReadDir("/tmp")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	r["/tmp entries"] = strings.Join(names, ",")
	_, err := os.Stat("/dev/kmsg")
	r["/dev/kmsg"] = result(err)
	if st, err := ProcStatus(os.Getpid()); err == nil {
		r["NoNewPrivs"], r["CapBnd"], r["Umask"], r["Seccomp"] = st["NoNewPrivs"], st["CapBnd"], st["Umask"], st["Seccomp"]
	}
	var core unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_CORE, &core)
	r["core limit"] = fmt.Sprint(core.Cur, core.Max)
	return r
}

// inSandbox is what the probe must find under the repository's unit.
var inSandbox = map[string]string{
	"socket AF_INET":     "ok",
	"socket AF_UNIX":     "ok",
	"socket AF_NETLINK":  "EAFNOSUPPORT",
	"mmap write+exec":    "EPERM",
	"mmap read+exec":     "ok",
	"mprotect to exec":   "EPERM",
	"unshare user":       "EPERM",
	"clone3":             "ENOSYS",
	"personality query":  "ok",
	"personality change": "EPERM",
	"setuid":             "EPERM",
	"setrlimit":          "EPERM",
	"prlimit64 core 0":   "ok",
	"prctl dumpable 0":   "ok",
	"sethostname":        "EPERM",
	"syslog":             "EPERM",
	"clock_settime":      "EPERM",
	"mount":              "EPERM",
	"exec /bin/true":     "ok",
	"write state dir":    "ok",
	"chmod setuid":       "EPERM",
	"chmod 0600":         "ok",
	"write /etc":         "EROFS",
	"/dev/kmsg":          "ENOENT",
	"NoNewPrivs":         "1",
	"CapBnd":             "0000000000000000",
	"Umask":              "0077",
	"Seccomp":            "2",
	"core limit":         "0 0",
}

// runProbe runs the probe, sandboxed per unit or (unit nil) directly. It
// returns the findings and the directory under /tmp it made for the probe.
func runProbe(t *testing.T, unit *Unit) (map[string]string, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.MkdirTemp("", "sandbox-probe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = 65534, 65534
	}
	state := filepath.Join(base, "state")
	bin := filepath.Join(base, "probe")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := CopyExecutable(self, bin); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{base, state, bin} {
		if uid >= 0 {
			os.Chown(p, uid, gid) //nolint:errcheck // checked by the probe's writes
		}
	}
	os.Chmod(base, 0o755) //nolint:errcheck

	env := []string{"SANDBOX_PROBE=" + state, "PATH=/usr/bin:/bin"}
	var cmd *exec.Cmd
	if unit == nil {
		// Outside the sandbox, but with the same user and no
		// capabilities: the probe must not be able to change the machine.
		args := []string{"--bounding-set=-all", "--inh-caps=-all", "--", bin}
		if uid >= 0 {
			args = append([]string{"--reuid=65534", "--regid=65534", "--clear-groups"}, args...)
		}
		cmd = exec.Command("setpriv", args...)
		cmd.Env = env
	} else {
		c, err := unit.Command(Options{UID: uid, GID: gid, ReadOnly: []string{bin}, ReadWrite: []string{state}, Env: env}, bin)
		if err != nil {
			t.Fatal(err)
		}
		cmd = c.Cmd
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, stderr.String())
	}
	var r map[string]string
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("probe output %q: %v", out, err)
	}
	return r, filepath.Base(base)
}

var repoUnit = filepath.Join(testlib.Root(), "dist", "systemd", "sealrelay.service")

// TestSandboxProbe: under the repository's unit, the probe finds every
// setting the sandbox applies in force (calls denied with the errno
// systemd would give, the file system read-only, no capabilities, the
// umask and core limit set), while what the agent needs still works.
func TestSandboxProbe(t *testing.T) {
	u, err := ParseUnit(repoUnit)
	if err != nil {
		t.Fatal(err)
	}
	got, base := runProbe(t, u)
	for k, want := range inSandbox {
		if got[k] != want {
			t.Errorf("in the sandbox, %s: %q, want %q", k, got[k], want)
		}
	}
	if got["/tmp entries"] != base {
		t.Errorf("in the sandbox, /tmp holds %q, want only %q (the probe's binds)", got["/tmp entries"], base)
	}
}

// TestProbeOutside: the same probe outside the sandbox (same user, no
// capabilities) sees none of it, so TestSandboxProbe's findings come from
// the sandbox.
func TestProbeOutside(t *testing.T) {
	got, base := runProbe(t, nil)
	for _, k := range []string{"socket AF_NETLINK", "mmap write+exec", "mprotect to exec", "personality change", "setrlimit", "chmod setuid"} {
		if got[k] == inSandbox[k] {
			t.Errorf("outside the sandbox, %s: %q, the same as inside", k, got[k])
		}
	}
	if got["Seccomp"] != "0" || got["write /etc"] != "EACCES" || got["/tmp entries"] == base {
		t.Errorf("outside the sandbox: Seccomp %q, write /etc %q, /tmp %q", got["Seccomp"], got["write /etc"], got["/tmp entries"])
	}
}

// TestUnknownDirective: a unit with a directive the sandbox does not know
// is refused, naming it.
func TestUnknownDirective(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.service")
	if err := os.WriteFile(path, []byte("[Service]\nProtectSystem=strict\nSecureBits=keep-caps\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := ParseUnit(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = u.Command(Options{UID: -1}, "/bin/true")
	if err == nil || !strings.Contains(err.Error(), "SecureBits= is not known to the sandbox") {
		t.Fatalf("Command = %v, want the unknown directive named", err)
	}
}

// TestParseUnit: repeated keys keep their order, drop-ins add to the
// [Service] section, other sections are ignored.
func TestParseUnit(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.service"), filepath.Join(dir, "b.conf")
	os.WriteFile(a, []byte("[Unit]\nUser=no\n[Service]\n# c\nSystemCallFilter=@system-service\nSystemCallFilter=~@privileged\n[Install]\nX=1\n"), 0o644) //nolint:errcheck
	os.WriteFile(b, []byte("[Service]\nLoadCredentialEncrypted=identity:/x\n"), 0o644)                                                                   //nolint:errcheck
	u, err := ParseUnit(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(u.Service["SystemCallFilter"], "|"); got != "@system-service|~@privileged" {
		t.Errorf("SystemCallFilter %q", got)
	}
	if _, ok := u.Service["User"]; ok {
		t.Error("a key from [Unit] landed in [Service]")
	}
	if u.Value("LoadCredentialEncrypted") != "identity:/x" {
		t.Errorf("drop-in value %q", u.Value("LoadCredentialEncrypted"))
	}
}
