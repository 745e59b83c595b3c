package spool

import (
	"fmt"
	"path/filepath"
	"time"
)

// probeName is the file ProbeWrite writes, as probeName+tmpSuffix; load
// removes one a crash left behind.
const probeName = "write-probe"

// probeBytes is what ProbeWrite writes: a page, which a full tmpfs or a
// full disk refuses even when it still has room for an empty file.
var probeBytes = make([]byte, 4096)

// ProbeWrite checks that the spool can take a message now: it writes a
// small file in the spool directory the way a message is written (create
// with O_EXCL, write, fsync, close), then removes it. The error says what
// failed (a read-only file system, no space left, permission denied).
func (q *Queue) ProbeWrite() error {
	q.probeMu.Lock()
	defer q.probeMu.Unlock()
	f, err := q.st.create(filepath.Join(q.opt.Dir, probeName))
	if err != nil {
		return fmt.Errorf("spool directory %s is not writable: %w", q.opt.Dir, err)
	}
	_, err = f.Write(probeBytes)
	if err == nil {
		err = f.Finish()
	}
	f.Abort()
	if err != nil {
		return fmt.Errorf("spool directory %s cannot take a message: %w", q.opt.Dir, err)
	}
	return nil
}

// ItemState is where a queued item stands, for the queue's metrics.
type ItemState string

// The states of an item, each item being in exactly one.
const (
	ItemActive   ItemState = "active"   // a delivery attempt is running
	ItemPending  ItemState = "pending"  // waiting for its first attempt
	ItemDeferred ItemState = "deferred" // attempted, waiting for the next attempt
	ItemHeld     ItemState = "held"     // failed with no DSN possible: kept for an operator
)

// ItemStates lists every state.
func ItemStates() []ItemState { return []ItemState{ItemActive, ItemPending, ItemDeferred, ItemHeld} }

// CensusItem is one queued item as Census reports it.
type CensusItem struct {
	ID       string
	State    ItemState
	Received time.Time
	Size     int64
	// Recipients counts the recipients still pending; for a held item,
	// the failed ones.
	Recipients int
}

// Census calls fn for every item in the queue (those loaded so far, while
// the queue still loads at start). It holds the queue's lock meanwhile:
// fn must be quick and must not call the Queue.
func (q *Queue) Census(fn func(CensusItem)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, it := range q.items {
		c := CensusItem{ID: it.env.ID, Received: it.env.Received, Size: it.env.Size}
		want := StatePending
		switch {
		case it.held:
			c.State, want = ItemHeld, StateFailed
		case it.running:
			c.State = ItemActive
		case it.env.Attempts == 0:
			c.State = ItemPending
		default:
			c.State = ItemDeferred
		}
		for _, r := range it.env.Recipients {
			if r.State == want {
				c.Recipients++
			}
		}
		fn(c)
	}
}
