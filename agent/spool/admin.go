package spool

import (
	"container/heap"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

type counters struct {
	accepted, delivered, deferred, failed, bounced, expired, quarantined, putFailures, spilled, waited atomic.Uint64
}

// Stats are the queue's counters since Open, and the number of items queued.
type Stats struct {
	Accepted    uint64 // messages accepted by Put
	Delivered   uint64 // recipients delivered
	Deferred    uint64 // recipient attempts that failed temporarily
	Waited      uint64 // recipients a rate limit held back (Waiting): neither failures nor attempts
	Failed      uint64 // recipients that failed: permanently or by expiry
	Bounced     uint64 // DSNs generated
	Expired     uint64 // recipients that expired at MaxLifetime (also in Failed)
	Quarantined uint64 // damaged items moved to quarantine at Open
	PutFailures uint64 // Puts that returned an error
	Spilled     uint64 // messages streamed to their own file as they arrived: too big for the journal or the memory budget
	Queued      int    // items in the queue now, Held included (a gauge)
	Held        int    // items kept in the failed state, no DSN possible (a gauge)
	Buffered    int64  // bytes of memory held for messages being received (a gauge; at most Options.MemoryBudget)
}

// Info describes a queued item.
type Info struct {
	ID          string
	Received    time.Time
	Size        int64
	From        string // "" is the null sender
	Recipients  []RcptInfo
	Attempts    int
	NextAttempt time.Time
	LastError   string
	// Held: the item failed and no DSN can be sent for it (its sender is
	// the null sender, as a DSN's is). It stays in the queue, never tried
	// again, until it is deleted (or retried by its ID).
	Held bool
}

// RcptInfo is one recipient of an item.
type RcptInfo struct {
	Address   string
	State     State
	LastError string
}

func infoOf(e *envelope) Info {
	in := Info{
		ID: e.ID, Received: e.Received, Size: e.Size, From: e.From,
		Attempts: e.Attempts, NextAttempt: e.NextAttempt, LastError: e.LastError, Held: e.held(),
	}
	for _, r := range e.Recipients {
		in.Recipients = append(in.Recipients, RcptInfo{Address: r.Address, State: r.State, LastError: r.LastError})
	}
	return in
}

// List returns every queued item, oldest first. It waits until the items
// found at Open are loaded.
func (q *Queue) List() []Info {
	<-q.loaded
	q.mu.Lock()
	out := make([]Info, 0, len(q.items))
	for _, it := range q.items {
		out = append(out, infoOf(&it.env))
	}
	q.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Retry makes the item id, or every item if id is "", due now, and records
// that in its envelope. A held item (Info.Held) is retried only when named
// by its ID: its failed recipients become pending again.
func (q *Queue) Retry(id string) error {
	<-q.loaded
	now := q.opt.testNow().UTC()
	var write []*item
	q.mu.Lock()
	var targets []*item
	if id == "" {
		for _, it := range q.items {
			targets = append(targets, it)
		}
	} else {
		it, ok := q.items[id]
		if !ok {
			q.mu.Unlock()
			return fmt.Errorf("retry %s: %w", id, ErrNotFound)
		}
		targets = append(targets, it)
	}
	for _, it := range targets {
		if it.running {
			it.retryNow = true
			continue
		}
		if it.held {
			if id == "" {
				continue // a held item is retried only by its ID
			}
			q.release(it)
			write = append(write, it)
			continue
		}
		it.env.NextAttempt = now
		if it.index >= 0 {
			heap.Fix(&q.sched, it.index)
		}
		if it.jl == nil { // a journaled item has never been tried: nothing to record
			write = append(write, it)
		}
	}
	q.mu.Unlock()
	q.kick()
	var errs []error
	for _, it := range write {
		if err := q.writeEnvelope(it); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// release makes the held item it's failed recipients pending again and
// schedules it now. Call with q.mu held.
func (q *Queue) release(it *item) {
	for i := range it.env.Recipients {
		if r := &it.env.Recipients[i]; r.State == StateFailed {
			r.State, r.Status, r.ReplyCode = StatePending, "", 0
		}
	}
	it.held = false
	q.held--
	it.env.NextAttempt = q.opt.testNow().UTC()
	heap.Push(&q.sched, it)
	q.log.Info("spool: held item released by operator", "id", it.env.ID)
}

// Delete removes the item id from the queue and the disk. A delivery in
// progress for it finishes, but its result is dropped.
func (q *Queue) Delete(id string) error {
	<-q.loaded
	q.mu.Lock()
	it, ok := q.items[id]
	if !ok {
		q.mu.Unlock()
		return fmt.Errorf("delete %s: %w", id, ErrNotFound)
	}
	it.deleted = true
	delete(q.items, id)
	if it.index >= 0 {
		heap.Remove(&q.sched, it.index)
	}
	if it.held {
		it.held = false
		q.held--
	}
	q.mu.Unlock()
	if err := q.removeFiles(it, id); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	q.log.Info("spool: deleted by operator", "id", id)
	return nil
}

// Stats returns the counters and the number of queued items.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	queued, held := len(q.items), q.held
	q.mu.Unlock()
	c := &q.stats
	return Stats{
		Accepted: c.accepted.Load(), Delivered: c.delivered.Load(), Deferred: c.deferred.Load(), Waited: c.waited.Load(),
		Failed: c.failed.Load(), Bounced: c.bounced.Load(), Expired: c.expired.Load(),
		Quarantined: c.quarantined.Load(), PutFailures: c.putFailures.Load(), Spilled: c.spilled.Load(),
		Queued: queued, Held: held, Buffered: q.mem.used.Load(),
	}
}

// ReadDir lists the items of the spool in dir without opening it as a
// queue: it takes no lock, changes nothing and is safe while an agent runs.
// It returns the items it could read, oldest first, and an error naming
// each envelope it could not.
func ReadDir(dir string) ([]Info, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading spool directory: %w", err)
	}
	var out []Info
	var errs []error
	for _, e := range entries {
		id, suffix, ok := itemFile(e.Name())
		if !ok || suffix != envSuffix {
			continue
		}
		env, err := readEnvelopeFile(filepath.Join(dir, e.Name()))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // delivered and removed since the listing
		case err != nil:
			errs = append(errs, err)
			continue
		case env.ID != id:
			errs = append(errs, &EnvelopeError{File: filepath.Join(dir, e.Name()), Field: "id",
				Err: fmt.Errorf("%s does not match the file name", env.ID)})
			continue
		}
		out = append(out, infoOf(env))
	}
	if scan, err := scanJournal(filepath.Join(dir, journalDir)); err != nil {
		errs = append(errs, err)
	} else {
		have := map[string]bool{}
		for _, in := range out {
			have[in.ID] = true
		}
		for id, e := range scan.entries {
			if !have[id] {
				out = append(out, infoOf(e.env))
			}
		}
		for _, d := range scan.damage {
			errs = append(errs, fmt.Errorf("journal segment %s: record at offset %d: %s", d.seg, d.off, d.reason))
		}
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.ID, b.ID) })
	return out, errors.Join(errs...)
}
