package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// maxSegmentBytes is the size after which a segment is sealed and a new one
// started (a variable so that tests can make it small).
var maxSegmentBytes int64 = 16 << 20

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

// openJournal opens (creating) the journal directory. The committer starts
// with start.
func openJournal(spoolDir string, st *store) (*journal, error) {
	dir := filepath.Join(spoolDir, journalDir)
	created, err := ensureSubdir("journal directory", dir)
	if err != nil {
		return nil, err
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
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND|unix.O_NOFOLLOW, 0o600)
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
