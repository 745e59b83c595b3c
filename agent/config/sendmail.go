package config

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/sealrelay/sealrelay/internal/addrpat"
)

// Sendmail is the [sendmail] table: the sendmail command and the maildrop
// (docs/maildrop.md).
type Sendmail struct {
	Allow []SenderRule `toml:"allow" example:"commented" doc:"Envelope senders some local users may give with sendmail -f. Without a rule, a user other than root and the agent's own user sends as login@hostname, whatever -f says."`
}

// SenderRule is one [[sendmail.allow]]: senders that some users may give.
type SenderRule struct {
	Users   []string `toml:"users" example:"[\"www-data\"]" doc:"Login names the rule is for; * is every user."`
	Groups  []string `toml:"groups" example:"[\"mailers\"]" doc:"Groups whose members (primary or supplementary) the rule is for."`
	Senders []string `toml:"senders" example:"[\"noreply@example.com\", \"*@apps.example.com\"]" doc:"The senders they may give: addresses, @domain, wildcards with *, or <> for the null sender."`
}

// MaildropDir is the maildrop: where sendmail leaves messages for the
// agent, in data_dir.
func (c *Config) MaildropDir() string { return filepath.Join(c.DataDir, "maildrop") }

// validateSendmail checks [sendmail].
func (c *Config) validateSendmail() error {
	for i, r := range c.Sendmail.Allow {
		for j, u := range r.Users {
			if u == "" || strings.ContainsAny(u, " :\t\n") {
				return c.bad(fmt.Sprintf("sendmail.allow[%d].users[%d]", i, j), "%q is not a login name", u)
			}
		}
		for j, g := range r.Groups {
			if g == "" || strings.ContainsAny(g, " :\t\n") {
				return c.bad(fmt.Sprintf("sendmail.allow[%d].groups[%d]", i, j), "%q is not a group name", g)
			}
		}
		for j, p := range r.Senders {
			if _, err := addrpat.ParseSender(p); err != nil {
				return c.bad(fmt.Sprintf("sendmail.allow[%d].senders[%d]", i, j), "%v", err)
			}
		}
	}
	return nil
}
