package spool

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

// gatedSync is a groupSync whose runs each wait for a value on release
// (the error that run returns).
func gatedSync() (g *groupSync, release chan error, runs *atomic.Int32) {
	g = &groupSync{}
	g.cond.L = &g.mu
	release = make(chan error)
	runs = &atomic.Int32{}
	g.fn = func() error {
		runs.Add(1)
		return <-release
	}
	return g, release, runs
}

// TestGroupSyncBatches: callers that arrive while a directory fsync is in
// progress are not covered by it (their renames may postdate it), and all
// of them share the next one.
func TestGroupSyncBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, release, runs := gatedSync()
		var wg sync.WaitGroup
		var returned atomic.Int32
		call := func() {
			wg.Go(func() {
				if err := g.sync(); err != nil {
					t.Errorf("sync: %v", err)
				}
				returned.Add(1)
			})
		}
		call() // A starts run 1
		synctest.Wait()
		call() // B, C, D arrive during run 1
		call()
		call()
		synctest.Wait()
		release <- nil // run 1 ends: only A is covered
		synctest.Wait()
		if r, n := returned.Load(), runs.Load(); r != 1 || n != 2 {
			t.Fatalf("after run 1: %d callers returned and %d runs started, want 1 and 2", r, n)
		}
		release <- nil // run 2 covers B, C and D together
		wg.Wait()
		if n := runs.Load(); n != 2 {
			t.Errorf("%d runs for 4 callers, want 2", n)
		}
	})
}

// TestGroupSyncErrors: every caller covered by a failed run gets its
// error, and a later success does not hide it from them.
func TestGroupSyncErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, release, _ := gatedSync()
		errDisk := errors.New("fsync spool: input/output error")
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Go(func() { errs[i] = g.sync() })
			synctest.Wait()
		}
		release <- nil     // run 1: caller 0
		release <- errDisk // run 2: callers 1 and 2
		wg.Wait()
		if errs[0] != nil || errs[1] != errDisk || errs[2] != errDisk {
			t.Fatalf("errors = %v, want [nil, %v, %v]", errs, errDisk, errDisk)
		}
		go func() { release <- nil }()
		if err := g.sync(); err != nil {
			t.Errorf("sync after the failure: %v, want nil", err)
		}
	})
}
