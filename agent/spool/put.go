package spool

import (
	"bytes"
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

// bodyReader remembers the error of the reader it wraps, so that Put can
// tell the sender's error from its own. It also hides io.WriterTo.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
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
	src := &bodyReader{r: body}

	// A message that fits in journalMaxMessage goes through the journal,
	// one record in a group commit; a bigger one is streamed to files of
	// its own.
	bb := bodyBufs.Get().(*bytes.Buffer)
	bb.Reset()
	defer func() {
		if bb.Cap() <= 2*journalMaxMessage {
			bodyBufs.Put(bb)
		}
	}()
	n, cerr := io.CopyN(bb, src, journalMaxMessage+1)
	switch {
	case src.err != nil:
		return "", 0, fmt.Errorf("reading message body: %w", src.err)
	case cerr != nil && cerr != io.EOF:
		return "", 0, fmt.Errorf("reading message body: %w", cerr)
	case ctx.Err() != nil:
		return "", 0, ctx.Err()
	}
	var it *item
	if n <= journalMaxMessage && !q.opt.testNoJournal {
		it, err = q.putJournal(id, now, from, to, bb.Bytes())
	} else {
		it, err = q.putFiles(ctx, id, now, from, to, io.MultiReader(bytes.NewReader(bb.Bytes()), src), src)
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

// bodyBufs hold message bodies on their way into the journal.
var bodyBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

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

// putJournal appends the message to the journal and returns once the
// group commit that carries it is durable.
func (q *Queue) putJournal(id string, now time.Time, from string, to []string, msg []byte) (*item, error) {
	sum := sha256.Sum256(msg)
	env := newEnvelope(id, now, from, to, int64(len(msg)), sum[:])
	// Compact JSON in the journal: it is read by sealrelay, not edited.
	data, err := json.Marshal(&env)
	if err != nil {
		return nil, fmt.Errorf("encoding envelope of %s: %w", id, err)
	}
	seg, off, err := q.j.append(messageRecord(data, msg), true)
	if err != nil {
		return nil, err
	}
	return &item{env: env, jl: &jloc{seg: seg, off: off + recHeaderLen + 4 + int64(len(data))}, index: -1}, nil
}

// putFiles streams the message to its own file and writes its envelope,
// each through an atomicFile (temporary file, written, fsynced, renamed,
// directory fsynced). The envelope's rename is the commit point. src is
// the body's reader, to tell its errors from the disk's.
func (q *Queue) putFiles(ctx context.Context, id string, now time.Time, from string, to []string, r io.Reader, src *bodyReader) (it *item, err error) {
	msgPath, envPath := q.st.path(id, msgSuffix), q.st.path(id, envSuffix)
	defer func() {
		if err != nil {
			os.Remove(envPath)
			os.Remove(msgPath)
		}
	}()
	sum := sha256.New()
	var size int64
	err = q.st.write(msgPath, func(w io.Writer) error {
		buf := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(buf)
		// io.MultiWriter hides any ReadFrom, so buf is used.
		n, err := io.CopyBuffer(io.MultiWriter(w, sum), r, *buf)
		size = n
		switch {
		case src.err != nil:
			return fmt.Errorf("reading message body: %w", src.err)
		case err != nil:
			return err // the atomicFile names the file
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	env := newEnvelope(id, now, from, to, size, sum.Sum(nil))
	data, err := env.marshal()
	if err != nil {
		return nil, err
	}
	if err = ctx.Err(); err != nil {
		return nil, err
	}
	if err = q.st.replace(envPath, data); err != nil {
		return nil, err
	}
	return &item{env: env, index: -1}, nil
}
