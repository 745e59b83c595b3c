// Package maildrop is where sendmail leaves mail for the agent, and the
// agent's side that takes it in (docs/maildrop.md). It is Postfix's
// maildrop and pickup, without a set-gid helper.
//
// The maildrop is data_dir/maildrop: owned by the agent's user and group,
// mode 3733 (set-gid, sticky, writable and searchable by all, listable by
// the agent's group only). A local user's sendmail writes one file per
// message there, under a name of 128 random bits, through a temporary
// file opened with O_EXCL|O_NOFOLLOW, fsynced and renamed into place.
// The file belongs to its writer, with the agent's group (the set-gid
// bit) and mode 0640: the agent can read it, other users cannot; the
// sticky bit keeps them from removing or renaming it, and they cannot
// list the directory to learn its name.
//
// What it promises:
//
//   - Prepare creates the maildrop with those modes and refuses one that
//     another user owns, that is not the agent's group, that lacks the
//     set-gid bit, that others may list, or that group or others may
//     write without the sticky bit: each would let one user read, replace
//     or remove another's mail.
//   - Submit (sendmail's side) returns only once the message is durable:
//     the file fsynced, renamed, and the rename itself made durable (the
//     directory fsynced, or, where the user may not open the directory,
//     the file system synced).
//   - The agent takes files in at start and as they appear (fsnotify, and
//     a rescan as a safety net). A file is read without following a
//     symlink or blocking on a FIFO, and only if it is a regular file
//     with one link, within the size limits. The submitter is the file's
//     owner, as the kernel records it: the envelope sender is what
//     Policy allows that user. The message is put into the spool
//     (durable, as a 250 is), and only then is the file removed; a crash
//     in between sends the message twice, never loses it.
//   - A file that cannot be taken (damaged, hostile, too big, not
//     readable, from a user without a name) is renamed bad.NAME in the
//     maildrop and logged; it neither stops the agent nor is deleted.
//   - Nothing here reads a credential.
package maildrop
