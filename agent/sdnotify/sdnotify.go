// Package sdnotify speaks the systemd service protocol (sd_notify) for the
// agent: it says when the agent is ready, reloading or stopping, shows a
// one-line status, and feeds the service watchdog while a liveness check
// passes.
//
// Promises: without NOTIFY_SOCKET in the environment (the process was not
// started by systemd as Type=notify) every method does nothing and nothing
// is sent. WATCHDOG=1 is sent only right after the liveness check passed;
// a check that fails or hangs stops the pings, so systemd (WatchdogSec=)
// restarts the process. Messages carry states, counts and addresses, never
// a configuration or credential value.
package sdnotify

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends state changes to systemd. Its methods are safe for
// concurrent use.
type Notifier struct {
	log      *slog.Logger
	enabled  bool          // NOTIFY_SOCKET is set
	watchdog time.Duration // WATCHDOG_USEC for this process; 0: no watchdog

	mu     sync.Mutex
	failed bool // the last send failed (logged once per failure streak)
}

// New reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. A watchdog
// setting that cannot be parsed is logged and ignored.
func New(log *slog.Logger) *Notifier {
	// The environment is left in place: the protocol is stateless, and
	// with NotifyAccess=main systemd ignores what child processes send.
	n := &Notifier{log: log, enabled: os.Getenv("NOTIFY_SOCKET") != ""}
	if !n.enabled {
		return n
	}
	iv, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog setting ignored", "err", err)
	}
	n.watchdog = iv
	return n
}

// Enabled reports whether the process runs under systemd's notify protocol.
func (n *Notifier) Enabled() bool { return n.enabled }

// WatchdogInterval is the interval systemd expects pings within (0: none).
func (n *Notifier) WatchdogInterval() time.Duration { return n.watchdog }

// Ready says that start-up (or a reload) is done.
func (n *Notifier) Ready(status string) { n.send(daemon.SdNotifyReady, status) }

// Reloading says that a reload began; Ready ends it.
func (n *Notifier) Reloading() {
	// systemd 253 and later want the time the reload began.
	n.send(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec())
}

// Stopping says that the process is shutting down.
func (n *Notifier) Stopping(status string) { n.send(daemon.SdNotifyStopping, status) }

// Status sets the line `systemctl status` shows.
func (n *Notifier) Status(status string) { n.send("", status) }

// Run feeds the watchdog until ctx ends: every half watchdog interval it
// runs check, with a deadline of a quarter interval, and sends WATCHDOG=1
// only if check returned nil. Each round also sets the status line from
// status (after a passing check only: status may need the parts check
// vouched for). Without a watchdog, Run returns at once.
func (n *Notifier) Run(ctx context.Context, check func(context.Context) error, status func() string) {
	if !n.enabled || n.watchdog <= 0 {
		return
	}
	tick := time.NewTicker(n.watchdog / 2)
	defer tick.Stop()
	var stuck error
	for {
		cctx, cancel := context.WithTimeout(ctx, n.watchdog/4)
		err := check(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			if stuck != nil {
				n.log.Info("watchdog: the agent is alive again; pinging systemd")
			}
			n.send(daemon.SdNotifyWatchdog, status())
		case stuck == nil || err.Error() != stuck.Error():
			n.log.Error("watchdog: not pinging systemd, which restarts the agent when the watchdog interval passes",
				"err", err, "interval", n.watchdog)
			n.send("", "not alive: "+err.Error())
		}
		stuck = err
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// send sends state and, if given, a STATUS= line.
func (n *Notifier) send(state string, status ...string) {
	if !n.enabled {
		return
	}
	msg := state
	for _, s := range status {
		if s == "" {
			continue
		}
		if msg != "" && msg[len(msg)-1] != '\n' {
			msg += "\n"
		}
		msg += "STATUS=" + oneLine(s)
	}
	if msg == "" {
		return
	}
	_, err := daemon.SdNotify(false, msg)
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case err != nil && !n.failed:
		n.log.Warn("cannot notify systemd", "err", fmt.Errorf("NOTIFY_SOCKET: %w", err))
	case err == nil && n.failed:
		n.log.Info("notifying systemd again")
	}
	n.failed = err != nil
}

// oneLine keeps a status to one line: a newline would start a new
// assignment in the message.
func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\r' {
			b[i] = ' '
		}
	}
	return string(b)
}
