package spool

import (
	"bytes"
	"container/heap"
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// schedule is a min-heap of items by next attempt (then ID).
type schedule []*item

func (s schedule) Len() int { return len(s) }
func (s schedule) Less(i, j int) bool {
	a, b := &s[i].env, &s[j].env
	if !a.NextAttempt.Equal(b.NextAttempt) {
		return a.NextAttempt.Before(b.NextAttempt)
	}
	return a.ID < b.ID
}
func (s schedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}
func (s *schedule) Push(x any) {
	it := x.(*item)
	it.index = len(*s)
	*s = append(*s, it)
}
func (s *schedule) Pop() any {
	old := *s
	it := old[len(old)-1]
	old[len(old)-1] = nil
	it.index = -1
	*s = old[:len(old)-1]
	return it
}

// Run is the scheduler: it hands each item whose next attempt is due to d,
// at most Workers at a time, and records the results. It returns after ctx
// ends and the deliveries in flight have finished; those that have not
// finished DrainTimeout after ctx ended are cancelled (their Deliver gets a
// cancelled context) and waited for. Call Run once.
func (q *Queue) Run(ctx context.Context, d Deliverer) {
	// Deliveries get a context of their own, so that the end of ctx stops
	// new attempts without cutting short the ones in flight.
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		now := q.opt.testNow()
		for q.inflight < q.opt.Workers && len(q.sched) > 0 && !q.sched[0].env.NextAttempt.After(now) {
			it := heap.Pop(&q.sched).(*item)
			it.running = true
			q.inflight++
			id := it.env.ID
			wg.Go(func() {
				q.process(dctx, d, it)
				q.mu.Lock()
				q.inflight--
				q.mu.Unlock()
				q.kick()
				if q.opt.testProcessed != nil {
					q.opt.testProcessed(id)
				}
			})
		}
		wait := time.Duration(-1)
		if q.inflight < q.opt.Workers && len(q.sched) > 0 {
			wait = q.sched[0].env.NextAttempt.Sub(now)
		}
		q.mu.Unlock()
		timer.Stop()
		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			q.drain(&wg, cancel)
			return
		case <-q.wake:
		case <-timer.C:
		case ack := <-q.probe:
			answerProbe(ack)
		}
	}
}

// drain waits for the deliveries in flight, cancelling them after
// DrainTimeout.
func (q *Queue) drain(wg *sync.WaitGroup, cancel context.CancelFunc) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	q.mu.Lock()
	n := q.inflight
	q.mu.Unlock()
	if n > 0 {
		q.log.Info("spool: waiting for deliveries in flight", "deliveries", n, "timeout", q.opt.DrainTimeout)
	}
	t := time.NewTimer(q.opt.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	q.log.Warn("spool: drain timeout: cancelling deliveries in flight", "timeout", q.opt.DrainTimeout)
	cancel()
	<-done
}

// process makes one delivery attempt for it, records the outcome, and then
// either finishes the item (DSN, removal) or writes its envelope and
// schedules it again.
func (q *Queue) process(ctx context.Context, d Deliverer, it *item) {
	q.mu.Lock()
	env := it.env.clone()
	q.mu.Unlock()

	changed := true
	if pending := env.pending(); len(pending) > 0 {
		q.mu.Lock()
		open := q.opener(it)
		q.mu.Unlock()
		changed = q.attempt(ctx, d, &env, pending, open)
	}
	if len(env.pending()) == 0 && env.held() {
		q.hold(it, &env)
		return
	}
	if len(env.pending()) == 0 {
		err := q.finish(it, &env)
		if err == nil {
			return
		}
		// The DSN could not be queued (disk full?): keep the item, whose
		// envelope now records every outcome, and try again later.
		q.log.Error("spool: cannot queue the DSN; will try again", "id", env.ID, "err", err)
		env.NextAttempt = q.opt.testNow().Add(q.backoff(env.Attempts)).UTC()
	}

	q.mu.Lock()
	if it.deleted {
		q.mu.Unlock()
		return
	}
	it.env = env
	q.mu.Unlock()
	// When only the next attempt moved (a rate limit held every recipient
	// back), it is kept in memory: after a restart the item is simply due.
	if changed {
		if err := q.writeEnvelope(it); err != nil {
			// The old envelope stays on disk: after a restart, delivered
			// recipients may get the message again. Never lost.
			q.log.Error("spool: cannot record delivery outcome", "id", env.ID, "err", err)
		}
	}
	q.mu.Lock()
	it.running = false
	if !it.deleted {
		if it.retryNow {
			it.retryNow = false
			it.env.NextAttempt = q.opt.testNow().UTC()
		}
		heap.Push(&q.sched, it)
	}
	q.mu.Unlock()
}

// attempt hands the pending recipients (indexes into env.Recipients) to d
// and records the results in env. It reports whether env changed beyond
// its next attempt: when a rate limit held every recipient back
// (Waiting), the attempt does not count and only NextAttempt moves.
func (q *Queue) attempt(ctx context.Context, d Deliverer, env *envelope, pending []int, open func() (io.ReadCloser, error)) bool {
	del := &Delivery{
		ID:       env.ID,
		From:     env.From,
		To:       make([]string, len(pending)),
		Size:     env.Size,
		Attempt:  env.Attempts + 1,
		Received: env.Received,
		Open:     open,
	}
	for k, i := range pending {
		del.To[k] = env.Recipients[i].Address
	}
	results := d.Deliver(ctx, del)
	now := q.opt.testNow().UTC()
	if len(results) != len(pending) {
		q.log.Error("spool: deliverer returned the wrong number of results; missing ones count as temporary failures",
			"id", env.ID, "results", len(results), "recipients", len(pending))
	}

	result := func(k int) RcptResult {
		if k < len(results) {
			return results[k]
		}
		return RcptResult{Status: Temporary, Err: fmt.Errorf("no result from the deliverer for this recipient")}
	}
	var wake time.Time // the earliest RetryAt of a Waiting recipient
	waiting := 0
	for k, i := range pending {
		if res := result(k); res.Status == Waiting {
			waiting++
			at := res.RetryAt
			if at.IsZero() {
				at = now.Add(q.opt.MinBackoff)
			}
			if wake.IsZero() || at.Before(wake) {
				wake = at
			}
			q.stats.waited.Add(1)
			q.log.Debug("spool: waiting for a rate limit", "id", env.ID, "rcpt", env.Recipients[i].Address, "relay", res.Relay, "until", at)
		}
	}
	deadline := env.Received.Add(q.opt.MaxLifetime)
	if waiting == len(pending) && now.Before(deadline) {
		env.NextAttempt = minTime(wake, deadline).UTC()
		return false
	}

	env.Attempts++
	env.LastAttempt = now
	env.LastError = ""
	// One log line per recipient tried, once its outcome is final (an
	// expiry below changes it); a Waiting recipient was not tried.
	defer func() {
		for k, i := range pending {
			if res := result(k); res.Status != Waiting {
				q.logAttempt(env, &env.Recipients[i], res, now)
			}
		}
	}()
	for k, i := range pending {
		r := &env.Recipients[i]
		res := result(k)
		switch res.Status {
		case Waiting:
			continue // pending, no failure; its state is unchanged
		case Delivered:
			r.State, r.LastError = StateDelivered, ""
			q.stats.delivered.Add(1)
		case Permanent:
			r.State = StateFailed
			r.LastError = orText(errorText(res.Err), "permanent failure")
			r.Status, r.ReplyCode = failureStatus(res), failureCode(res)
			q.stats.failed.Add(1)
		default: // Temporary, and anything a Deliverer should not return
			r.LastError = orText(errorText(res.Err), "temporary failure")
			q.stats.deferred.Add(1)
		}
		if env.LastError == "" && r.LastError != "" {
			env.LastError = r.LastError
		}
	}

	if len(env.pending()) == 0 {
		return true
	}
	if now.Sub(env.Received) >= q.opt.MaxLifetime {
		for _, i := range env.pending() {
			r := &env.Recipients[i]
			r.State, r.Status, r.ReplyCode = StateFailed, statusExpired, 0
			r.LastError = oneLine(fmt.Sprintf("expired after %s in the queue; last error: %s", q.opt.MaxLifetime, r.LastError), maxErrorBytes)
			q.stats.failed.Add(1)
			q.stats.expired.Add(1)
		}
		return true
	}
	next := now.Add(q.backoff(env.Attempts))
	if waiting > 0 {
		// Recipients a rate limit held back go when it lets them.
		next = minTime(next, wake)
	}
	// The last attempt happens when the lifetime ends.
	env.NextAttempt = minTime(next, deadline).UTC()
	return true
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// backoff is the delay after the given number of attempts:
// min(MaxBackoff, MinBackoff*2^(attempts-1)), scaled by a random factor in
// [0.8, 1.2) so that retries of many items spread out.
func (q *Queue) backoff(attempts int) time.Duration {
	d := q.opt.MinBackoff
	for i := 1; i < attempts && d < q.opt.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, q.opt.MaxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*q.opt.testRand()))
}

// hold keeps an item that failed with nobody to tell (see envelope.held)
// in the failed state: its envelope records the outcome, and it leaves the
// schedule until an operator deletes or retries it.
func (q *Queue) hold(it *item, env *envelope) {
	q.mu.Lock()
	if it.deleted {
		q.mu.Unlock()
		return
	}
	it.env = *env
	q.mu.Unlock()
	if err := q.writeEnvelope(it); err != nil {
		// Held in memory only: after a restart the item is tried again
		// from its last recorded state, and held again. Never lost.
		q.log.Error("spool: cannot record delivery outcome", "id", env.ID, "err", err)
	}
	var failed []string
	for _, r := range env.Recipients {
		if r.State == StateFailed {
			failed = append(failed, r.Address)
		}
	}
	q.mu.Lock()
	it.running, it.retryNow = false, false
	if !it.deleted {
		it.held = true
		q.held++
	}
	q.mu.Unlock()
	q.log.Warn("spool: undeliverable, and no DSN can be sent (null sender): kept in the queue as failed until an operator deletes it",
		"id", env.ID, "rcpts", failed, "err", env.LastError)
}

// finish ends an item with no recipient pending: it queues a DSN if any
// recipient failed (unless the sender is null), then removes the item. An
// error means the DSN could not be queued and the item stays.
func (q *Queue) finish(it *item, env *envelope) error {
	q.mu.Lock()
	deleted := it.deleted
	q.mu.Unlock()
	if deleted {
		return nil
	}
	if env.failed() && env.From != "" {
		q.mu.Lock()
		open := q.opener(it)
		q.mu.Unlock()
		if err := q.queueDSN(env, open); err != nil {
			return err
		}
	}
	q.mu.Lock()
	if it.deleted {
		q.mu.Unlock()
		return nil
	}
	delete(q.items, env.ID)
	it.deleted = true // no more writes to its envelope
	q.mu.Unlock()
	if err := q.removeFiles(it, env.ID); err != nil {
		// Left on disk, the item is loaded again at the next start and
		// delivered again to nobody (all recipients are done), then removed.
		q.log.Error("spool: cannot remove finished item", "id", env.ID, "err", err)
	}
	q.log.Debug("spool: done", "id", env.ID, "attempts", env.Attempts)
	return nil
}

// queueDSN puts the DSN for env's failed recipients into the queue.
func (q *Queue) queueDSN(env *envelope, open func() (io.ReadCloser, error)) error {
	headers, err := readHeaders(open)
	if err != nil {
		// Still tell the sender; the headers are a courtesy.
		q.log.Warn("spool: cannot read the original headers for the DSN", "id", env.ID, "err", err)
	}
	var failed []recipient
	for _, r := range env.Recipients {
		if r.State == StateFailed {
			failed = append(failed, r)
		}
	}
	msg := buildDSN(dsnData{
		Hostname:    q.opt.Hostname,
		ID:          env.ID,
		Sender:      env.From,
		Received:    env.Received,
		LastAttempt: env.LastAttempt,
		Date:        q.opt.testNow(),
		Failed:      failed,
		Headers:     headers,
	})
	id, _, err := q.put(context.Background(), "", []string{env.From}, bytes.NewReader(msg))
	if err != nil {
		return fmt.Errorf("queueing DSN for %s: %w", env.ID, err)
	}
	q.stats.bounced.Add(1)
	q.log.Info("spool: queued DSN", "id", id, "for", env.ID, "to", env.From, "failed", len(failed))
	return nil
}
