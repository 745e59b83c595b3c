package spool

import (
	"context"
	"fmt"
)

// Alive asks the scheduler loop (Run) to answer and waits for the answer
// until ctx ends. The loop answers between two rounds of handing out
// deliveries, so an answer shows that it still goes round: it is not stuck
// on a lock, and it has not returned. Deliveries in flight run apart from
// the loop and do not delay the answer. Before Run starts or after it
// returns, Alive waits until ctx ends.
func (q *Queue) Alive(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case q.probe <- ack:
	case <-ctx.Done():
		return fmt.Errorf("spool: the scheduler loop does not answer: %w", ctx.Err())
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("spool: the scheduler loop took the probe but did not answer: %w", ctx.Err())
	}
}

// TestHookProbe is a test seam, not a feature: when set, the scheduler
// loop calls it before it answers a probe from Alive. A hook that blocks
// wedges the loop as a bug would, so a test can watch a watchdog notice.
// Set it before Run starts and reset it after Run returns.
var TestHookProbe func()

// answerProbe runs in the scheduler loop.
func answerProbe(ack chan struct{}) {
	if TestHookProbe != nil {
		TestHookProbe()
	}
	close(ack)
}
