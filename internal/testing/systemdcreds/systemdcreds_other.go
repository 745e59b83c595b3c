//go:build !linux

package systemdcreds

import "testing"

// SetACL skips the test: POSIX ACLs are set here only on Linux.
func SetACL(t testing.TB, path string, entries ...ACLEntry) {
	t.Helper()
	t.Skip("POSIX ACLs are set only on Linux")
}
