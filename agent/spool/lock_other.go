//go:build !unix

package spool

import "os"

// lockDir does nothing where flock is not available.
func lockDir(d *os.File) error { return nil }
