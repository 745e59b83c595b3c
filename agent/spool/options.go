package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"
)

// Options configure a Queue. Zero values take the defaults named.
type Options struct {
	// Dir is the spool directory, created with mode 0700 if missing
	// (required). It and the directory holding it (the agent's data_dir)
	// must belong to the user the process runs as and be writable by no
	// one else; Open refuses them otherwise.
	Dir         string
	Hostname    string        // names this host in DSNs (MAILER-DAEMON@Hostname, Reporting-MTA); default os.Hostname()
	MinBackoff  time.Duration // delay before the first retry; default DefaultMinBackoff
	MaxBackoff  time.Duration // longest delay between retries; default DefaultMaxBackoff
	MaxLifetime time.Duration // a recipient still pending after this long fails; default DefaultMaxLifetime
	Workers     int           // concurrent deliveries; default DefaultWorkers
	// DrainTimeout is how long Run waits, after its context ends, for
	// in-flight deliveries to finish before cancelling them; default
	// DefaultDrainTimeout.
	DrainTimeout time.Duration
	Logger       *slog.Logger // default: discard
	// MemoryBudget bounds the bytes of message bodies held in memory at
	// once by the Puts in progress; a message that does not fit streams to
	// a file of its own instead (see membuf.go). Default 32 MiB.
	MemoryBudget int64

	// Test seams for this package's tests: the clock and the jitter source
	// (a value in [0, 1)), nil meaning time.Now and math/rand; and a
	// function called after each delivery attempt has been recorded.
	testNow       func() time.Time
	testRand      func() float64
	testProcessed func(id string)
	// testNoJournal sends every message to files of its own, for tests of
	// that path.
	testNoJournal bool
}

// Defaults for Options.
const (
	DefaultMinBackoff   = 30 * time.Second
	DefaultMaxBackoff   = 30 * time.Minute
	DefaultMaxLifetime  = 120 * time.Hour
	DefaultWorkers      = 20
	DefaultDrainTimeout = 30 * time.Second
	DefaultMemoryBudget = 32 << 20
)

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, errors.New("spool: no directory given")
	}
	if o.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		o.Hostname = h
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.MinBackoff, DefaultMinBackoff)
	def(&o.MaxBackoff, DefaultMaxBackoff)
	def(&o.MaxLifetime, DefaultMaxLifetime)
	def(&o.DrainTimeout, DefaultDrainTimeout)
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.MemoryBudget == 0 {
		o.MemoryBudget = DefaultMemoryBudget
	}
	switch {
	case o.MinBackoff < 0 || o.MaxBackoff < 0 || o.MaxLifetime < 0 || o.DrainTimeout < 0:
		return o, errors.New("spool: negative duration in options")
	case o.MaxBackoff < o.MinBackoff:
		return o, fmt.Errorf("spool: max backoff %s is shorter than min backoff %s", o.MaxBackoff, o.MinBackoff)
	case o.Workers < 0:
		return o, fmt.Errorf("spool: workers must be positive, not %d", o.Workers)
	case o.MemoryBudget < 0:
		return o, fmt.Errorf("spool: memory budget must be positive, not %d", o.MemoryBudget)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.testNow == nil {
		o.testNow = time.Now
	}
	if o.testRand == nil {
		o.testRand = rand.Float64
	}
	return o, nil
}
