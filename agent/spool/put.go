package spool

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Put stores a message for delivery from from ("" for the null sender) to
// the recipients to, reading its body (header and body, CRLF line endings)
// from body as a stream. It returns the item's ID only once the message and
// its envelope are durable. On any failure it removes what it wrote and
// returns an error; an error from body is wrapped, so errors.Is and
// errors.As find it.
func (q *Queue) Put(ctx context.Context, from string, to []string, body io.Reader) (string, error) {
	id, size, err := q.put(ctx, from, to, body)
	if err != nil {
		q.stats.putFailures.Add(1)
		return "", err
	}
	q.stats.accepted.Add(1)
	q.log.Debug("spool: queued", "id", id, "from", from, "rcpts", len(to), "size", size) // the listener logs the acceptance
	return id, nil
}

// copyBufs are the buffers bodies are copied to disk through.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (q *Queue) put(ctx context.Context, from string, to []string, body io.Reader) (id string, size int64, err error) {
	if err := checkAddress(from, true); err != nil {
		return "", 0, fmt.Errorf("sender %q: %w: %v", from, ErrBadAddress, err)
	}
	switch {
	case len(to) == 0:
		return "", 0, fmt.Errorf("no recipients: %w", ErrBadAddress)
	case len(to) > maxRecipients:
		return "", 0, fmt.Errorf("%d recipients, more than %d: %w", len(to), maxRecipients, ErrBadAddress)
	}
	for i, a := range to {
		if err := checkAddress(a, false); err != nil {
			return "", 0, fmt.Errorf("recipient %d %q: %w: %v", i+1, a, ErrBadAddress, err)
		}
	}
	q.mu.Lock()
	closed := q.closed
	q.mu.Unlock()
	if closed {
		return "", 0, ErrClosed
	}

	now := q.opt.testNow().UTC()
	id = newID(now)
	msgPath := q.st.path(id, msgSuffix)

	// A message that fits in journalMaxMessage, and in the memory budget,
	// goes through the journal, one record in a group commit; a bigger one
	// spills to a file of its own as it arrives (see membuf.go).
	m := newInbound(&q.mem, q.st, msgPath)
	defer m.close()
	if err := m.readFrom(body); err != nil {
		return "", 0, err
	}
	if m.file != nil {
		q.stats.spilled.Add(1)
	}
	if err := ctx.Err(); err != nil {
		return "", 0, err
	}
	var it *item
	if m.file == nil && !q.opt.testNoJournal {
		it, err = q.putJournal(id, now, from, to, m)
	} else {
		it, err = q.putFiles(ctx, id, now, from, to, m)
	}
	if err != nil {
		return "", 0, err
	}
	q.mu.Lock()
	q.items[id] = it
	heap.Push(&q.sched, it)
	q.mu.Unlock()
	q.kick()
	return id, it.env.Size, nil
}

// newEnvelope is the envelope of a message just received.
func newEnvelope(id string, now time.Time, from string, to []string, size int64, sum []byte) envelope {
	env := envelope{
		Version: envelopeVersion, ID: id, Received: now, From: from, Size: size,
		SHA256: hex.EncodeToString(sum), NextAttempt: now,
		Recipients: make([]recipient, len(to)),
	}
	for i, a := range to {
		env.Recipients[i] = recipient{Address: a, State: StatePending}
	}
	return env
}

// putJournal appends the message, held in m's chunks, to the journal
// (written from the chunks) and returns once the group commit that carries
// it is durable.
func (q *Queue) putJournal(id string, now time.Time, from string, to []string, m *inbound) (*item, error) {
	rec := m.appendParts(make(record, msgRecordParts, msgRecordParts+len(m.chunks)))
	h := sha256.New()
	for _, p := range rec[msgRecordParts:] {
		h.Write(p)
	}
	env := newEnvelope(id, now, from, to, int64(m.n), h.Sum(nil))
	// Compact JSON in the journal: it is read by sealrelay, not edited.
	data, err := json.Marshal(&env)
	if err != nil {
		return nil, fmt.Errorf("encoding envelope of %s: %w", id, err)
	}
	seg, off, err := q.j.append(messageRecordOf(rec, data), true)
	if err != nil {
		return nil, err
	}
	return &item{env: env, jl: &jloc{seg: seg, off: off + recHeaderLen + 4 + int64(len(data))}, index: -1}, nil
}

// putFiles finishes the message in its own file (spilling it there if it
// is still in memory) and writes its envelope: each a temporary file,
// written and fsynced, then both renamed and the directory fsynced once.
// The envelope's rename is the commit point.
func (q *Queue) putFiles(ctx context.Context, id string, now time.Time, from string, to []string, m *inbound) (it *item, err error) {
	msgPath, envPath := q.st.path(id, msgSuffix), q.st.path(id, envSuffix)
	defer func() {
		if err != nil {
			os.Remove(envPath)
			os.Remove(msgPath)
		}
	}()
	if m.file == nil {
		if err := m.spill(); err != nil {
			return nil, err
		}
	}
	f := m.file
	m.file = nil
	env := newEnvelope(id, now, from, to, m.size, m.sum.Sum(nil))
	data, err := env.marshal()
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		f.Abort()
		return nil, err
	}
	if err = q.st.commitPair(f, envPath, data); err != nil {
		return nil, err
	}
	return &item{env: env, index: -1}, nil
}
