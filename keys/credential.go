package keys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// A systemd credential is a file systemd puts in a directory of the
// service's own, $CREDENTIALS_DIRECTORY (/run/credentials/UNIT), for
// LoadCredential= and LoadCredentialEncrypted= (the latter decrypted with
// the host key or the TPM). "credential:NAME" names the file NAME there.
//
// systemd writes each credential with mode 0400 and takes the w bit off the
// directory (0500). When the service has a User= of its own, systemd gives
// that user read access either by a POSIX ACL entry (the file stays
// root's, and its group bits then show the ACL mask: 0440; the directory
// shows 0550), or, on a file system without ACLs, by making the user the
// owner. openCredential accepts exactly that: group bits only when the
// file's ACL shows that no group and no other user may read it.

// CredentialPrefix starts an identity reference naming a systemd
// credential: "credential:NAME".
const CredentialPrefix = "credential:"

// CredentialError reports a systemd credential sealrelay cannot use. It
// names the credential and the directory.
type CredentialError struct {
	Name string // the credential: NAME in LoadCredential=NAME:...
	Dir  string // $CREDENTIALS_DIRECTORY; "" when unset
	Msg  string
	Err  error // the cause, if any
	hint string
	// unsafe marks a credential others could read or replace.
	unsafe bool
}

func (e *CredentialError) Error() string {
	where := ""
	if e.Dir != "" {
		where = " in " + e.Dir
	}
	s := fmt.Sprintf("systemd credential %q%s: %s", e.Name, where, e.Msg)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Hint tells how to fix it.
func (e *CredentialError) Hint() string { return e.hint }

// Unwrap returns the cause.
func (e *CredentialError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnsafeFile) true for a credential others
// could read or replace.
func (e *CredentialError) Is(target error) bool { return e.unsafe && target == ErrUnsafeFile }

// ValidCredentialName reports whether name is a credential name systemd
// accepts: 1 to 255 printable ASCII characters without "/" or ":", and
// neither "." nor "..".
func ValidCredentialName(name string) bool {
	if name == "" || len(name) > 255 || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' || c == '/' || c == ':' {
			return false
		}
	}
	return true
}

// LoadRef loads the identity ref names: "credential:NAME", the systemd
// credential NAME in $CREDENTIALS_DIRECTORY (LoadCredential), or else an
// identity file (Load).
func LoadRef(ref string) (*Identity, error) {
	if name, ok := strings.CutPrefix(ref, CredentialPrefix); ok {
		return LoadCredential(os.Getenv("CREDENTIALS_DIRECTORY"), name)
	}
	return Load(ref)
}

// unitHint is how a unit passes the identity; NAME is the credential.
const unitHint = "pass it in the unit: LoadCredentialEncrypted=%s:/etc/sealrelay/identity.cred " +
	"(made by `systemd-creds encrypt --name=%s IDENTITY /etc/sealrelay/identity.cred`; see dist/systemd/sealrelay-credential.service.d/)"

// LoadCredential reads the identity systemd passed as the credential name
// in dir, the service's $CREDENTIALS_DIRECTORY. It refuses an unset or
// relative dir, a symbolic link, a file others can read or write, and a
// file or directory another user could replace: a *CredentialError.
func LoadCredential(dir, name string) (*Identity, error) {
	f, path, err := openCredential(dir, name)
	if err != nil {
		return nil, err
	}
	return parseFile(f, path, fmt.Sprintf("systemd credential %s in %s", name, dir))
}

// openCredential opens dir/name after the checks LoadCredential promises.
func openCredential(dir, name string) (*os.File, string, error) {
	bad := func(msg string, err error, hint string, unsafe bool) (*os.File, string, error) {
		return nil, "", &CredentialError{Name: name, Dir: dir, Msg: msg, Err: err, hint: hint, unsafe: unsafe}
	}
	const madeBySystemd = "systemd makes a credential readable by the service's user alone (mode 0400, or an ACL for that user); " +
		"a file laid out otherwise was not put there by systemd: check what sets CREDENTIALS_DIRECTORY"
	switch {
	case dir == "":
		return bad("$CREDENTIALS_DIRECTORY is not set: sealrelay was not started by systemd with a credential", nil,
			fmt.Sprintf(unitHint, name, name)+", or set credentials.identity to an identity file", false)
	case !filepath.IsAbs(dir):
		return bad("$CREDENTIALS_DIRECTORY is not an absolute path", nil, "systemd sets it to /run/credentials/UNIT", false)
	case !ValidCredentialName(name):
		return bad("not a credential name systemd accepts (1 to 255 printable ASCII characters, no \"/\" or \":\")", nil,
			"use the NAME of LoadCredentialEncrypted=NAME:FILE", false)
	}
	path := filepath.Join(dir, name)
	lfi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return bad("the service was not given it", nil, fmt.Sprintf(unitHint, name, name), false)
	case err != nil:
		return bad("cannot read it", err, "check the unit's LoadCredential= or LoadCredentialEncrypted= line", false)
	case lfi.Mode()&fs.ModeSymlink != 0:
		return bad("it is a symbolic link; refusing to follow it", nil, madeBySystemd, true)
	}
	f, err := os.Open(path)
	if err != nil {
		return bad("cannot read it", err, "run sealrelay as the unit's User=, which systemd gives read access", false)
	}
	fail := func(msg string, err error, hint string) (*os.File, string, error) {
		f.Close()
		return bad(msg, err, hint, true)
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
		return fail("cannot read it", err, madeBySystemd)
	case !os.SameFile(fi, lfi):
		return fail("it was replaced while being opened", nil, madeBySystemd)
	case !fi.Mode().IsRegular():
		return fail("it is not a regular file", nil, madeBySystemd)
	case fi.Mode().Perm()&0o022 != 0:
		return fail(fmt.Sprintf("group or others may write it (mode %04o); refusing to use it", fi.Mode().Perm()), nil, madeBySystemd)
	case fi.Mode().Perm()&0o007 != 0:
		return fail(fmt.Sprintf("others may read it (mode %04o); refusing to use it", fi.Mode().Perm()), nil, madeBySystemd)
	}
	if uid, ok := owner(fi); ok && !trusted(uid) {
		return fail(fmt.Sprintf("it is owned by uid %d, not by uid %d (the user sealrelay runs as) or root; refusing to use it", uid, os.Geteuid()), nil, madeBySystemd)
	}
	if fi.Mode().Perm()&0o070 != 0 {
		if why := groupReaders(f, fi); why != "" {
			return fail(fmt.Sprintf("%s (mode %04o); refusing to use it", why, fi.Mode().Perm()), nil, madeBySystemd)
		}
	}
	if err := checkDirs(path, "systemd credential"); err != nil {
		return fail("its directory is not safe", err, madeBySystemd)
	}
	return f, path, nil
}
