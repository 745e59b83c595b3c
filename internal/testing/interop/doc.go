// Package interop holds sealrelay's tests against real MTAs: Postfix from
// Debian as a client that relays into sealrelay and as a relay host that
// demands SASL AUTH over STARTTLS, and OpenSMTPD as a strict relay host.
// It has no code of its own: the setup on disk and the built binary come
// from internal/rig, the servers from internal/testing/peers.
package interop
