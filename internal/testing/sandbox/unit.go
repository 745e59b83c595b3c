// Package sandbox runs a command for a test inside the sandbox that a
// systemd unit's [Service] section describes, as far as that can be done
// without systemd as PID 1: setpriv for the user and the capability
// bounding set, a shell for UMask= and LimitCORE=, bubblewrap (bwrap) for
// the namespaces and the read-only file system, and a seccomp filter this
// package builds from the unit's SystemCallFilter=, SystemCallErrorNumber=,
// SystemCallArchitectures=, RestrictAddressFamilies=,
// MemoryDenyWriteExecute=, RestrictNamespaces=, LockPersonality= and
// RestrictSUIDSGID=, with the syscall groups systemd-analyze lists.
//
// Every directive of the unit's [Service] section must be known here:
// either applied (Applied says how) or named as not exercisable without
// systemd (NotApplied says why). An unknown directive is an error, so a
// setting added to the unit cannot go untested unnoticed.
//
// Linux on amd64 only (the seccomp filter needs the syscall numbers of
// asm/unistd_64.h).
package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Unit is the [Service] section of a unit file: each directive with its
// values, in the order given.
type Unit struct {
	Path    string
	Service map[string][]string
	order   []string
}

// ParseUnit reads the [Service] sections of the unit file and of any
// drop-ins given after it, as systemd merges them.
func ParseUnit(paths ...string) (*Unit, error) {
	u := &Unit{Path: paths[0], Service: map[string][]string{}}
	for _, p := range paths {
		if err := u.parse(p); err != nil {
			return nil, err
		}
	}
	return u, nil
}

func (u *Unit) parse(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("unit: %w", err)
	}
	defer f.Close()
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			section = strings.Trim(line, "[]")
			continue
		case section != "Service":
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("%s:%d: not KEY=VALUE: %q", path, n, line)
		}
		key = strings.TrimSpace(key)
		if _, seen := u.Service[key]; !seen {
			u.order = append(u.order, key)
		}
		u.Service[key] = append(u.Service[key], strings.TrimSpace(val))
	}
	return sc.Err()
}

// Value returns the last value of key ("" if unset).
func (u *Unit) Value(key string) string {
	v := u.Service[key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// Yes reports whether key is set to a true boolean.
func (u *Unit) Yes(key string) bool {
	switch strings.ToLower(u.Value(key)) {
	case "yes", "true", "on", "1":
		return true
	}
	return false
}

// How each directive the package knows is handled. A directive in applied
// is exercised (the text says by what); one in notApplied cannot be
// without systemd (the text says why).
var (
	applied = map[string]string{
		"User":                       "setpriv --reuid (the test's user: nobody when run as root)",
		"Group":                      "setpriv --regid --clear-groups",
		"UMask":                      "umask in the shell before bwrap",
		"LimitCORE":                  "ulimit -c in the shell before bwrap",
		"StateDirectory":             "the test's state directory, bound read-write",
		"StateDirectoryMode":         "the state directory is made with this mode",
		"ConfigurationDirectory":     "the test's config directory, read-only like the rest",
		"ConfigurationDirectoryMode": "the config directory is made with this mode",
		"NoNewPrivileges":            "bwrap sets no_new_privs",
		"CapabilityBoundingSet":      "setpriv --bounding-set=-all --inh-caps=-all (empty set only)",
		"AmbientCapabilities":        "none are raised (empty only)",
		"PrivateUsers":               "bwrap --unshare-user (maps only the service user; systemd also maps root)",
		"ProtectSystem":              "bwrap --ro-bind / / (strict: all read-only but the state directory)",
		"ProtectHome":                "bwrap --tmpfs over /home, /root and /run/user",
		"PrivateTmp":                 "bwrap --tmpfs /tmp and /var/tmp",
		"PrivateDevices":             "bwrap --dev /dev (null, zero, full, random, urandom, tty, pts, shm only)",
		"ProtectProc":                "bwrap --unshare-pid --proc /proc (only its own processes are visible)",
		"ProtectControlGroups":       "/sys/fs/cgroup read-only with the rest",
		"ProtectHostname":            "bwrap --unshare-uts; sethostname is in @privileged, denied",
		"PrivateIPC":                 "bwrap --unshare-ipc",
		"PrivateMounts":              "bwrap's mount namespace",
		"ProtectClock":               "the seccomp filter denies @clock",
		"ProtectKernelModules":       "the seccomp filter denies @module",
		"ProtectKernelLogs":          "the seccomp filter denies syslog; no /dev/kmsg in the private /dev",
		"RestrictAddressFamilies":    "the seccomp filter: socket() with another family gets EAFNOSUPPORT",
		"LockPersonality":            "the seccomp filter: personality() may only query or keep PER_LINUX",
		"MemoryDenyWriteExecute":     "the seccomp filter: no mmap with PROT_WRITE|PROT_EXEC, no mprotect to PROT_EXEC, no shmat SHM_EXEC",
		"RestrictNamespaces":         "the seccomp filter: unshare, setns and clone with CLONE_NEW* denied, clone3 ENOSYS",
		"RestrictSUIDSGID":           "the seccomp filter: chmod and open(O_CREAT) with S_ISUID or S_ISGID denied",
		"RestrictRealtime":           "sched_setscheduler and sched_setattr are in @resources, which the filter removes",
		"SystemCallArchitectures":    "the seccomp filter kills any call made with another ABI (x32, i386)",
		"SystemCallFilter":           "the seccomp filter's allow list, groups expanded by systemd-analyze syscall-filter",
		"SystemCallErrorNumber":      "the seccomp filter's answer to a call not allowed",
	}
	notApplied = map[string]string{
		"Type":                    "service manager protocol: TestServiceNotify plays systemd's side",
		"NotifyAccess":            "service manager: which PIDs systemd listens to",
		"WatchdogSec":             "service manager: TestServiceNotify checks the pings",
		"ExecStart":               "the test runs the same command line",
		"ExecStartPre":            "runs as root outside the sandbox (+): the test makes the maildrop as it does",
		"ExecReload":              "service manager: TestServiceNotify sends SIGHUP itself",
		"Restart":                 "service manager: needs systemd as PID 1",
		"RestartSec":              "service manager: needs systemd as PID 1",
		"TimeoutStopSec":          "service manager: needs systemd as PID 1",
		"ProcSubset":              "bwrap cannot mount /proc with subset=pid",
		"ProtectKernelTunables":   "/sys is read-only, but /proc/sys in the private procfs is only guarded by permissions",
		"DevicePolicy":            "a device cgroup (BPF) needs systemd; the private /dev holds pseudo-devices only",
		"KeyringMode":             "the session keyring is set up by systemd",
		"RemoveIPC":               "acts when the service stops, in systemd",
		"LoadCredentialEncrypted": "decryption with the host key needs systemd-creds and systemd as PID 1",
	}
)

// Applied returns, for each directive of the unit the sandbox applies,
// how it does.
func (u *Unit) Applied() map[string]string { return u.pick(applied) }

// NotApplied returns, for each directive of the unit the sandbox cannot
// exercise, why.
func (u *Unit) NotApplied() map[string]string { return u.pick(notApplied) }

func (u *Unit) pick(from map[string]string) map[string]string {
	out := map[string]string{}
	for _, k := range u.order {
		if why, ok := from[k]; ok {
			out[k] = why
		}
	}
	return out
}

// check refuses a unit with a directive the package does not know, or a
// value it cannot apply as written.
func (u *Unit) check() error {
	for _, k := range u.order {
		if _, ok := applied[k]; ok {
			continue
		}
		if _, ok := notApplied[k]; !ok {
			return fmt.Errorf("%s: [Service] %s= is not known to the sandbox: say in internal/testing/sandbox how it is applied or why it cannot be", u.Path, k)
		}
	}
	for _, k := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		if v, ok := u.Service[k]; ok && u.Value(k) != "" {
			return fmt.Errorf("%s: %s=%s: the sandbox applies only an empty set", u.Path, k, v)
		}
	}
	if v := u.Value("ProtectSystem"); v != "strict" {
		return fmt.Errorf("%s: ProtectSystem=%s: the sandbox applies only strict", u.Path, v)
	}
	return nil
}
