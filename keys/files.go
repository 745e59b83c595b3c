package keys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Files whose content sealrelay trusts (an identity, a Vault token, the
// credential file, the recipient list) must be out of reach of every user
// but the one sealrelay runs as and root: a user who can change one can
// take the secrets (a key of theirs on the recipient list, a relay account
// of theirs in the credential file) or replace them. OpenSecret checks the
// file's mode, its owner, and every directory on its path, as ssh does
// for private keys and authorized_keys.

// Private is the mode mask OpenSecret refuses for files only their owner
// may read, as ssh does for private keys.
const Private fs.FileMode = 0o077

// NotWritable is the mode mask OpenSecret refuses for files others may
// read but only their owner may change.
const NotWritable fs.FileMode = 0o022

// ErrUnsafeFile is matched (errors.Is) by *PermissionError, *OwnerError
// and *DirError.
var ErrUnsafeFile = errors.New("unsafe file")

// PermissionError reports a file holding a secret (an identity, a Vault
// token...) that group or others may read or write, or a file sealrelay
// trusts that they may write.
type PermissionError struct {
	What      string // "identity file", "vault token file"...
	Path      string
	Mode      fs.FileMode
	Forbidden fs.FileMode // the mask it was checked against: Private (the zero value's meaning) or NotWritable
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("%s %s is accessible by group or others (mode %04o); refusing to use it", e.What, e.Path, e.Mode.Perm())
}

// Hint tells how to fix the mode.
func (e *PermissionError) Hint() string {
	if e.Forbidden == NotWritable {
		return fmt.Sprintf("make it writable by its owner only: chmod go-w %s", e.Path)
	}
	return fmt.Sprintf("make it readable by its owner only: chmod 600 %s", e.Path)
}

// Is makes errors.Is(err, ErrUnsafeFile) true.
func (e *PermissionError) Is(target error) bool { return target == ErrUnsafeFile }

// OwnerError reports a file sealrelay trusts that belongs to a user other
// than the one it runs as and root: that user can change it.
type OwnerError struct {
	What  string
	Path  string
	Owner int // the file's owner
	User  int // the effective user sealrelay runs as
}

func (e *OwnerError) Error() string {
	return fmt.Sprintf("%s %s is owned by uid %d, not by uid %d (the user sealrelay runs as) or root; refusing to use it: its owner can change it",
		e.What, e.Path, e.Owner, e.User)
}

// Hint tells how to fix the owner.
func (e *OwnerError) Hint() string {
	return fmt.Sprintf("give it to the user sealrelay runs as: chown %d %s (or to root)", e.User, e.Path)
}

// Is makes errors.Is(err, ErrUnsafeFile) true.
func (e *OwnerError) Is(target error) bool { return target == ErrUnsafeFile }

// DirError reports a directory on the path of a file sealrelay trusts
// where another user could replace the file: writable by group or others
// (without the sticky bit, which /tmp has), or owned by another user.
type DirError struct {
	What  string
	Path  string // the file
	Dir   string
	Mode  fs.FileMode
	Owner int
	User  int
}

func (e *DirError) Error() string {
	why := fmt.Sprintf("is writable by group or others (mode %04o)", e.Mode.Perm())
	if e.foreign() {
		why = fmt.Sprintf("is owned by uid %d, not by uid %d (the user sealrelay runs as) or root", e.Owner, e.User)
	}
	return fmt.Sprintf("%s %s: directory %s %s; refusing to use the file: whoever can write the directory can replace it", e.What, e.Path, e.Dir, why)
}

func (e *DirError) foreign() bool { return e.Owner != 0 && e.Owner != e.User }

// Hint tells how to fix the directory.
func (e *DirError) Hint() string {
	if e.foreign() {
		return fmt.Sprintf("give the directory to root or to the user sealrelay runs as: chown %d %s", e.User, e.Dir)
	}
	return fmt.Sprintf("make the directory writable by its owner only: chmod go-w %s", e.Dir)
}

// Is makes errors.Is(err, ErrUnsafeFile) true.
func (e *DirError) Is(target error) bool { return target == ErrUnsafeFile }

// OpenSecret opens a regular file whose content sealrelay trusts; what
// names it in errors ("identity file"). It refuses the file when:
//   - its mode has any of the bits in forbidden (Private for a secret,
//     NotWritable for a file others may read): a *PermissionError;
//   - it is owned by a user other than the process's effective user and
//     root: an *OwnerError;
//   - a directory on its path, as given or with symlinks resolved, is
//     writable by group or others without the sticky bit, or is owned by
//     another user than those two: a *DirError.
func OpenSecret(path, what string, forbidden fs.FileMode) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", what, err)
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
		err = fmt.Errorf("%s %s: %w", what, path, err)
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("%s %s is not a regular file", what, path)
	case fi.Mode().Perm()&forbidden != 0:
		err = &PermissionError{What: what, Path: path, Mode: fi.Mode(), Forbidden: forbidden}
	default:
		if uid, ok := owner(fi); ok && !trusted(uid) {
			err = &OwnerError{What: what, Path: path, Owner: uid, User: os.Geteuid()}
		} else {
			err = checkDirs(path, what)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// trusted reports whether files of uid are as safe as the process's own.
func trusted(uid int) bool { return uid == 0 || uid == os.Geteuid() }

// checkDirs checks every directory above path, as given and with symlinks
// resolved, up to the root.
func checkDirs(path, what string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	paths := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		paths = append(paths, real)
	}
	seen := map[string]bool{}
	for _, p := range paths {
		for dir := filepath.Dir(p); !seen[dir]; dir = filepath.Dir(dir) {
			seen[dir] = true
			fi, err := os.Stat(dir)
			if err != nil {
				return fmt.Errorf("%s %s: %w", what, path, err)
			}
			uid, ok := owner(fi)
			if !ok {
				return nil
			}
			mode := fi.Mode()
			if !trusted(uid) || (mode.Perm()&NotWritable != 0 && mode&fs.ModeSticky == 0) {
				return &DirError{What: what, Path: path, Dir: dir, Mode: mode, Owner: uid, User: os.Geteuid()}
			}
		}
	}
	return nil
}
