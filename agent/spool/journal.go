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
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
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

// maxSegmentBytes is the size after which a segment is sealed and a new one
// started (a variable so that tests can make it small).
var maxSegmentBytes int64 = 16 << 20

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

// jreq is one record for the committer.
type jreq struct {
	rec  record     // nil for a barrier
	sync bool       // the caller needs it durable
	done chan error // nil: nobody waits
	// set by the committer on success
	seg *segment
	off int64 // of the record in the segment
}

// journal appends records to the current segment through one committer
// goroutine, which batches them.
type journal struct {
	dir  string
	st   *store
	reqs chan *jreq
	quit chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	segs    []*segment // oldest first; the last may be current
	nextSeq uint64

	// owned by the committer goroutine
	cur     *os.File
	curSeg  *segment
	curSize int64
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
	n := 0
	crc := crc32.Checksum([]byte{kind}, castagnoli)
	for _, p := range parts {
		n += len(p)
		crc = crc32.Update(crc, castagnoli, p)
	}
	hdr := make([]byte, recHeaderLen)
	copy(hdr, recMagic)
	hdr[4] = kind
	binary.BigEndian.PutUint32(hdr[5:9], uint32(n))
	binary.BigEndian.PutUint32(hdr[9:13], crc)
	return append(record{hdr}, parts...)
}

// messageRecord is the M record of env and its message.
func messageRecord(envJSON, msg []byte) record {
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(envJSON)))
	return encodeRecord(kindMessage, l[:], envJSON, msg)
}

// openJournal opens (creating) the journal directory. The committer starts
// with start.
func openJournal(spoolDir string, st *store) (*journal, error) {
	dir := filepath.Join(spoolDir, journalDir)
	created := false
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating journal directory: %w", err)
	}
	if created {
		if err := st.syncDirPath(spoolDir); err != nil {
			return nil, fmt.Errorf("creating journal directory: %w", err)
		}
	}
	return &journal{dir: dir, st: st, reqs: make(chan *jreq, maxBatch), quit: make(chan struct{}), nextSeq: 1}, nil
}

func (j *journal) start() {
	j.wg.Add(1)
	go j.run()
}

// stop ends the committer after the records already handed to it.
func (j *journal) stop() {
	close(j.quit)
	j.wg.Wait()
	if j.cur != nil {
		j.cur.Close()
		j.cur = nil
	}
}

// append hands rec to the committer. With wait, it returns once the record
// is written (and, with sync, durable), with where it went.
func (j *journal) append(rec record, sync bool) (*segment, int64, error) {
	r := &jreq{rec: rec, sync: sync, done: make(chan error, 1)}
	select {
	case j.reqs <- r:
	case <-j.quit:
		return nil, 0, ErrClosed
	}
	if err := <-r.done; err != nil {
		return nil, 0, err
	}
	return r.seg, r.off, nil
}

// barrier returns once every record handed to the committer before it is
// written.
func (j *journal) barrier() error {
	_, _, err := j.append(nil, false)
	return err
}

// note hands rec (a D or X record) to the committer without waiting.
func (j *journal) note(rec record) {
	select {
	case j.reqs <- &jreq{rec: rec}:
	case <-j.quit:
	}
}

func (j *journal) run() {
	defer j.wg.Done()
	batch := make([]*jreq, 0, maxBatch)
	for {
		var r *jreq
		select {
		case r = <-j.reqs:
		case <-j.quit:
			// Write what is left (D and X records) before stopping.
			for {
				select {
				case r := <-j.reqs:
					j.commit([]*jreq{r})
				default:
					return
				}
			}
		}
		batch = append(batch[:0], r)
	more:
		for len(batch) < maxBatch {
			select {
			case r := <-j.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		j.commit(batch)
	}
}

// commit writes a batch with one write and, if any record needs it, one
// fdatasync, then answers every waiter. On failure the segment is cut back
// and sealed, so that the next batch starts a clean one.
func (j *journal) commit(batch []*jreq) {
	err := j.ensureSegment()
	if err == nil {
		err = j.writeBatch(batch)
	}
	for _, r := range batch {
		if r.done != nil {
			r.done <- err
		}
	}
}

func (j *journal) writeBatch(batch []*jreq) error {
	needSync := false
	var bufs [][]byte
	off := j.curSize
	for _, r := range batch {
		needSync = needSync || r.sync
		r.seg, r.off = j.curSeg, off
		bufs = append(bufs, r.rec...)
		off += int64(r.rec.size())
	}
	err := writeAll(j.cur, bufs)
	if err == nil && needSync {
		if err = j.st.beforeSync(j.curSeg.path); err == nil {
			err = unix.Fdatasync(int(j.cur.Fd()))
		}
	}
	if err != nil {
		// After a failed write or fdatasync the file's state is unknown
		// (the kernel may have dropped the dirty pages): cut it back to
		// its last good length and never append to it again.
		j.cur.Truncate(j.curSize) //nolint:errcheck // best effort; the loader stops at a torn record
		path := j.curSeg.path
		j.seal()
		return fmt.Errorf("journal %s: %w", path, err)
	}
	j.curSize = off
	j.mu.Lock()
	for _, r := range batch {
		if r.rec != nil && r.rec.kind() == kindMessage {
			r.seg.live++
		}
	}
	j.mu.Unlock()
	if j.curSize >= maxSegmentBytes {
		j.seal()
	}
	return nil
}

// writeAll writes bufs to f with writev, at most IOV_MAX buffers a call,
// going on after a short write.
func writeAll(f *os.File, bufs [][]byte) error {
	const iovMax = 1024
	fd := int(f.Fd())
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), iovMax)]
		n, err := unix.Writev(fd, chunk)
		if err != nil {
			return err
		}
		// Drop what was written; a short write leaves part of a buffer.
		for n > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
			} else {
				bufs[0] = bufs[0][n:]
				n = 0
			}
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
	}
	return nil
}

// ensureSegment opens a new current segment if there is none, making its
// directory entry durable before anything is acknowledged in it.
func (j *journal) ensureSegment() error {
	if j.cur != nil {
		return nil
	}
	j.mu.Lock()
	seq := j.nextSeq
	j.nextSeq++
	j.mu.Unlock()
	path := filepath.Join(j.dir, segName(seq))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("creating journal segment: %w", err)
	}
	if err := j.st.syncDirPath(j.dir); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("creating journal segment %s: %w", path, err)
	}
	seg := &segment{seq: seq, path: path}
	j.mu.Lock()
	j.segs = append(j.segs, seg)
	j.mu.Unlock()
	j.cur, j.curSeg, j.curSize = f, seg, 0
	return nil
}

// seal closes the current segment for appends.
func (j *journal) seal() {
	j.cur.Close()
	j.mu.Lock()
	j.curSeg.sealed = true
	j.mu.Unlock()
	j.cur, j.curSeg = nil, nil
	j.collect()
}

// release notes that an item left the journal (its M record in seg no
// longer matters) and deletes the segments nobody needs any more.
func (j *journal) release(seg *segment) {
	j.mu.Lock()
	seg.live--
	j.mu.Unlock()
	j.collect()
}

// adopt takes the segments already in the journal directory (sealed, and
// kept until loaded) and makes new segments follow them.
func (j *journal) adopt() ([]*segment, error) {
	segs, err := listSegments(j.dir)
	if err != nil {
		return nil, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, seg := range segs {
		seg.loading = true
		j.nextSeq = seg.seq + 1
	}
	j.segs = append(segs, j.segs...)
	return segs, nil
}

// adopted marks the segments found at Open as loaded, so that they can go
// once nothing in them is live.
func (j *journal) adopted(segs []*segment) {
	j.mu.Lock()
	for _, seg := range segs {
		seg.loading = false
	}
	j.mu.Unlock()
	j.collect()
}

// collect deletes sealed segments with no live item, oldest first.
func (j *journal) collect() {
	j.mu.Lock()
	var gone []string
	for len(j.segs) > 0 && j.segs[0].sealed && !j.segs[0].loading && j.segs[0].live <= 0 {
		gone = append(gone, j.segs[0].path)
		j.segs = j.segs[1:]
	}
	j.mu.Unlock()
	for _, p := range gone {
		os.Remove(p) // a segment left behind is read again and its items found done
	}
}

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
			// With a sound header, the next record follows this one;
			// otherwise look for it.
			next := pos + n
			if n == 0 || (next < len(data) && !framed(data[next:])) {
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

// framed reports whether b starts with a sound record header: the magic, a
// known kind, and a length that fits in b (the payload may still be
// damaged).
func framed(b []byte) bool {
	if len(b) < recHeaderLen || string(b[:4]) != recMagic {
		return false
	}
	switch b[4] {
	case kindMessage, kindDone, kindMoved:
	default:
		return false
	}
	l := binary.BigEndian.Uint32(b[5:9])
	return l <= maxRecordPayload && uint64(len(b)) >= uint64(recHeaderLen)+uint64(l)
}
