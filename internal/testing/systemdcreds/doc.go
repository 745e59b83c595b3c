// Package systemdcreds lays out a $CREDENTIALS_DIRECTORY the way systemd's
// service manager does, and runs systemd-creds, for tests of the
// "credential:NAME" identity. It is for tests only: nothing the product
// builds imports it.
//
// What systemd does (src/core/exec-credential.c): it writes each
// credential with mode 0400 and takes the w bit off the directory (0500).
// For a service whose User= is not the manager's, it grants that user read
// access by a POSIX ACL entry (user:UID:r on the file, user:UID:r-x on the
// directory; the files stay root's, and the ACL mask shows in the group
// bits: 0440 and 0550), or, where the file system has no ACLs (ramfs), by
// giving the files and the directory to UID:GID.
package systemdcreds
