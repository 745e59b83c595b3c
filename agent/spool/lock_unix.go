//go:build unix

package spool

import (
	"errors"
	"os"
	"syscall"
)

// lockDir takes an exclusive, non-blocking lock on the open spool
// directory, so that two agents never share a spool. The kernel drops it
// when the process dies.
func lockDir(d *os.File) error {
	err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return &LockedError{Dir: d.Name()}
	}
	return err
}
