package secrets

import "time"

// Holding is what an agent says about one credential it is configured
// for: the generation it holds, since when, and how many of its relay
// connections still rely on a secret it no longer holds. It holds nothing
// secret and nothing derived from a secret (docs/credentials.md,
// "Generations"), so it may be served over plain HTTP and written to
// Vault for the rotation to read.
type Holding struct {
	// Generation is the entry's generation id; "" if the entry has none
	// (written before generations) or is not loaded.
	Generation string `json:"generation"`
	// Since is when the agent first held this generation.
	Since time.Time `json:"since,omitzero"`
	// Loaded says the agent has read the entry at all.
	Loaded bool `json:"loaded"`
	// PooledOld counts the relay connections, idle in the pool or in use,
	// that authenticated with a secret other than the one held now.
	PooledOld int `json:"pooled_old"`
}

// AgentReport is what an agent writes where the rotation can read it when
// the agents cannot be reached directly (Vault): its name, when it wrote
// the report, and its holdings by entry name.
type AgentReport struct {
	Agent       string             `json:"agent"`
	Updated     time.Time          `json:"updated"`
	Credentials map[string]Holding `json:"credentials"`
}

// Holdings returns, for each entry the Store has loaded, its generation
// and since when the Store holds it (Loaded true). Entries not loaded
// are left out. It never waits for the source.
func (s *Store) Holdings() map[string]Holding {
	cur := *s.cur.Load()
	since := *s.since.Load()
	out := make(map[string]Holding, len(cur))
	for n, c := range cur {
		out[n] = Holding{Generation: c.Generation, Since: since[n], Loaded: true}
	}
	return out
}
