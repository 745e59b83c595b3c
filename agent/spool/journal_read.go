package spool

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// Reading the journal back: at Open, for ReadDir, and for a journaled
// item's message. The format is described in journal.go.

// jentry is a message found in the journal at load.
type jentry struct {
	env *envelope
	loc jloc
}

// journalScan is what reading the journal found.
type journalScan struct {
	entries map[string]*jentry // journaled items not done or moved
	segs    []*segment         // every segment, oldest first
	damage  []recordDamage     // damaged or incomplete records, in order
	maxSeq  uint64
}

// recordDamage is one record the journal could not use.
type recordDamage struct {
	seg    string // segment file
	off    int    // of the record
	id     string // the item it held, if that could be read
	reason string
}

// listSegments returns the segments in dir, oldest first, sealed.
func listSegments(dir string) ([]*segment, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading journal directory: %w", err)
	}
	var segs []*segment
	for _, de := range des {
		if seq, ok := parseSegName(de.Name()); ok && de.Type().IsRegular() {
			segs = append(segs, &segment{seq: seq, path: filepath.Join(dir, de.Name()), sealed: true})
		}
	}
	slices.SortFunc(segs, func(a, b *segment) int { return cmp.Compare(a.seq, b.seq) })
	return segs, nil
}

// scanJournal reads every segment in dir.
func scanJournal(dir string) (*journalScan, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	return scanSegments(segs), nil
}

// scanSegments reads segs, in order. A record that is damaged or cut
// short is reported (with its item, when its envelope can still be read)
// and skipped; the records after it are read.
func scanSegments(segs []*segment) *journalScan {
	s := &journalScan{entries: map[string]*jentry{}, segs: segs}
	for _, seg := range segs {
		s.maxSeq = seg.seq
		data, err := os.ReadFile(seg.path)
		if err != nil {
			s.damage = append(s.damage, recordDamage{seg: seg.path, reason: err.Error()})
			continue
		}
		s.parseSegment(seg, data)
	}
	return s
}

// damagedSegments is the set of segments with damage.
func (s *journalScan) damagedSegments() map[string]bool {
	m := map[string]bool{}
	for _, d := range s.damage {
		m[d.seg] = true
	}
	return m
}

// parseSegment reads the records of one segment.
func (s *journalScan) parseSegment(seg *segment, data []byte) {
	pos := 0
	for pos < len(data) {
		kind, payload, n, why := decodeRecord(data[pos:])
		if why != nil {
			reason := why.Error()
			if why == errTorn {
				// A write cut short by a crash (never acknowledged), or a
				// file cut short since: which one, nothing tells.
				reason = "incomplete record: a write cut short by a crash (never acknowledged) or a truncated file"
			}
			s.damage = append(s.damage, recordDamage{seg: seg.path, off: pos, id: guessID(data[pos:]), reason: reason})
			// With a sound header, the next record follows this one
			// (it may be the torn last one, which the next round
			// reports); otherwise look for it.
			next := pos + n
			if n == 0 || (next < len(data) && !soundHeader(data[next:])) {
				next = resync(data, pos+1)
			}
			if next < 0 {
				break
			}
			pos = next
			continue
		}
		switch kind {
		case kindMessage:
			env, loc, err := decodeMessage(seg, int64(pos), payload)
			if err != nil {
				s.damage = append(s.damage, recordDamage{seg: seg.path, off: pos, id: guessID(data[pos:]), reason: err.Error()})
				break
			}
			s.entries[env.ID] = &jentry{env: env, loc: loc}
		case kindDone, kindMoved:
			delete(s.entries, string(payload))
		}
		pos += n
	}
}

// guessID returns the id of the item a damaged M record held, if its
// envelope still reads, for the log; "" otherwise.
func guessID(b []byte) string {
	if len(b) < recHeaderLen+4 || b[4] != kindMessage {
		return ""
	}
	p := b[recHeaderLen:]
	el := binary.BigEndian.Uint32(p[:4])
	if uint64(el) > uint64(len(p)-4) || el > maxEnvelopeBytes {
		return ""
	}
	var w struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(p[4:4+el], &w) != nil || !validID(w.ID) {
		return ""
	}
	return w.ID
}

var errTorn = errors.New("incomplete record")

// decodeRecord reads the record at the start of b: its kind, its payload
// and its whole length.
func decodeRecord(b []byte) (kind byte, payload []byte, n int, err error) {
	if len(b) < recHeaderLen {
		if bytes.HasPrefix([]byte(recMagic), b[:min(len(b), 4)]) {
			return 0, nil, 0, errTorn
		}
		return 0, nil, 0, errors.New("not a record")
	}
	if string(b[:4]) != recMagic {
		return 0, nil, 0, errors.New("not a record")
	}
	kind = b[4]
	l := binary.BigEndian.Uint32(b[5:9])
	if l > maxRecordPayload {
		return 0, nil, 0, fmt.Errorf("record length %d out of range", l)
	}
	if uint64(len(b)) < uint64(recHeaderLen)+uint64(l) {
		return 0, nil, 0, errTorn
	}
	payload = b[recHeaderLen : recHeaderLen+int(l)]
	crc := crc32.Update(crc32.Checksum([]byte{kind}, castagnoli), castagnoli, payload)
	if crc != binary.BigEndian.Uint32(b[9:13]) {
		// The length is returned: if the header is sound, the next record
		// starts there.
		return 0, nil, recHeaderLen + int(l), errors.New("checksum mismatch")
	}
	switch kind {
	case kindMessage:
	case kindDone, kindMoved:
		if !validID(string(payload)) {
			return 0, nil, 0, errors.New("bad item id in record")
		}
	default:
		return 0, nil, 0, fmt.Errorf("unknown record kind %q", kind)
	}
	return kind, payload, recHeaderLen + int(l), nil
}

// decodeMessage checks an M record's envelope and message.
func decodeMessage(seg *segment, recOff int64, payload []byte) (*envelope, jloc, error) {
	if len(payload) < 4 {
		return nil, jloc{}, errors.New("message record too short")
	}
	el := binary.BigEndian.Uint32(payload[:4])
	if uint64(el) > uint64(len(payload)-4) {
		return nil, jloc{}, errors.New("envelope length out of range")
	}
	name := fmt.Sprintf("%s@%d", seg.path, recOff)
	env, err := readEnvelope(name, bytes.NewReader(payload[4:4+el]))
	if err != nil {
		return nil, jloc{}, err
	}
	msg := payload[4+el:]
	if int64(len(msg)) != env.Size {
		return nil, jloc{}, fmt.Errorf("message of %s has %d bytes, its envelope says %d", env.ID, len(msg), env.Size)
	}
	if err := checkSum(msg, env); err != nil {
		return nil, jloc{}, err
	}
	return env, jloc{seg: seg, off: recOff + recHeaderLen + 4 + int64(el)}, nil
}

// open returns the message bytes of a journaled item.
func (l jloc) open(size int64) (io.ReadCloser, error) {
	f, err := os.Open(l.seg.path)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, l.off, size), f}, nil
}

// resync returns the offset of the first record with a sound header at or
// after from, or -1.
func resync(data []byte, from int) int {
	for from < len(data) {
		i := bytes.Index(data[from:], []byte(recMagic))
		if i < 0 {
			return -1
		}
		if framed(data[from+i:]) {
			return from + i
		}
		from += i + 1
	}
	return -1
}

// framed reports whether b starts with a sound record header whose length
// fits in b (the payload may still be damaged): what resync looks for.
func framed(b []byte) bool {
	return soundHeader(b) && uint64(len(b)) >= uint64(recHeaderLen)+uint64(binary.BigEndian.Uint32(b[5:9]))
}

// soundHeader reports whether b starts with a record header that could be
// one: the magic, a known kind, and a length in range, whether or not b
// holds all of it (the last record may be torn).
func soundHeader(b []byte) bool {
	if len(b) < recHeaderLen || string(b[:4]) != recMagic {
		return false
	}
	switch b[4] {
	case kindMessage, kindDone, kindMoved:
	default:
		return false
	}
	return binary.BigEndian.Uint32(b[5:9]) <= maxRecordPayload
}
