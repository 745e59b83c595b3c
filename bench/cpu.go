package main

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// CPU time, to say what each message cost apart from how fast it went:
// on a shared machine the rates move with the load, the CPU a message
// takes much less.

// clockTick is the unit of the times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture).
const clockTick = 10 * time.Millisecond

// cpuOf returns the CPU time (user and system) pids have used, with that
// of their children that exited and were waited for (Postfix's master
// reaps the processes it starts, so a process that ends during a run
// still counts). A pid that is gone counts as nothing.
func cpuOf(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// The fields after the command name (which may hold spaces, in
		// parentheses): state is field 3, utime..cstime are 14..17.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 15 {
			continue
		}
		for _, v := range f[11:15] {
			n, _ := strconv.ParseInt(string(v), 10, 64)
			total += time.Duration(n) * clockTick
		}
	}
	return total
}

// selfCPU returns the CPU time this process (the load generator and the
// upstream) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
