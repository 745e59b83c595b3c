package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// The journal is the spool's fast path for messages up to journalMaxMessage
// bytes: instead of two files each, a message and its envelope are one
// record appended to a segment file shared by every session, and one
// fdatasync covers every record appended since the last one (group
// commit). A Put still returns only once its record is on stable storage.
//
// A segment is a sequence of records, each framed as
//
//	magic "SRJ1" | kind (1 byte) | payload length (uint32 BE) | CRC-32C of kind and payload (uint32 BE) | payload
//
// Kinds:
//
//	'M' a message: payload = envelope length (uint32 BE) | envelope JSON (as in an .env file) | message bytes
//	'D' done: payload = item ID; the item finished or was deleted
//	'X' moved: payload = item ID; the item now lives in its own .env/.msg files
//
// D and X records are not fsynced: if one is lost in a crash, the item is
// loaded again and delivered again (at least once, never lost), or, for X,
// its own files win over the record. An item leaves the journal for its own
// files (X) before its envelope changes for the first time, so a journaled
// item is always in its first state: pending, never attempted to the end.
//
// Segments are deleted oldest first, once no item in them or in an older
// one is still journaled: a D or X record is always in the same segment as
// its M record or a newer one, so deleting in order never resurrects an
// item.
const (
	journalDir        = "journal"
	segSuffix         = ".seg"
	recMagic          = "SRJ1"
	recHeaderLen      = 4 + 1 + 4 + 4
	kindMessage       = 'M'
	kindDone          = 'D'
	kindMoved         = 'X'
	journalMaxMessage = 1 << 20 // bigger messages get their own files
	maxBatch          = 512     // records per group commit
	maxRecordPayload  = 4 + maxEnvelopeBytes + journalMaxMessage
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segment is one journal file.
type segment struct {
	seq     uint64
	path    string
	live    int  // journaled items whose M record is here; guarded by journal.mu
	sealed  bool // no more appends; guarded by journal.mu
	loading bool // found at Open and not loaded yet: keep it; guarded by journal.mu
}

// jloc is where a journaled item's message bytes are.
type jloc struct {
	seg *segment
	off int64 // of the first message byte in the segment file
}

func segName(seq uint64) string { return fmt.Sprintf("%016d%s", seq, segSuffix) }

// parseSegName returns the sequence number of a segment file name.
func parseSegName(name string) (uint64, bool) {
	s, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(s) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// record is a framed record as the pieces it is written from: its header,
// then the parts of its payload. The message bytes are written from the
// buffer they were received into, not copied.
type record [][]byte

// kind returns the record's kind.
func (r record) kind() byte { return r[0][4] }

// size returns the record's length in bytes.
func (r record) size() int {
	n := 0
	for _, p := range r {
		n += len(p)
	}
	return n
}

// bytes returns the record in one slice.
func (r record) bytes() []byte {
	b := make([]byte, 0, r.size())
	for _, p := range r {
		b = append(b, p...)
	}
	return b
}

// encodeRecord frames a record whose payload is parts.
func encodeRecord(kind byte, parts ...[]byte) record {
	return frame(kind, append(make(record, 1, 1+len(parts)), parts...))
}

// messageRecord is the M record of env and its message, held in msg (the
// buffers it was received into, written as they are).
func messageRecord(envJSON []byte, msg [][]byte) record {
	return messageRecordOf(append(make(record, msgRecordParts, msgRecordParts+len(msg)), msg...), envJSON)
}

// msgRecordParts is where the message's parts start in an M record.
const msgRecordParts = 3

// messageRecordOf makes r, whose parts from msgRecordParts on are the
// message, the M record of envJSON and that message.
func messageRecordOf(r record, envJSON []byte) record {
	l := make([]byte, 4)
	binary.BigEndian.PutUint32(l, uint32(len(envJSON)))
	r[1], r[2] = l, envJSON
	return frame(kindMessage, r)
}

// frame sets r[0] to the header of the record whose payload is r[1:].
func frame(kind byte, r record) record {
	n := 0
	crc := crc32.Checksum([]byte{kind}, castagnoli)
	for _, p := range r[1:] {
		n += len(p)
		crc = crc32.Update(crc, castagnoli, p)
	}
	hdr := make([]byte, recHeaderLen)
	copy(hdr, recMagic)
	hdr[4] = kind
	binary.BigEndian.PutUint32(hdr[5:9], uint32(n))
	binary.BigEndian.PutUint32(hdr[9:13], crc)
	r[0] = hdr
	return r
}
