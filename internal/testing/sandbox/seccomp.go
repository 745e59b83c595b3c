package sandbox

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/bpf"
)

// The seccomp filter: what systemd installs for the unit's system call
// settings, as one classic BPF program in the form bwrap --seccomp reads
// (an array of struct sock_filter).

const (
	retKillProcess = 0x80000000
	retErrno       = 0x00050000
	retAllow       = 0x7fff0000

	auditArchX86_64 = 0xc000003e
	x32SyscallBit   = 0x40000000

	offNr   = 0
	offArch = 4
)

// argLow is the offset of the low 32 bits of argument i in seccomp_data.
func argLow(i int) uint32 { return uint32(16 + 8*i) }

// Filter is a built seccomp program and the system calls it allows.
type Filter struct {
	Allowed map[string]bool
	Prog    []byte
}

// always are allowed by every systemd allow list (so that a process can
// exec and exit whatever the list says).
var always = []string{"@default", "execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}

// BuildFilter builds the filter for the unit.
func (u *Unit) BuildFilter() (*Filter, error) {
	if runtime.GOARCH != "amd64" {
		return nil, fmt.Errorf("sandbox: the seccomp filter is built for amd64 only, not %s", runtime.GOARCH)
	}
	nrs, err := syscallNumbers("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
	if err != nil {
		return nil, err
	}
	groups, err := syscallGroups()
	if err != nil {
		return nil, err
	}
	allowed, err := allowList(u.Service["SystemCallFilter"], groups)
	if err != nil {
		return nil, err
	}
	deny := func(names ...string) {
		for _, n := range names {
			for s := range expand(n, groups) {
				delete(allowed, s)
			}
		}
	}
	if u.Yes("ProtectClock") {
		deny("@clock")
	}
	if u.Yes("ProtectKernelModules") {
		deny("@module")
	}
	if u.Yes("ProtectKernelLogs") {
		deny("syslog")
	}
	if u.Yes("ProtectHostname") {
		deny("sethostname", "setdomainname")
	}
	if u.Yes("RestrictNamespaces") {
		deny("unshare", "setns")
	}

	errno := uint32(1) // EPERM
	if v := u.Value("SystemCallErrorNumber"); v != "" && v != "EPERM" {
		return nil, fmt.Errorf("sandbox: SystemCallErrorNumber=%s: only EPERM is supported", v)
	}
	denied := retErrno | errno

	// Calls allowed only with some arguments: each block ends in returns.
	blocks := map[string][]bpf.Instruction{}
	if fams := u.Service["RestrictAddressFamilies"]; len(fams) > 0 {
		blocks["socket"], err = familyBlock(strings.Join(fams, " "))
		if err != nil {
			return nil, err
		}
	}
	if u.Yes("MemoryDenyWriteExecute") {
		blocks["mmap"] = []bpf.Instruction{
			bpf.LoadAbsolute{Off: argLow(2), Size: 4},
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x6}, // PROT_WRITE|PROT_EXEC
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x6, SkipFalse: 1},
			bpf.RetConstant{Val: denied},
			bpf.RetConstant{Val: retAllow},
		}
		blocks["mprotect"] = maskBlock(2, 0x4, denied) // PROT_EXEC
		blocks["pkey_mprotect"] = maskBlock(2, 0x4, denied)
		blocks["shmat"] = maskBlock(2, 0o100000, denied) // SHM_EXEC
	}
	if u.Yes("RestrictNamespaces") {
		const cloneNew = 0x00000080 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
		blocks["clone"] = maskBlock(0, cloneNew, denied)
		// Its flags are in memory the filter cannot read; systemd answers
		// ENOSYS so that callers fall back to clone.
		blocks["clone3"] = []bpf.Instruction{bpf.RetConstant{Val: retErrno | 38}}
		allowed["clone3"] = true
	}
	if u.Yes("LockPersonality") {
		blocks["personality"] = []bpf.Instruction{
			bpf.LoadAbsolute{Off: argLow(0), Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipFalse: 1}, // PER_LINUX
			bpf.RetConstant{Val: retAllow},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0xffffffff, SkipFalse: 1}, // query
			bpf.RetConstant{Val: retAllow},
			bpf.RetConstant{Val: denied},
		}
	}
	if u.Yes("RestrictSUIDSGID") {
		const sugid = 0o6000
		blocks["chmod"] = maskBlock(1, sugid, denied)
		blocks["fchmod"] = maskBlock(1, sugid, denied)
		blocks["fchmodat"] = maskBlock(2, sugid, denied)
		blocks["fchmodat2"] = maskBlock(2, sugid, denied)
		blocks["creat"] = maskBlock(1, sugid, denied)
		blocks["open"] = createBlock(1, 2, sugid, denied)
		blocks["openat"] = createBlock(2, 3, sugid, denied)
	}

	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArchX86_64, SkipTrue: 1},
		bpf.RetConstant{Val: retKillProcess},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32SyscallBit, SkipFalse: 1},
		bpf.RetConstant{Val: retKillProcess},
	}
	names := make([]string, 0, len(allowed))
	for n := range allowed {
		if _, ok := nrs[n]; ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if b, ok := blocks[n]; ok {
			prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: nrs[n], SkipFalse: uint8(len(b))})
			prog = append(prog, b...)
		}
	}
	for _, n := range names {
		if _, ok := blocks[n]; !ok {
			prog = append(prog,
				bpf.JumpIf{Cond: bpf.JumpEqual, Val: nrs[n], SkipFalse: 1},
				bpf.RetConstant{Val: retAllow})
		}
	}
	prog = append(prog, bpf.RetConstant{Val: denied})

	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("sandbox: assembling the seccomp filter: %w", err)
	}
	if len(raw) > 4096 {
		return nil, fmt.Errorf("sandbox: the seccomp filter has %d instructions, more than the kernel's 4096", len(raw))
	}
	var buf bytes.Buffer
	for _, r := range raw {
		binary.Write(&buf, binary.LittleEndian, r.Op) //nolint:errcheck // a bytes.Buffer
		binary.Write(&buf, binary.LittleEndian, r.Jt) //nolint:errcheck
		binary.Write(&buf, binary.LittleEndian, r.Jf) //nolint:errcheck
		binary.Write(&buf, binary.LittleEndian, r.K)  //nolint:errcheck
	}
	return &Filter{Allowed: allowed, Prog: buf.Bytes()}, nil
}

// maskBlock denies the call if argument arg has any bit of mask set.
func maskBlock(arg int, mask, denied uint32) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: argLow(arg), Size: 4},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: mask, SkipFalse: 1},
		bpf.RetConstant{Val: denied},
		bpf.RetConstant{Val: retAllow},
	}
}

// createBlock denies an open that creates (O_CREAT in argument flags) with
// a bit of mask in argument mode.
func createBlock(flags, mode int, mask, denied uint32) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: argLow(flags), Size: 4},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0o100, SkipFalse: 3}, // O_CREAT
		bpf.LoadAbsolute{Off: argLow(mode), Size: 4},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: mask, SkipFalse: 1},
		bpf.RetConstant{Val: denied},
		bpf.RetConstant{Val: retAllow},
	}
}

// familyBlock allows socket() for the address families listed (an allow
// list; a "~" list is not supported) and answers EAFNOSUPPORT otherwise.
func familyBlock(list string) ([]bpf.Instruction, error) {
	known := map[string]uint32{"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}
	var b []bpf.Instruction
	b = append(b, bpf.LoadAbsolute{Off: argLow(0), Size: 4})
	for _, f := range strings.Fields(list) {
		v, ok := known[f]
		if !ok {
			return nil, fmt.Errorf("sandbox: RestrictAddressFamilies: %q is not supported", f)
		}
		b = append(b, bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipFalse: 1}, bpf.RetConstant{Val: retAllow})
	}
	return append(b, bpf.RetConstant{Val: retErrno | 97}), nil // EAFNOSUPPORT
}

// allowList applies the SystemCallFilter= lines in order as systemd does:
// the first decides that it is an allow list, later ones add (plain) or
// remove (~) calls.
func allowList(lines []string, groups map[string][]string) (map[string]bool, error) {
	if len(lines) == 0 || strings.HasPrefix(lines[0], "~") {
		return nil, fmt.Errorf("sandbox: only an allow list in SystemCallFilter= is supported")
	}
	allowed := map[string]bool{}
	for _, n := range always {
		for s := range expand(n, groups) {
			allowed[s] = true
		}
	}
	for _, line := range lines {
		remove := strings.HasPrefix(line, "~")
		for _, n := range strings.Fields(strings.TrimPrefix(line, "~")) {
			if strings.HasPrefix(n, "@") {
				if _, ok := groups[n]; !ok {
					return nil, fmt.Errorf("sandbox: SystemCallFilter: unknown group %s", n)
				}
			}
			for s := range expand(n, groups) {
				if remove {
					delete(allowed, s)
				} else {
					allowed[s] = true
				}
			}
		}
	}
	return allowed, nil
}

// expand returns the system calls a name stands for (a group, nested
// groups included, or one call).
func expand(name string, groups map[string][]string) map[string]bool {
	out := map[string]bool{}
	var walk func(string)
	walk = func(n string) {
		if !strings.HasPrefix(n, "@") {
			out[n] = true
			return
		}
		for _, m := range groups[n] {
			walk(m)
		}
	}
	walk(name)
	return out
}

// syscallGroups asks systemd-analyze for its syscall groups.
func syscallGroups() (map[string][]string, error) {
	out, err := exec.Command("systemd-analyze", "syscall-filter").Output()
	if err != nil {
		return nil, fmt.Errorf("sandbox: systemd-analyze syscall-filter: %w", err)
	}
	groups := map[string][]string{}
	cur := ""
	for _, line := range strings.Split(string(out), "\n") {
		t := strings.TrimSpace(line)
		switch {
		case t == "" || strings.HasPrefix(t, "#"):
		case !strings.HasPrefix(line, " ") && strings.HasPrefix(t, "@"):
			cur = t
			groups[cur] = nil
		case cur != "":
			groups[cur] = append(groups[cur], strings.Fields(t)[0])
		}
	}
	if len(groups["@system-service"]) == 0 {
		return nil, fmt.Errorf("sandbox: systemd-analyze syscall-filter listed no @system-service group")
	}
	return groups, nil
}

var defineNR = regexp.MustCompile(`^#define __NR_(\w+)\s+(\d+)`)

// syscallNumbers reads the syscall numbers from the kernel's header.
func syscallNumbers(path string) (map[string]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sandbox: syscall numbers: %w (linux-libc-dev installs it)", err)
	}
	defer f.Close()
	nrs := map[string]uint32{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := defineNR.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.ParseUint(m[2], 10, 32)
			nrs[m[1]] = uint32(n)
		}
	}
	if len(nrs) < 300 {
		return nil, fmt.Errorf("sandbox: %s: only %d syscall numbers", path, len(nrs))
	}
	return nrs, sc.Err()
}
