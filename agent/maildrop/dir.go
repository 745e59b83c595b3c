package maildrop

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Mode is the maildrop's mode: set-gid (files get the agent's group),
// sticky (only a file's owner and the agent may remove or rename it),
// writable and searchable by all, listable by the agent's group only.
const Mode = fs.ModeSetgid | fs.ModeSticky | 0o733

// DirError is a maildrop the agent refuses to use: it would let local
// users read, replace or remove each other's mail.
type DirError struct {
	Path    string
	Problem string
	Fix     string
}

func (e *DirError) Error() string {
	return fmt.Sprintf("maildrop %s %s; refusing to use it", e.Path, e.Problem)
}

// Hint is the fix.
func (e *DirError) Hint() string { return e.Fix }

// CreateError is a maildrop the agent could not make with its mode: under
// systemd's RestrictSUIDSGID= a service may not set the set-gid bit. It is
// left absent, so that sendmail says there is no maildrop.
type CreateError struct {
	Dir string
	Err error
}

func (e *CreateError) Error() string {
	return fmt.Sprintf("cannot create maildrop %s with mode 3733: %v", e.Dir, e.Err)
}

func (e *CreateError) Unwrap() error { return e.Err }

// Hint says how to make it.
func (e *CreateError) Hint() string {
	return fmt.Sprintf("make it as root, then restart the agent: install -d -m 3733 -o %d -g %d %s (dist/systemd's unit does so before the agent starts: its RestrictSUIDSGID= keeps the agent from setting the set-gid bit)",
		os.Geteuid(), os.Getegid(), e.Dir)
}

// chmodSeam is a test seam, not a feature: os.Chmod, which a test replaces
// to see a sandbox refuse the set-gid bit (systemd's RestrictSUIDSGID=).
var chmodSeam = os.Chmod

// Prepared says what Prepare found.
type Prepared struct {
	Created bool
	// Reachable: others may search every directory above the maildrop, so
	// local users other than root and the agent's user can submit.
	Reachable bool
}

// Prepare makes sure the maildrop dir exists with Mode, owned by the
// process's user and group, and checks it. It creates it if missing (its
// parent, data_dir, must exist); if it cannot give it Mode, it removes it
// again and returns a *CreateError. A maildrop of another owner or group,
// without the set-gid bit, listable by others, or writable by group or
// others without the sticky bit is refused with a *DirError.
func Prepare(dir string) (Prepared, error) {
	var p Prepared
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return p, fmt.Errorf("creating maildrop: %w", err)
		}
		// Chmod, not the mode of Mkdir: the umask would narrow it, and
		// Mkdir does not set the set-gid and sticky bits everywhere.
		if err := chmodSeam(dir, Mode); err != nil {
			os.Remove(dir)
			return p, &CreateError{Dir: dir, Err: err}
		}
		p.Created = true
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return p, fmt.Errorf("maildrop: %w", err)
	}
	if err := checkDir(dir, fi, os.Geteuid(), os.Getegid()); err != nil {
		return p, err
	}
	p.Reachable = reachable(filepath.Dir(dir))
	return p, nil
}

// checkDir checks the maildrop's info against the agent's uid and gid.
func checkDir(dir string, fi fs.FileInfo, uid, gid int) error {
	fix := fmt.Sprintf("chown %d:%d %s && chmod 3733 %s (or remove it: the agent makes it anew)", uid, gid, dir, dir)
	bad := func(problem string) error { return &DirError{Path: dir, Problem: problem, Fix: fix} }
	if fi.Mode()&fs.ModeSymlink != 0 {
		return bad("is a symlink")
	}
	if !fi.IsDir() {
		return bad("is not a directory")
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return bad("has no owner to check")
	}
	m := fi.Mode()
	switch {
	case int(st.Uid) != uid:
		return bad(fmt.Sprintf("belongs to uid %d, not to uid %d that sealrelay runs as", st.Uid, uid))
	case int(st.Gid) != gid:
		return bad(fmt.Sprintf("has group %d, not the agent's group %d: members of its group could read the mail in it", st.Gid, gid))
	case m&fs.ModeSetgid == 0:
		return bad(fmt.Sprintf("lacks the set-gid bit (mode %s): files in it would keep their writers' groups, unreadable by the agent or readable by others", modeString(m)))
	case m.Perm()&0o004 != 0:
		return bad(fmt.Sprintf("can be listed by others (mode %s): users could find each other's files", modeString(m)))
	case m.Perm()&0o022 != 0 && m&fs.ModeSticky == 0:
		return bad(fmt.Sprintf("is writable by group or others without the sticky bit (mode %s): users could remove or replace each other's files", modeString(m)))
	}
	return nil
}

// modeString writes the mode as chmod takes it: 3733.
func modeString(m fs.FileMode) string {
	n := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		n |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		n |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		n |= 0o1000
	}
	return fmt.Sprintf("%04o", n)
}

// reachable reports whether others may search dir and every directory
// above it.
func reachable(dir string) bool {
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}
