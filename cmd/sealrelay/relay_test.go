package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// TestRelayPolicies crosses the auth policy with the upstream's behaviour,
// end to end: an application submits one message to the agent, and the test
// checks what the upstream saw and what became of the message.
func TestRelayPolicies(t *testing.T) {
	type upstreamCase struct {
		name  string
		up    upstream.Config
		relay relayOpts // TLS and AllowPlain only
	}
	accepts := upstreamCase{name: "accepts AUTH"}
	rejects := upstreamCase{name: "answers 535", up: upstream.Config{Behavior: upstream.Behavior{
		AuthReply: &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "authentication credentials invalid"}}}}
	noAuth := upstreamCase{name: "offers no AUTH", up: upstream.Config{Behavior: upstream.Behavior{NoAuth: true}}}
	// The upstream offers AUTH in the clear: a trap the agent must not fall into.
	noTLS := upstreamCase{name: "offers no STARTTLS", up: upstream.Config{TLS: upstream.NoTLS, AllowInsecureAuth: true}}
	plain := upstreamCase{name: "tls=none relay", up: upstream.Config{TLS: upstream.NoTLS, AllowInsecureAuth: true},
		relay: relayOpts{TLS: "none"}}
	plainAllowed := upstreamCase{name: "tls=none relay, allow_plaintext_auth", up: upstream.Config{TLS: upstream.NoTLS, AllowInsecureAuth: true},
		relay: relayOpts{TLS: "none", AllowPlain: true}}

	type want struct {
		delivered     bool
		auth          bool   // the upstream saw an AUTH command
		mail          bool   // the upstream saw MAIL
		authenticated bool   // the delivered message came on an authenticated session
		errHas        string // for a deferred message: its last error contains this
	}
	cases := []struct {
		policy string
		up     upstreamCase
		want   want
	}{
		{"required", accepts, want{delivered: true, auth: true, mail: true, authenticated: true}},
		{"required", rejects, want{auth: true, errHas: "535"}},
		{"required", noAuth, want{errHas: "AUTH"}},
		{"required", noTLS, want{errHas: "STARTTLS"}},
		{"required", plain, want{errHas: "plaintext"}},
		{"required", plainAllowed, want{delivered: true, auth: true, mail: true, authenticated: true}},

		{"enabled", accepts, want{delivered: true, auth: true, mail: true, authenticated: true}},
		{"enabled", rejects, want{delivered: true, auth: true, mail: true}},
		{"enabled", noAuth, want{delivered: true, mail: true}},
		{"enabled", noTLS, want{errHas: "STARTTLS"}},
		{"enabled", plain, want{delivered: true, mail: true}},
		{"enabled", plainAllowed, want{delivered: true, auth: true, mail: true, authenticated: true}},

		{"disabled", accepts, want{delivered: true, mail: true}},
		{"disabled", rejects, want{delivered: true, mail: true}},
		{"disabled", noAuth, want{delivered: true, mail: true}},
		{"disabled", noTLS, want{errHas: "STARTTLS"}},
		{"disabled", plain, want{delivered: true, mail: true}},
		{"disabled", plainAllowed, want{delivered: true, mail: true}},
	}
	for _, tc := range cases {
		t.Run(tc.policy+"/"+tc.up.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			rigFiles(t, dir, rigUser, rigPass)
			up := startUpstream(t, dir, tc.up.up)
			r := tc.up.relay
			r.Auth = tc.policy
			a := startAgent(t, rigConfig(t, dir, up.Addr(), r, ""))
			msgID := fmt.Sprintf("<%s.%d@rig>", tc.policy, time.Now().UnixNano())
			if err := send(a.Addr().String(), "app@client.test", "user@example.net", msgID); err != nil {
				t.Fatalf("submitting to the agent: %v", err)
			}

			if tc.want.delivered {
				if err := up.WaitMessages(1, 15*time.Second); err != nil {
					t.Fatalf("upstream never received the message: %v", err)
				}
				m := up.Messages()[0]
				if m.MessageID != msgID {
					t.Errorf("upstream got Message-ID %q, want %q", m.MessageID, msgID)
				}
				if got := m.Username != ""; got != tc.want.authenticated {
					t.Errorf("message authenticated = %v (user %q), want %v", got, m.Username, tc.want.authenticated)
				}
				waitFor(t, 10*time.Second, "the spool to empty", func() bool { return len(a.Queue().List()) == 0 })
			} else {
				// Deferred: still queued, pending, with an error that says why.
				waitFor(t, 15*time.Second, "a failed attempt", func() bool {
					items := a.Queue().List()
					return len(items) == 1 && items[0].Attempts >= 1 && items[0].LastError != ""
				})
				it := onlyItem(t, a.Queue())
				if st := it.Recipients[0].State; st != spool.StatePending {
					t.Errorf("recipient state %s, want pending (deferred, never bounced)", st)
				}
				if !strings.Contains(it.LastError, tc.want.errHas) {
					t.Errorf("last error %q does not mention %q", it.LastError, tc.want.errHas)
				}
				if up.Count() != 0 {
					t.Errorf("upstream received %d messages, want none", up.Count())
				}
			}
			if b := a.Queue().Stats().Bounced; b != 0 {
				t.Errorf("%d DSNs generated, want none", b)
			}

			sawAuth, sawMail := false, false
			for _, s := range up.Sessions() {
				for _, au := range s.Auths {
					sawAuth = true
					if !au.TLS && !r.AllowPlain {
						t.Errorf("session %d: AUTH sent without TLS", s.ID)
					}
				}
				if s.MailIssued() {
					sawMail = true
				}
				if tc.policy == "required" && s.UnauthenticatedMail() {
					t.Errorf("session %d: required policy sent MAIL without authenticating", s.ID)
				}
				if tc.policy == "disabled" && len(s.Auths) > 0 {
					t.Errorf("session %d: disabled policy sent AUTH", s.ID)
				}
			}
			if sawAuth != tc.want.auth {
				t.Errorf("upstream saw AUTH = %v, want %v", sawAuth, tc.want.auth)
			}
			if sawMail != tc.want.mail {
				t.Errorf("upstream saw MAIL = %v, want %v", sawMail, tc.want.mail)
			}
			if tc.policy == "enabled" && tc.want.delivered && !tc.want.authenticated && tc.want.auth {
				if a.Deliverer().Stats().AuthFallbacks == 0 {
					t.Error("fallback to an unauthenticated session was not counted")
				}
				if !strings.Contains(a.logs.String(), "continuing without it (auth = enabled)") {
					t.Error("fallback to an unauthenticated session was not logged")
				}
			}
		})
	}
}
