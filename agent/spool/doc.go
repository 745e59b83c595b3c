// Package spool is sealrelay's durable mail queue: it takes messages from the
// listener, keeps them on disk until the relay has accepted them, schedules
// delivery attempts with exponential backoff and jitter, and sends a delivery
// status notification (DSN) to the sender for recipients that fail.
//
// What it promises:
//
//   - Put returns only once the message and its envelope are on stable
//     storage: a small message is one record of the journal, appended in a
//     group commit (one fdatasync for every record that arrived meanwhile);
//     a bigger one, and every later envelope, is written to a temporary
//     file, fsynced, renamed into place, and the directory is fsynced. The
//     envelope's rename is the commit point. If anything fails, nothing is
//     left behind and Put returns an error, so the listener can answer 451
//     and acknowledge nothing. Concurrent Puts share directory fsyncs (group
//     commit) without ever returning before their own rename is durable.
//   - Every temporary file is opened with O_EXCL|O_NOFOLLOW (mode 0600)
//     after a leftover of its name is removed, so a symlink planted in the
//     spool is never written through. Open refuses a spool directory, or
//     the directory holding it (data_dir), that belongs to another user or
//     that group or others may write, and a journal or quarantine
//     subdirectory that is a symlink or not the agent's alone.
//   - Memory for messages being received is bounded by
//     Options.MemoryBudget whatever their size and number: a message that
//     does not fit streams to its own file as it arrives (membuf.go).
//   - An item outside the journal (a big message, or one whose envelope
//     changed) is two files in the spool directory (mode 0700): ID.msg, the
//     message exactly as received (CRLF line endings, not dot-stuffed), and
//     ID.env, its envelope: indented JSON holding the sender, the recipients
//     with their state (pending, delivered, failed) and last error, the
//     attempt count and the next attempt, and the message's size and
//     SHA-256. Files are mode 0600. Nothing but what a Delivery and
//     RcptResult carry is ever written; no credential reaches the spool.
//   - Open locks the directory (one agent per spool), then loads and
//     schedules every complete item. Incomplete or damaged items (a message
//     without an envelope, an envelope that does not parse, a missing
//     message, or one whose size or SHA-256 differs from what its envelope
//     records) are moved to the quarantine subdirectory with a log line
//     naming each; nothing is ever deleted except leftover temporary files,
//     which were never acknowledged.
//   - Delivery is at least once: a crash between the relay's 250 and the
//     envelope update may send a message twice; nothing is lost.
//   - Recipients that fail permanently, and those still pending when an item
//     is older than MaxLifetime, get a DSN (RFC 3464 multipart/report) sent to
//     the sender through the same queue. The null sender gets none: an item
//     from <> that fails (a DSN that could not be delivered, say) is held in
//     a failed state, visible in List, ReadDir and Stats.Held, never tried
//     again, until Delete removes it (or Retry names it). Nothing vanishes.
//
// The spool imports no other agent package: delivery is the Deliverer
// interface it defines in api.go.
package spool
