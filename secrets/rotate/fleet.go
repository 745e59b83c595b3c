package rotate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sealrelay/sealrelay/secrets"
)

// Fleet is the agents a rotation waits for.
type Fleet interface {
	// String names the fleet in messages: "3 agents of rotation.fleet".
	String() string
	// Poll asks every agent what it holds of entry name.
	Poll(ctx context.Context, name string) ([]AgentState, error)
}

// AgentState is one agent's answer.
type AgentState struct {
	Agent string
	// Uses says the agent is configured for the entry at all; Holding is
	// what it holds then.
	Uses    bool
	Holding secrets.Holding
	// Err is why the agent could not say (unreachable, a bad answer).
	Err error
}

// HTTPFleet asks each agent's /generations on its metrics listener.
type HTTPFleet struct {
	// Addrs are host:port, or http:// or https:// URLs of the listeners.
	Addrs []string
	// Client defaults to one with a 5 s timeout.
	Client *http.Client
}

func (f *HTTPFleet) String() string {
	if len(f.Addrs) == 1 {
		return "1 agent of rotation.fleet"
	}
	return fmt.Sprintf("%d agents of rotation.fleet", len(f.Addrs))
}

// Poll asks every agent at once.
func (f *HTTPFleet) Poll(ctx context.Context, name string) ([]AgentState, error) {
	client := f.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	out := make([]AgentState, len(f.Addrs))
	var wg sync.WaitGroup
	for i, a := range f.Addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = ask(ctx, client, a, name)
		}()
	}
	wg.Wait()
	return out, nil
}

// ask reads one agent's /generations.
func ask(ctx context.Context, client *http.Client, addr, name string) AgentState {
	st := AgentState{Agent: addr}
	u := addr
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	u = strings.TrimSuffix(u, "/") + "/generations"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		st.Err = err
		return st
	}
	resp, err := client.Do(req)
	if err != nil {
		st.Err = fmt.Errorf("unreachable: %w", unwrapURL(err))
		return st
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		st.Err = fmt.Errorf("answered %s (a sealrelay agent older than generations, or not an agent)", resp.Status)
		return st
	}
	var held map[string]secrets.Holding
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&held); err != nil {
		st.Err = fmt.Errorf("answered something that is not a generations report")
		return st
	}
	st.Holding, st.Uses = held[name]
	return st
}

// unwrapURL drops the *url.Error wrapper, which repeats the URL.
func unwrapURL(err error) error {
	if u, ok := err.(interface{ Unwrap() error }); ok && strings.HasPrefix(err.Error(), "Get ") {
		return u.Unwrap()
	}
	return err
}

// ReportFleet is the agents that report to a store (Vault's agents_path).
type ReportFleet struct {
	// Where names the reports: "the agents reporting to vault .../sealrelay-agents".
	Where string
	// Reports reads every report, and which could not be read.
	Reports func(ctx context.Context) ([]secrets.AgentReport, map[string]error, error)
}

func (f *ReportFleet) String() string { return f.Where }

// Poll reads every report.
func (f *ReportFleet) Poll(ctx context.Context, name string) ([]AgentState, error) {
	reports, bad, err := f.Reports(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]AgentState, 0, len(reports))
	for _, r := range reports {
		st := AgentState{Agent: r.Agent, Err: bad[r.Agent]}
		st.Holding, st.Uses = r.Credentials[name]
		out = append(out, st)
	}
	return out, nil
}

// fleetView sums up one poll: who still holds what.
type fleetView struct {
	total, using, ok int
	waiting          []string // "agent (why)"
}

// view checks every answer against the generation wanted.
func view(states []AgentState, want string) fleetView {
	v := fleetView{total: len(states)}
	for _, s := range states {
		why := ""
		switch {
		case s.Err != nil:
			why = s.Err.Error()
		case !s.Uses:
			continue // not configured for this entry: it holds no secret of it
		case !s.Holding.Loaded:
			why = "has not loaded the entry"
		case s.Holding.Generation != want:
			why = "holds generation " + orNone(s.Holding.Generation)
		case s.Holding.PooledOld > 0:
			why = fmt.Sprintf("%d relay connection%s still on the old secret", s.Holding.PooledOld, plural(s.Holding.PooledOld))
		}
		if s.Err == nil {
			v.using++
		}
		if why != "" {
			v.waiting = append(v.waiting, s.Agent+" ("+why+")")
		} else {
			v.ok++
		}
	}
	return v
}

func orNone(g string) string {
	if g == "" {
		return "(none)"
	}
	return g
}

// done reports whether every agent holds the generation: at least one
// agent uses the entry, and none is waited for.
func (v fleetView) done() bool { return v.using > 0 && len(v.waiting) == 0 }

// summary says where the fleet stands, in a line.
func (v fleetView) summary(want string) string {
	if v.total == 0 {
		return "no agent in the fleet"
	}
	if v.using == 0 && len(v.waiting) == 0 {
		return fmt.Sprintf("none of %d agents uses the entry", v.total)
	}
	if len(v.waiting) == 0 {
		return fmt.Sprintf("%d of %d agents hold generation %s, with no connection on the old secret", v.ok, v.total, want)
	}
	return fmt.Sprintf("%d of %d agents hold generation %s; waiting for %s", v.ok, v.total, want, strings.Join(v.waiting, ", "))
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
