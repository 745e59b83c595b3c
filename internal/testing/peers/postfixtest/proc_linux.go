package postfixtest

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// sessionMembers returns the live processes whose session ID is sid, from
// /proc. Zombies (already exited, waiting to be reaped) are left out.
func sessionMembers(sid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readStat(pid)
		if ok && st.session == sid && st.state != "Z" && st.state != "X" {
			out = append(out, pid)
		}
	}
	return out
}

// procStat is the part of /proc/PID/stat this package reads.
type procStat struct {
	state   string
	session int
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// pid (comm) state ppid pgrp session ...; comm may hold spaces and ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 4 {
		return procStat{}, false
	}
	sid, err := strconv.Atoi(f[3])
	if err != nil {
		return procStat{}, false
	}
	return procStat{state: f[0], session: sid}, true
}

// waitGone waits until no process of session sid is left, for up to d.
func waitGone(sid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for len(sessionMembers(sid)) > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
