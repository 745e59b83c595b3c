package spool

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// alive runs Alive with a short deadline.
func alive(q *Queue) error {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	return q.Alive(ctx)
}

// TestAlive: the scheduler loop answers a probe while it runs, also while
// a delivery hangs; a loop that is not running, or is wedged, does not.
func TestAlive(t *testing.T) {
	var wedged atomic.Bool
	release := make(chan struct{})
	TestHookProbe = func() {
		if wedged.Load() {
			<-release
		}
	}
	t.Cleanup(func() { TestHookProbe = nil })

	h := newHarness(t, Options{})
	if err := alive(h.q); err == nil || !strings.Contains(err.Error(), "the scheduler loop does not answer") {
		t.Fatalf("Alive before Run = %v, want the loop not answering", err)
	}

	// A delivery that hangs runs apart from the loop.
	hang, entered := make(chan struct{}), make(chan struct{}, 1)
	d := &fakeDeliverer{respond: func(d *Delivery) []RcptResult {
		entered <- struct{}{}
		<-hang
		return all(Delivered, nil)(d)
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.q.Run(ctx, d); close(done) }()
	h.put("alice@example.com", "bob@example.org")
	<-entered
	if err := alive(h.q); err != nil {
		t.Fatalf("Alive while a delivery hangs: %v", err)
	}

	wedged.Store(true)
	if err := alive(h.q); err == nil || !strings.Contains(err.Error(), "took the probe but did not answer") {
		t.Fatalf("Alive with the loop wedged = %v, want the loop not answering", err)
	}
	wedged.Store(false)
	close(release)
	if err := alive(h.q); err != nil {
		t.Fatalf("Alive after the wedge ended: %v", err)
	}

	close(hang)
	h.waitProcessed("")
	cancel()
	<-done
	if err := alive(h.q); err == nil {
		t.Fatal("Alive after Run returned = nil, want an error")
	}
}
