package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// A spool directory is trusted only if it is the agent's alone: owned by
// the user the process runs as, and writable by nobody else. Whoever else
// can write a directory of the spool can plant a symlink or swap a file
// under the agent, which may run as root; whoever owns it can change its
// mode at any time.

// DirError reports a directory the spool refuses to use because it is not
// the agent's alone.
type DirError struct {
	What  string // "spool directory", "data directory"...
	Path  string
	Owner int         // uid that owns it
	User  int         // uid the process runs as
	Mode  fs.FileMode // its permission bits
}

func (e *DirError) Error() string {
	if e.Owner != e.User {
		return fmt.Sprintf("%s %s belongs to %s, not to %s that sealrelay runs as; refusing to use it",
			e.What, e.Path, userName(e.Owner), userName(e.User))
	}
	return fmt.Sprintf("%s %s is writable by group or others (mode %04o); refusing to use it", e.What, e.Path, e.Mode.Perm())
}

// Hint tells the operator how to fix it.
func (e *DirError) Hint() string {
	if e.Owner != e.User {
		return fmt.Sprintf("the spool must belong to the user sealrelay runs as: run sealrelay as %s (sudo -u %s sealrelay ...), or, if the directory is meant for %s, chown -R %s %s",
			userLogin(e.Owner), userLogin(e.Owner), userLogin(e.User), userLogin(e.User), e.Path)
	}
	return fmt.Sprintf("make it writable by its owner only: chmod go-w %s", e.Path)
}

// userName is "uid N (login)", or "uid N" if N has no name.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("uid %d (%s)", uid, u.Username)
	}
	return fmt.Sprintf("uid %d", uid)
}

// userLogin is the login of uid, or the number if it has none.
func userLogin(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// ownerOf is the uid that owns fi.
func ownerOf(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return os.Geteuid()
}

// checkDirInfo checks fi, the directory at path, and returns a *DirError
// if it is not the process's alone.
func checkDirInfo(fi fs.FileInfo, what, path string) error {
	if !fi.IsDir() {
		return fmt.Errorf("%s %s is not a directory", what, path)
	}
	e := &DirError{What: what, Path: path, Owner: ownerOf(fi), User: os.Geteuid(), Mode: fi.Mode()}
	if e.Owner != e.User || e.Mode.Perm()&0o022 != 0 {
		return e
	}
	return nil
}

// checkDir checks the directory at path, following a symlink (an
// administrator may point the data directory elsewhere).
func checkDir(what, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return checkDirInfo(fi, what, path)
}

// ensureSubdir creates the spool subdirectory path (mode 0700) if it is
// missing and checks it: it must be a real directory, not a symlink, and
// the agent's alone. It reports whether it created it.
func ensureSubdir(what, path string) (created bool, err error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return false, fmt.Errorf("creating %s: %w", what, err)
		}
		created = true
		fi, err = os.Lstat(path)
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return false, fmt.Errorf("%s %s is a symlink; refusing to follow it", what, path)
	}
	return created, checkDirInfo(fi, what, path)
}
