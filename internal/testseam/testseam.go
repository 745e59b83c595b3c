// Package testseam holds the test seams the product reads: hooks that only
// tests set, to make a fault that the real system cannot produce on demand
// (a full disk). Each is nil in the product, where reading it costs one
// atomic load, once. Nothing here is a feature or a setting.
package testseam

import "sync/atomic"

// SpoolBeforeSync, when set, is called before every fsync that a spool
// opened afterwards makes, with the path of the file or directory, and an
// error it returns is taken as that fsync's failure (a disk-full test
// returns syscall.ENOSPC). A spool reads it once, when it is opened. A test
// that sets it must clear it when done and must not run in parallel with
// other tests that open a spool.
var SpoolBeforeSync atomic.Pointer[func(path string) error]
