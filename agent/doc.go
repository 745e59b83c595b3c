// Package agent wires sealrelay together: the inbound listener (smtpd)
// and the maildrop's pickup (what sendmail leaves) feed the durable spool,
// whose scheduler hands messages to the delivery code, which routes them
// and authenticates to the relays with credentials from a secrets.Store.
// Its configuration comes from agent/config. The metrics listener serves
// /metrics, /healthz, /readyz and /generations, which says, per
// credential, the generation the agent holds and how many relay
// connections still rely on a replaced secret, never the secret; with a
// source that keeps reports (Vault) the agent writes the same there.
//
// The agent never chooses a credential source: the command line builds the
// secrets.Source (an age file or Vault) and passes it in.
package agent
