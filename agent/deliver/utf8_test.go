package deliver

import (
	"slices"
	"strings"
	"testing"

	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestSMTPUTF8Relay: non-ASCII addresses go to a relay that offers
// SMTPUTF8 with the SMTPUTF8 parameter; to one that does not, there is no
// downgrade: a non-ASCII recipient fails for good with 5.6.7 (the spool
// then sends a DSN) while the ASCII ones of the same message are
// delivered, and a non-ASCII sender fails every recipient.
func TestSMTPUTF8Relay(t *testing.T) {
	t.Run("offered", func(t *testing.T) {
		u := startUpstream(t, upstream.Config{SMTPUTF8: true})
		h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
		m := message("jörg@münchen.example", "ascii@example.org")
		m.From = "absender@bücher.example"
		if res := h.d.Deliver(t.Context(), m); statuses(res) != "delivered,delivered" {
			t.Fatalf("%+v", res)
		}
		got := u.Messages()
		if len(got) != 1 || got[0].From != "absender@bücher.example" || !slices.Equal(got[0].To, []string{"jörg@münchen.example", "ascii@example.org"}) {
			t.Errorf("upstream got %+v", got)
		}
	})
	t.Run("not offered", func(t *testing.T) {
		u := startUpstream(t, upstream.Config{})
		h := newDeliverer(t, newCreds(testPass), relayTo(u, AuthRequired))
		res := h.d.Deliver(t.Context(), message("jörg@münchen.example", "ascii@example.org"))
		if statuses(res) != "permanent,delivered" {
			t.Fatalf("%s %+v", statuses(res), res)
		}
		if r := res[0]; r.Enhanced != "5.6.7" || r.Code != 0 || !strings.Contains(r.Err.Error(), "does not offer SMTPUTF8, which this non-ASCII address needs (no downgrade)") {
			t.Errorf("non-ASCII recipient: %+v", r)
		}
		if got := u.Messages(); len(got) != 1 || !slices.Equal(got[0].To, []string{"ascii@example.org"}) {
			t.Errorf("upstream got %+v, want the ASCII recipient only", got)
		}

		m := message("ascii@example.org")
		m.From = "jörg@münchen.example"
		res = h.d.Deliver(t.Context(), m)
		if statuses(res) != "permanent" || res[0].Enhanced != "5.6.7" || !strings.Contains(res[0].Err.Error(), "non-ASCII sender") {
			t.Errorf("non-ASCII sender: %+v", res)
		}
		if n := len(u.Messages()); n != 1 {
			t.Errorf("upstream has %d messages, want still 1", n)
		}
	})
}
