package deliver

import (
	"maps"
	"slices"
)

// What delivery knows about the secrets its connections rely on, for a
// rotation (docs/credentials.md, "Rotation"): a connection authenticated
// with a secret the source has since replaced is never pooled again (put),
// is closed if it sits idle (the janitor's sweep), and is counted until it
// is gone (OldConnections), so that the old secret is retired only when no
// session relies on it.

// busyLocked records that cn is handed out; put forgets it.
func (r *relay) busyLocked(cn *conn) {
	if r.busy == nil {
		r.busy = map[*conn]struct{}{}
	}
	r.busy[cn] = struct{}{}
}

// OldConnections returns, for each credential entry a relay uses, how many
// of the connections open now, idle in a pool or in use, authenticated
// with a secret other than the one the credential source holds: 0 when
// none.
func (d *Deliverer) OldConnections() map[string]int {
	out := map[string]int{}
	for _, r := range d.relays {
		if r.cfg.Auth == AuthDisabled || r.cfg.Credential == "" {
			continue
		}
		r.mu.Lock()
		conns := slices.Concat(r.idle, slices.Collect(maps.Keys(r.busy)))
		r.mu.Unlock()
		n := 0
		for _, cn := range conns {
			if r.staleCred(cn) {
				n++
			}
		}
		out[r.cfg.Credential] += n
	}
	return out
}

// staleIdle removes and returns the idle connections whose credential was
// replaced. The caller closes them and releases their places.
func (r *relay) staleIdle() []*conn {
	if r.cfg.Auth == AuthDisabled {
		return nil
	}
	// Read before taking the lock: Get may wait for the source.
	cur, err := r.d.creds.Get(r.cfg.Credential)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.takeIdleLocked(func(cn *conn) bool { return staleAgainst(cn, cur, err) })
}
