// Package spool is sealrelay's durable mail queue: it takes messages from the
// listener, keeps them on disk until the relay has accepted them, schedules
// delivery attempts with exponential backoff and jitter, and sends a delivery
// status notification (DSN) to the sender for recipients that fail.
//
// On disk (the format is described in docs/spool.md), the spool directory
// (mode 0700, locked by the running agent) holds:
//
//   - journal/: segment files (NNNNNNNNNNNNNNNN.seg) of framed, checksummed
//     records. A small message that arrives is one M record: its envelope
//     and its bytes. A D record says a journaled item is done or deleted,
//     an X record that it moved to files of its own. A journaled item is
//     always in its first state (never attempted to the end): before its
//     envelope changes for the first time it moves out of the journal.
//     Segments are deleted oldest first once nothing in them is live.
//   - ID.msg and ID.env: an item with files of its own (a message too big
//     for the journal or for the memory budget, or one whose envelope has
//     changed). ID.msg is the message exactly as received (CRLF line
//     endings, not dot-stuffed); ID.env its envelope, indented JSON: the
//     sender, the recipients with their state (pending, delivered, failed),
//     last error and, for a failed one, its DSN status and the relay's reply
//     code; the attempt count and the next attempt; the message's size and
//     SHA-256. Files are mode 0600.
//   - quarantine/: what was found damaged at Open.
//
// What it promises:
//
//   - Put returns only once the message and its envelope are on stable
//     storage: an M record appended in a group commit (one fdatasync for
//     every record that arrived meanwhile, and a directory fsync for each
//     new segment), or, for an item with files of its own, each file
//     written to a temporary file, fsynced, renamed into place, and the
//     directory fsynced; the envelope's rename is the commit point.
//     Concurrent Puts share directory fsyncs (group commit) without ever
//     returning before their own rename is durable. If anything fails,
//     nothing is left behind and Put returns an error, so the listener can
//     answer 451 and acknowledge nothing.
//   - Every temporary file is opened with O_EXCL|O_NOFOLLOW (mode 0600)
//     after a leftover of its name is removed, so a symlink planted in the
//     spool is never written through. Open refuses a spool directory, or
//     the directory holding it (data_dir), that belongs to another user or
//     that group or others may write, and a journal or quarantine
//     subdirectory that is a symlink or not the agent's alone.
//   - Memory for messages being received is bounded by
//     Options.MemoryBudget whatever their size and number: a message that
//     does not fit streams to its own file as it arrives (membuf.go).
//   - Nothing but what a Delivery and RcptResult carry is ever written; no
//     credential reaches the spool.
//   - Open locks the directory (one agent per spool), takes new mail at
//     once, and loads and schedules every complete item in the background.
//     An incomplete or damaged item with files of its own (a message
//     without an envelope, an envelope that does not parse, a missing
//     message, or one whose size or SHA-256 differs from what its envelope
//     records) is moved to quarantine/; a damaged journal record (a torn
//     write from a crash, a bad checksum, an envelope that does not parse)
//     is skipped and a copy of its segment kept in quarantine/. Each gets
//     a log line. Nothing damaged is ever deleted; only leftover temporary
//     files, which were never acknowledged, are removed.
//   - A recipient a rate limit holds back (a Waiting result) is no
//     failure: it stays pending, and an attempt in which every recipient
//     waits is not counted and writes nothing; the item is tried again at
//     the time the deliverer gave, within MaxLifetime.
//   - Delivery is at least once: a crash between the relay's 250 and the
//     spool's record of it may send a message twice; nothing is lost.
//   - Recipients that fail permanently, and those still pending when an item
//     is older than MaxLifetime, get a DSN (RFC 3464 multipart/report) sent to
//     the sender through the same queue; its status codes come from the
//     relay's reply codes, never from error text. The null sender gets none:
//     an item from <> that fails (a DSN that could not be delivered, say) is
//     held in a failed state, visible in List, ReadDir and Stats.Held, never
//     tried again, until Delete removes it (or Retry names it). Nothing
//     vanishes.
//
// The spool imports no other agent package: delivery is the Deliverer
// interface it defines in api.go.
package spool
