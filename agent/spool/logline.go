package spool

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"time"
)

// The status of a recipient after one delivery attempt, as the log line
// gives it.
const (
	logSent     = "sent"     // the relay took it
	logDeferred = "deferred" // it stays pending: tried again later
	logBounced  = "bounced"  // it failed for good; the sender gets a DSN
	logExpired  = "expired"  // it was pending at queue.max_lifetime; the sender gets a DSN
	logHeld     = "held"     // it failed and the sender is <>: kept in the queue, failed, for an operator
)

// maxReplyLog bounds the relay's reply quoted in a log line.
const maxReplyLog = 200

// logAttempt writes the line that records what one delivery attempt did
// for recipient r of env, res being the Deliverer's result. There is one
// such line per recipient and attempt, as Postfix writes, so that each
// line has one status and one code; the lines of one attempt share id and
// attempt. Every field is a fixed word, a number, an address, or text the
// delivery code built to be safe to show (no secret, the relay's reply to
// AUTH withheld).
func (q *Queue) logAttempt(env *envelope, r *recipient, res RcptResult, now time.Time) {
	level, status, dsn := slog.LevelInfo, logSent, "2.0.0"
	switch {
	case r.State == StateDelivered:
		if statusCode.MatchString(res.Enhanced) && res.Enhanced[0] == '2' {
			dsn = res.Enhanced
		}
	case r.State == StatePending:
		status, dsn = logDeferred, "4.0.0"
		if statusCode.MatchString(res.Enhanced) {
			// A 5xx that defers (an authentication failure) is a
			// transient failure here: class 4, as Postfix's soft bounce.
			dsn = "4" + res.Enhanced[1:]
		}
	case env.From == "":
		level, status, dsn = slog.LevelWarn, logHeld, r.Status
	case r.Status == statusExpired:
		level, status, dsn = slog.LevelWarn, logExpired, r.Status
	default:
		level, status, dsn = slog.LevelWarn, logBounced, r.Status
	}
	relay := res.Relay
	if relay == "" {
		relay = "none"
	}
	attrs := []slog.Attr{
		slog.String("id", env.ID),
		slog.String("to", r.Address),
		slog.String("relay", relay),
		slog.String("status", status),
		slog.Int("attempt", env.Attempts),
		slog.Any("delay", seconds(now.Sub(env.Received))),
		slog.String("dsn", dsn),
	}
	if res.Code != 0 {
		attrs = append(attrs, slog.Int("code", res.Code))
	}
	if res.Reason != "" && status != logSent {
		attrs = append(attrs, slog.String("reason", res.Reason))
	}
	if status == logSent && res.Reply != "" {
		attrs = append(attrs, slog.String("reply", oneLine(res.Reply, maxReplyLog)))
	}
	if r.LastError != "" {
		attrs = append(attrs, slog.String("err", r.LastError))
	}
	q.log.LogAttrs(context.Background(), level, "delivery attempt", attrs...)
}

// seconds is a duration in seconds with millisecond precision, as a
// number in both log formats: delay=1.234 in text, "delay":1.234 in JSON
// (a time.Duration would be 1.234s in one and nanoseconds in the other).
func seconds(d time.Duration) json.Number {
	return json.Number(strconv.FormatFloat(d.Seconds(), 'f', 3, 64))
}
