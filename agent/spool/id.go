package spool

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// idLen is the length of an item ID: 16 hex digits of the receive time in
// nanoseconds (so IDs sort by time) and 8 of randomness (so they are unique
// even within a nanosecond or across a clock step back).
const idLen = 24

// newID returns a fresh item ID for a message received at t.
func newID(t time.Time) string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixNano()))
	rand.Read(b[8:]) // never fails (crypto/rand panics rather than return an error)
	return hex.EncodeToString(b[:])
}

// validID reports whether s has the shape of an item ID. Only such names are
// treated as spool items, and it keeps IDs safe as file names.
func validID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
