package keys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// The POSIX ACL as Linux stores it in the system.posix_acl_access
// attribute: a little-endian version (2), then entries of a tag, a
// permission and an id.
const (
	aclXattr    = "system.posix_acl_access"
	aclVersion  = 2
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclRead     = 0x04
)

// groupReaders explains who besides the owner may read a file whose mode
// has group bits, or returns "" if no one may: the bits are the mask of an
// ACL that grants read to no group and to no user but root and this one,
// as systemd writes it for a credential.
func groupReaders(f *os.File, fi fs.FileInfo) string {
	gid := -1
	if st, ok := fi.Sys().(*unix.Stat_t); ok {
		gid = int(st.Gid)
	}
	noACL := fmt.Sprintf("its group (gid %d) may read it, and no ACL limits that to the user sealrelay runs as", gid)
	buf := make([]byte, 4+8*64)
	n, err := unix.Fgetxattr(int(f.Fd()), aclXattr, buf)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return noACL
	}
	if err != nil {
		return fmt.Sprintf("its group (gid %d) may read it, and its ACL cannot be read (%v)", gid, err)
	}
	return aclReaders(buf[:n], gid)
}

// aclReaders checks a system.posix_acl_access value: "" if it lets no
// group and no user other than root and this one read the file.
func aclReaders(b []byte, gid int) string {
	if len(b) < 4 || (len(b)-4)%8 != 0 || binary.LittleEndian.Uint32(b) != aclVersion {
		return "its ACL is not in a form sealrelay knows"
	}
	type entry struct {
		tag, perm uint16
		id        uint32
	}
	var entries []entry
	mask := uint16(0o7)
	for p := b[4:]; len(p) >= 8; p = p[8:] {
		e := entry{binary.LittleEndian.Uint16(p), binary.LittleEndian.Uint16(p[2:]), binary.LittleEndian.Uint32(p[4:])}
		if e.tag == aclMask {
			mask = e.perm
		}
		entries = append(entries, e)
	}
	for _, e := range entries {
		if e.perm&mask&aclRead == 0 {
			continue
		}
		switch e.tag {
		case aclGroupObj:
			return fmt.Sprintf("its ACL lets its group (gid %d) read it", gid)
		case aclGroup:
			return fmt.Sprintf("its ACL lets group gid %d read it", e.id)
		case aclUser:
			if !trusted(int(e.id)) {
				return fmt.Sprintf("its ACL lets uid %d read it", e.id)
			}
		}
	}
	return ""
}
