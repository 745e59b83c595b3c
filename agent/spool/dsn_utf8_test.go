package spool

import (
	"bytes"
	"strings"
	"testing"
)

// TestDSNNonASCIIRecipient: a recipient with a non-ASCII address (one a
// relay without SMTPUTF8 refused with 5.6.7) is reported with type utf-8
// and RFC 6533's \x{HEX} escapes, so the report stays ASCII and names
// the address without loss.
func TestDSNNonASCIIRecipient(t *testing.T) {
	d := goldenDSN()
	d.Failed = []recipient{{Address: "jörg+x@münchen.example", State: StateFailed, Status: "5.6.7",
		LastError: "relay up does not offer SMTPUTF8, which this non-ASCII address needs (no downgrade)"}}
	raw := buildDSN(d)
	for _, want := range []string{
		"Final-Recipient: utf-8; j\\x{F6}rg\\x{2B}x@m\\x{FC}nchen.example\r\n",
		"Status: 5.6.7\r\n",
		"<j\\x{F6}rg\\x{2B}x@m\\x{FC}nchen.example>: relay up does not offer SMTPUTF8",
	} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("DSN lacks %q:\n%s", want, raw)
		}
	}
	if i := strings.IndexFunc(string(raw), func(r rune) bool { return r > 0x7e }); i >= 0 {
		t.Errorf("DSN holds a non-ASCII character at %d", i)
	}
}
