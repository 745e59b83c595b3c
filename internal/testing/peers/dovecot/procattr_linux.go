package dovecot

import "syscall"

// procAttr makes the kernel stop Dovecot's master (which then stops its
// children) if the test binary dies without cleaning up.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
