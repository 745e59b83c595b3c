package spool

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// item is one queued message.
type item struct {
	env      envelope // guarded by Queue.mu
	jl       *jloc    // where its message is in the journal; nil once it has its own files; guarded by Queue.mu
	index    int      // position in Queue.sched; -1 when not in it
	running  bool     // a delivery attempt owns it
	deleted  bool     // removed by Delete
	retryNow bool     // Retry was called while it was running
	// held: it failed and no DSN can be sent for it (see envelope.held);
	// it stays, out of the schedule, until deleted or retried by ID.
	held bool

	// fileMu orders writes of the envelope with the removal of the files.
	fileMu sync.Mutex
}

// opener returns how to read it's message. Call with q.mu held.
func (q *Queue) opener(it *item) func() (io.ReadCloser, error) {
	if it.jl != nil {
		loc, size := *it.jl, it.env.Size
		return func() (io.ReadCloser, error) { return loc.open(size) }
	}
	path := q.st.path(it.env.ID, msgSuffix)
	return func() (io.ReadCloser, error) { return os.Open(path) }
}

// writeEnvelope atomically rewrites the envelope file of it from its state
// in memory, unless the item was deleted.
func (q *Queue) writeEnvelope(it *item) error {
	it.fileMu.Lock()
	defer it.fileMu.Unlock()
	q.mu.Lock()
	if it.deleted {
		q.mu.Unlock()
		return nil
	}
	env := it.env.clone()
	jl := it.jl
	q.mu.Unlock()
	data, err := env.marshal()
	if err != nil {
		return err
	}
	if jl != nil {
		return q.moveOut(it, jl, &env, data)
	}
	if err := q.st.replace(q.st.path(env.ID, envSuffix), data); err != nil {
		return fmt.Errorf("rewriting envelope of %s: %w", env.ID, err)
	}
	return nil
}

// moveOut gives a journaled item files of its own (its message and its
// new envelope, committed as a pair) before its envelope changes, and then
// lets the journal forget it. Call with it.fileMu held.
func (q *Queue) moveOut(it *item, jl *jloc, env *envelope, envData []byte) error {
	msgPath, envPath := q.st.path(env.ID, msgSuffix), q.st.path(env.ID, envSuffix)
	rc, err := jl.open(env.Size)
	if err != nil {
		return fmt.Errorf("moving %s out of the journal: %w", env.ID, err)
	}
	defer rc.Close()
	msg, err := q.st.create(msgPath)
	if err == nil {
		buf := copyBufs.Get().(*[]byte)
		_, err = io.CopyBuffer(msg, rc, *buf)
		copyBufs.Put(buf)
		if err != nil {
			msg.Abort()
		} else {
			err = q.st.commitPair(msg, envPath, envData)
		}
	}
	if err != nil {
		// The item stays in the journal, as it was; no half-moved files.
		for _, p := range []string{envPath, msgPath} {
			os.Remove(p)
		}
		return fmt.Errorf("moving %s out of the journal: %w", env.ID, err)
	}
	q.mu.Lock()
	it.jl = nil
	q.mu.Unlock()
	q.j.note(encodeRecord(kindMoved, []byte(env.ID)))
	q.j.release(jl.seg)
	return nil
}

// removeFiles deletes an item's files, the envelope first: once it is gone
// the item no longer exists.
func (q *Queue) removeFiles(it *item, id string) error {
	it.fileMu.Lock()
	defer it.fileMu.Unlock()
	q.mu.Lock()
	jl := it.jl
	it.jl = nil
	q.mu.Unlock()
	if jl != nil {
		// Not fsynced: if the D record is lost, the item is delivered
		// again after a crash, never lost.
		q.j.note(encodeRecord(kindDone, []byte(id)))
		q.j.release(jl.seg)
		return nil
	}
	return q.st.remove(q.st.path(id, envSuffix), q.st.path(id, msgSuffix))
}
