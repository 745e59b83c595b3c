package main

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// load submits messages to agents one after another until stopped: the
// steady traffic of the rotation tests.
type load struct {
	mu       sync.Mutex
	accepted map[string]time.Time // Message-ID -> when the agent took it (the client's session ended)
	started  map[string]time.Time // Message-ID -> when the client began to submit it
	refused  int
	stopc    chan struct{}
	done     chan struct{}
}

// startLoad starts sending to addr, with Message-IDs <prefix.N@rig>.
func startLoad(addr, prefix string) *load {
	return startLoadOver([]string{addr}, prefix, 5*time.Millisecond)
}

// startLoadOver sends to each of addrs in turn, gap apart, with
// Message-IDs <prefix.N@rig>.
func startLoadOver(addrs []string, prefix string, gap time.Duration) *load {
	l := &load{accepted: map[string]time.Time{}, started: map[string]time.Time{}, stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.stopc:
				return
			default:
			}
			id := fmt.Sprintf("<%s.%d@rig>", prefix, i)
			begun := time.Now()
			err := send(addrs[i%len(addrs)], "app@client.test", "user@example.net", id)
			l.mu.Lock()
			if err == nil {
				l.accepted[id] = time.Now()
				l.started[id] = begun
			} else {
				l.refused++
			}
			l.mu.Unlock()
			time.Sleep(gap)
		}
	}()
	return l
}

// stop ends the load and returns what the agent took and how many
// submissions it refused.
func (l *load) stop() (accepted map[string]time.Time, refused int) {
	close(l.stopc)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted, l.refused
}

// startedAt returns, for each message the agent took, when its submission
// began: its delivery cannot have started before then. Call it after stop.
func (l *load) startedAt() map[string]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.started
}

// outcome is what became of a load's messages at the relay.
type outcome struct {
	accepted, refused, lost, bounced, deferred int
	delivered                                  map[string]upstream.Message // the first copy of each, by Message-ID
	maxDelay                                   time.Duration
}

func (o outcome) String() string {
	return fmt.Sprintf("accepted=%d delivered=%d lost=%d bounced=%d refused=%d max-delay=%s deferred=%d",
		o.accepted, len(o.delivered), o.lost, o.bounced, o.refused, o.maxDelay.Round(time.Millisecond), o.deferred)
}

// tally counts what became of the accepted messages (after waitRelayed)
// and fails the test if one was lost or bounced (a DSN made, or one at
// the relay), if a submission was refused, or if fewer than 100 were
// sent.
func tally(t *testing.T, a *runningAgent, up *upstream.Server, accepted map[string]time.Time, refused int) outcome {
	t.Helper()
	o := outcome{accepted: len(accepted), refused: refused, delivered: map[string]upstream.Message{},
		bounced: int(a.Queue().Stats().Bounced), deferred: int(a.Queue().Stats().Deferred)}
	for _, m := range up.Messages() {
		if m.From == "" {
			o.bounced++
		}
		if _, ok := o.delivered[m.MessageID]; !ok {
			o.delivered[m.MessageID] = m
		}
	}
	for id, at := range accepted {
		m, ok := o.delivered[id]
		if !ok {
			o.lost++
			continue
		}
		o.maxDelay = max(o.maxDelay, m.Time.Sub(at))
	}
	if o.lost != 0 || o.bounced != 0 {
		t.Errorf("lost %d, bounced %d; both must be 0", o.lost, o.bounced)
	}
	if refused != 0 {
		t.Errorf("%d submissions refused during rotation", refused)
	}
	if len(accepted) < 100 {
		t.Errorf("only %d messages sent: the load did not run", len(accepted))
	}
	return o
}
