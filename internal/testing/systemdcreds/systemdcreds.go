package systemdcreds

import (
	"cmp"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// ACLEntry is one entry of a POSIX ACL, as Linux stores it.
type ACLEntry struct {
	Tag, Perm uint16
	ID        uint32
}

// ACL entry tags and permissions (linux/posix_acl_xattr.h).
const (
	UserObj  = 0x01
	User     = 0x02
	GroupObj = 0x04
	Group    = 0x08
	Mask     = 0x10
	Other    = 0x20

	Read    = 0x04
	Execute = 0x01

	undefinedID = 0xffffffff
)

// ServiceACL is the ACL systemd leaves on a credential (perm Read) or on
// the directory (Read|Execute) for a service running as uid:
// fd_add_uid_acl_permission on a 0400 file or a 0500 directory.
func ServiceACL(uid uint32, perm uint16) []ACLEntry {
	return []ACLEntry{
		{UserObj, perm, undefinedID},
		{User, perm, uid},
		{GroupObj, 0, undefinedID},
		{Mask, perm, undefinedID},
		{Other, 0, undefinedID},
	}
}

// Encode returns entries as the system.posix_acl_access attribute holds
// them: version 2, then the entries sorted by tag and id.
func Encode(entries []ACLEntry) []byte {
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b ACLEntry) int {
		return cmp.Or(cmp.Compare(a.Tag, b.Tag), cmp.Compare(a.ID, b.ID))
	})
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, e.Tag)
		b = binary.LittleEndian.AppendUint16(b, e.Perm)
		b = binary.LittleEndian.AppendUint32(b, e.ID)
	}
	return b
}

// Dir makes parent/credentials holding the given credentials as systemd
// does for a service running as uid: the files 0400, the directory 0500,
// and, when uid is not the test's user, an ACL entry for uid on each (as
// on tmpfs). It returns the directory, which is made writable again when
// the test ends so that it can be removed.
func Dir(t testing.TB, parent string, creds map[string][]byte, uid int) string {
	t.Helper()
	dir := filepath.Join(parent, "credentials")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	shared := uid != os.Geteuid()
	for name, data := range creds {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o400); err != nil {
			t.Fatal(err)
		}
		if shared {
			SetACL(t, path, ServiceACL(uint32(uid), Read)...)
		}
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	if shared {
		SetACL(t, dir, ServiceACL(uint32(uid), Read|Execute)...)
	}
	return dir
}

// Tool returns the path of systemd-creds, or skips the test where it is
// not installed.
func Tool(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("systemd-creds")
	if err != nil {
		t.Skip("systemd-creds is not installed (Debian: systemd); the credential code path is tested without it")
	}
	return p
}

// Creds runs systemd-creds with the host key kept in secret (through
// $SYSTEMD_CREDENTIAL_SECRET, so the machine's own
// /var/lib/systemd/credential.secret is neither read nor made), and returns
// its standard output.
func Creds(t testing.TB, secret string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(Tool(t), args...)
	cmd.Env = append(os.Environ(), "SYSTEMD_CREDENTIAL_SECRET="+secret)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("systemd-creds %v: %v\n%s", args, err, stderr)
	}
	return out
}
