package deliver

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits are the outbound rate limits of a relay or a route
// (docs/routes.md). Zero fields are no limit.
type Limits struct {
	// MessagesPerMinute and MessagesPerSecond bound the transactions
	// started; set at most one. They are spread evenly: one every
	// minute/N or second/N.
	MessagesPerMinute int
	MessagesPerSecond int
	// RecipientsPerMessage bounds the recipients of one transaction; a
	// message with more is sent as several, each a message for the rate.
	RecipientsPerMessage int
}

// maxInlineWait is the longest a delivery waits for a rate limit's next
// token itself; a longer wait goes back to the queue as a Waiting result.
const maxInlineWait = 250 * time.Millisecond

// limiter is a message rate: a token bucket (golang.org/x/time/rate) of
// one token, refilled every `every`. Deliveries that must wait longer than
// maxInlineWait are handed retry times one `every` apart, in the order
// they asked, so that the queue brings them back one by one rather than
// all at once.
type limiter struct {
	lim   *rate.Limiter
	every time.Duration
	what  string // "relay primary", "route sales", for errors

	mu   sync.Mutex
	last time.Time // the latest retry time handed out
}

// newLimiter returns the message rate of l, or nil if it has none.
func newLimiter(l Limits, what string) *limiter {
	var every time.Duration
	switch {
	case l.MessagesPerMinute > 0:
		every = time.Minute / time.Duration(l.MessagesPerMinute)
	case l.MessagesPerSecond > 0:
		every = time.Second / time.Duration(l.MessagesPerSecond)
	default:
		return nil
	}
	return &limiter{lim: rate.NewLimiter(rate.Every(every), 1), every: every, what: what}
}

// slot hands out a retry time no earlier than at, and one `every` after
// the last one handed out.
func (l *limiter) slot(at time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if next := l.last.Add(l.every); next.After(at) {
		at = next
	}
	l.last = at
	return at
}

// take takes one token from each limiter (nil ones have no limit), for
// one transaction. It waits up to maxInlineWait for them; if they are
// further off it takes none and returns when to try again and the
// limiter that holds the message back the longest.
func take(ctx context.Context, ls ...*limiter) (retryAt time.Time, by *limiter, err error) {
	now := time.Now()
	type held struct {
		l *limiter
		r *rate.Reservation
		d time.Duration
	}
	var hs []held
	var wait time.Duration
	for _, l := range ls {
		if l == nil {
			continue
		}
		r := l.lim.ReserveN(now, 1)
		d := r.DelayFrom(now)
		hs = append(hs, held{l, r, d})
		if d > wait {
			wait, by = d, l
		}
	}
	if wait == 0 {
		return time.Time{}, nil, nil
	}
	if wait <= maxInlineWait {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
			return time.Time{}, nil, nil
		case <-ctx.Done():
		}
	}
	for _, h := range hs {
		h.r.CancelAt(now)
	}
	if err := ctx.Err(); err != nil {
		return time.Time{}, nil, err
	}
	retryAt = now
	for _, h := range hs {
		if h.d > 0 {
			if at := h.l.slot(now.Add(h.d)); at.After(retryAt) {
				retryAt = at
			}
		}
	}
	return retryAt, by, nil
}

// String describes the limit: "relay primary's limit of one message every 2s".
func (l *limiter) String() string {
	return fmt.Sprintf("%s's limit of one message every %s", l.what, l.every)
}
