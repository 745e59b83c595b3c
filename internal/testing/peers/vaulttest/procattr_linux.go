package vaulttest

import "syscall"

// procAttr makes the kernel kill the Vault process if the test binary dies
// without cleaning up (a panic, a timeout), so no server outlives its test.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
