package systemdcreds

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// SetACL sets path's access ACL, or skips the test where the file system
// has none.
func SetACL(t testing.TB, path string, entries ...ACLEntry) {
	t.Helper()
	if err := unix.Setxattr(path, "system.posix_acl_access", Encode(entries), 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			t.Skipf("the file system of %s has no POSIX ACLs", path)
		}
		t.Fatal(err)
	}
}
