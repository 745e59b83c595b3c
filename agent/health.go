package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// The metrics listener also answers /healthz and /readyz:
//
//   - /healthz: 200 while the process serves HTTP at all (liveness).
//   - /readyz: 200 when the agent can take mail and pass it on: the spool
//     can be written (a probe file written and fsynced there), every
//     credential the config names is loaded, and at least one relay is
//     usable (its last attempt got a connection ready for mail) or not yet
//     tried; 503 otherwise, and while the agent drains. The JSON body says
//     which check failed, in fixed words: no secret, path or relay reply.

// probeEvery bounds how often /readyz writes the spool's probe file.
const probeEvery = time.Second

// readiness is the body of /readyz.
type readiness struct {
	Status      string        `json:"status"`           // "ready" or "unready"
	Failed      []string      `json:"failed,omitempty"` // the checks that failed: spool, credentials, relays, stopping
	Spool       string        `json:"spool"`
	Credentials string        `json:"credentials"`
	Relays      []relayStatus `json:"relays"`
}

// relayStatus is one relay in /readyz.
type relayStatus struct {
	Name   string     `json:"name"`
	State  string     `json:"state"` // usable, unusable or untried
	Since  *time.Time `json:"since,omitempty"`
	Reason string     `json:"reason,omitempty"` // why it is unusable, one of deliver.Reasons()
}

// health answers /healthz and /readyz for a.
type health struct {
	a *Agent

	mu       sync.Mutex // one spool probe at a time
	probedAt time.Time
	probeErr error
}

func (h *health) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (h *health) readyz(w http.ResponseWriter, _ *http.Request) {
	r := h.check()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if r.Status != "ready" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(r) //nolint:errcheck // the client went away
}

// check runs the readiness checks.
func (h *health) check() readiness {
	r := readiness{Status: "ready", Spool: "ok", Credentials: "ok"}
	fail := func(check string) { r.Failed = append(r.Failed, check) }

	if err := h.probe(); err != nil {
		r.Spool = "cannot write: " + errnoText(err)
		fail("spool")
	}

	if names := h.a.store.Names(); len(names) == 0 {
		r.Credentials = "none configured"
	} else {
		loaded := 0
		for _, n := range names {
			if _, err := h.a.store.Get(n); err == nil {
				loaded++
			}
		}
		if loaded < len(names) {
			r.Credentials = fmt.Sprintf("not loaded: %d of %d entries", len(names)-loaded, len(names))
			fail("credentials")
		}
	}

	anyUsable := false
	for _, rs := range h.a.deliv.Relays() {
		s := relayStatus{Name: rs.Name, State: "untried"}
		if rs.Tried {
			since := rs.Since.UTC()
			s.Since = &since
			s.State = "usable"
			if !rs.Usable {
				s.State, s.Reason = "unusable", rs.Reason
			}
		}
		anyUsable = anyUsable || s.State != "unusable"
		r.Relays = append(r.Relays, s)
	}
	if !anyUsable {
		fail("relays")
	}

	if h.a.draining.Load() {
		fail("stopping")
	}
	if len(r.Failed) > 0 {
		r.Status = "unready"
	}
	return r
}

// probe writes the spool's probe file, at most once per probeEvery; in
// between it answers with the last result.
func (h *health) probe() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now := time.Now(); h.probedAt.IsZero() || now.Sub(h.probedAt) >= probeEvery || now.Before(h.probedAt) {
		h.probeErr = h.a.queue.ProbeWrite()
		h.probedAt = time.Now()
	}
	return h.probeErr
}

// errnoText is the system's word for why err happened ("read-only file
// system"), or a fixed text: never the path or other detail.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return "write failed"
}
