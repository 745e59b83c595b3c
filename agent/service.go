package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sealrelay/sealrelay/agent/sdnotify"
)

// Running as a systemd service (Type=notify, WatchdogSec=): the agent says
// READY=1 once the listener serves (the spool takes new mail while what
// was queued still loads), pings the watchdog while the accept loop and
// the spool's scheduler loop are alive, says RELOADING=1 and READY=1
// around a credential reload and STOPPING=1 when the drain starts, and
// keeps a STATUS= line with the queue size. Without NOTIFY_SOCKET none of
// this happens.

// service is the agent's side of the service protocol while Run runs.
type service struct {
	n         *sdnotify.Notifier
	a         *Agent
	accept    *acceptWatch
	queueDone <-chan struct{}
	stop      context.CancelFunc
	wg        sync.WaitGroup
}

// startService says READY=1 and starts feeding the watchdog. Call it once
// the listener serves and the scheduler runs.
func (a *Agent) startService(ctx context.Context, accept *acceptWatch, queueDone <-chan struct{}) *service {
	s := &service{n: sdnotify.New(a.log.With("component", "systemd")), a: a, accept: accept, queueDone: queueDone}
	if !s.n.Enabled() {
		return s
	}
	ctx, s.stop = context.WithCancel(ctx)
	s.n.Ready(s.status())
	if iv := s.n.WatchdogInterval(); iv > 0 {
		a.log.Info("systemd watchdog on", "interval", iv)
	}
	s.wg.Go(func() { s.n.Run(ctx, s.alive, s.status) })
	a.svc.Store(s)
	return s
}

// stopping says STOPPING=1 and stops the watchdog pings: systemd does not
// watch a service that is stopping (TimeoutStopSec= bounds the drain).
func (s *service) stopping() {
	if !s.n.Enabled() {
		return
	}
	s.a.svc.Store(nil)
	s.stop()
	s.wg.Wait()
	s.n.Stopping("stopping: finishing sessions and deliveries in progress")
}

// alive is the watchdog's liveness check: the accept loop is waiting for a
// connection or came back from one recently, and the scheduler loop
// answers a probe.
func (s *service) alive(ctx context.Context) error {
	select {
	case <-s.queueDone:
		return errors.New("the spool's scheduler loop has ended")
	default:
	}
	if err := s.accept.alive(s.n.WatchdogInterval() / 2); err != nil {
		return err
	}
	return s.a.queue.Alive(ctx)
}

// status is the STATUS= line.
func (s *service) status() string {
	return fmt.Sprintf("listening on %s; %d queued", s.a.ln.Addr(), s.a.queue.Stats().Queued)
}

// reloading says RELOADING=1 if the agent runs as a service, and returns
// the function that says READY=1 when the reload is done.
func (a *Agent) reloading() func() {
	s := a.svc.Load()
	if s == nil {
		return func() {}
	}
	s.n.Reloading()
	return func() { s.n.Ready(s.status()) }
}

// acceptWatch wraps the listener the SMTP server accepts on, to see that
// its accept loop is alive without needing traffic: the loop is alive
// while it waits in Accept, and for a while after each return from it.
type acceptWatch struct {
	net.Listener
	waiting atomic.Bool
	left    atomic.Int64 // when Accept last returned (Unix nanoseconds)
}

func watchAccept(l net.Listener) *acceptWatch {
	w := &acceptWatch{Listener: l}
	w.left.Store(time.Now().UnixNano())
	return w
}

func (w *acceptWatch) Accept() (net.Conn, error) {
	w.waiting.Store(true)
	c, err := w.Listener.Accept()
	w.left.Store(time.Now().UnixNano())
	w.waiting.Store(false)
	return c, err
}

// alive returns an error if the accept loop has been away from Accept for
// longer than limit.
func (w *acceptWatch) alive(limit time.Duration) error {
	if w.waiting.Load() {
		return nil
	}
	away := time.Since(time.Unix(0, w.left.Load()))
	if away <= limit {
		return nil
	}
	return fmt.Errorf("the listener's accept loop has not come back for %s", away.Round(time.Millisecond))
}
