package config

import (
	"fmt"
	"slices"

	"github.com/sealrelay/sealrelay/internal/addrpat"
)

// Limits are the outbound rate limits of a [[relay]] or a [[route]]. Mail
// above a limit waits in the queue; it is never failed or bounced for it.
type Limits struct {
	MaxMessagesPerMinute    int `toml:"max_messages_per_minute" doc:"The most messages sent per minute, spread evenly over the minute. Above it mail waits in the queue; it never bounces. Zero: no limit."`
	MaxMessagesPerSecond    int `toml:"max_messages_per_second" doc:"The same per second, for fast relays; set one of the two. Zero: no limit."`
	MaxRecipientsPerMessage int `toml:"max_recipients_per_message" doc:"The most recipients in one transaction: a message with more is sent as several, each counted as a message by the limits above. Zero: no limit."`
}

// Route is one [[route]]: the relays, in order, for mail whose sender or
// recipient domain matches. docs/routes.md describes how routes are
// chosen.
type Route struct {
	Name             string   `toml:"name" default:"route1, route2 ... by position" example:"\"all\"" doc:"The route's name in logs."`
	Senders          []string `toml:"senders" doc:"Envelope senders the route takes: an address, @domain (any sender there), a wildcard with * (*@example.com), or <> for the null sender. Empty: any sender."`
	RecipientDomains []string `toml:"recipient_domains" doc:"Recipient domains the route takes: example.com, .example.com for its subdomains, or * for all. Empty: any domain. With both lists set, a recipient needs a sender and a domain that match."`
	Relays           []string `toml:"relays" default:"every [[relay]], in order" example:"[\"primary\"]" doc:"The names of the [[relay]] tables that take the route's mail, tried in order (failover); their credentials are theirs as usual."`

	Limits
}

// Default reports whether r is a default route: one that matches all mail.
func (r *Route) Default() bool { return len(r.Senders) == 0 && len(r.RecipientDomains) == 0 }

// defaultRoute returns the defaults of the i-th [[route]] (from 0).
func defaultRoute(i int) Route { return Route{Name: fmt.Sprintf("route%d", i+1)} }

// normalizeRoutes fills in a route's relays: every [[relay]], in order,
// when it names none.
func (c *Config) normalizeRoutes() {
	for i := range c.Routes {
		if len(c.Routes[i].Relays) == 0 {
			for _, r := range c.Relays {
				c.Routes[i].Relays = append(c.Routes[i].Relays, r.Name)
			}
		}
	}
}

// validateRoutes checks each [[route]], and the limits of each [[relay]].
func (c *Config) validateRoutes() error {
	for i := range c.Relays {
		if err := c.validateLimits(fmt.Sprintf("relay[%d]", i), &c.Relays[i].Limits); err != nil {
			return err
		}
	}
	if len(c.Routes) == 0 {
		return nil
	}
	names := map[string]bool{}
	deflt := -1
	for i := range c.Routes {
		r := &c.Routes[i]
		key := func(k string) string { return fmt.Sprintf("route[%d].%s", i, k) }
		if deflt >= 0 {
			return c.bad(key("senders"), "the route can never match: route %q before it is the default route, which takes all mail; put the default route last", c.Routes[deflt].Name)
		}
		if names[r.Name] {
			return c.bad(key("name"), "route name %q used twice", r.Name)
		}
		names[r.Name] = true
		for j, p := range r.Senders {
			if _, err := addrpat.ParseSender(p); err != nil {
				return c.bad(fmt.Sprintf("route[%d].senders[%d]", i, j), "%v", err)
			}
		}
		for j, p := range r.RecipientDomains {
			if _, err := addrpat.ParseDomain(p); err != nil {
				return c.bad(fmt.Sprintf("route[%d].recipient_domains[%d]", i, j), "%v", err)
			}
		}
		for j, name := range r.Relays {
			if !slices.ContainsFunc(c.Relays, func(rl Relay) bool { return rl.Name == name }) {
				return c.bad(fmt.Sprintf("route[%d].relays[%d]", i, j), "no [[relay]] is named %q", name)
			}
			if slices.Index(r.Relays, name) != j {
				return c.bad(fmt.Sprintf("route[%d].relays[%d]", i, j), "relay %q named twice", name)
			}
		}
		if err := c.validateLimits(fmt.Sprintf("route[%d]", i), &r.Limits); err != nil {
			return err
		}
		if r.Default() {
			deflt = i
		}
	}
	if deflt < 0 {
		return &Error{File: c.File, Key: "route", Msg: "no default route: with [[route]] tables, the last one must have neither senders nor recipient_domains, so that mail no other route matches has a way out"}
	}
	return nil
}

func (c *Config) validateLimits(table string, l *Limits) error {
	switch {
	case l.MaxMessagesPerMinute < 0:
		return c.bad(table+".max_messages_per_minute", "must not be negative")
	case l.MaxMessagesPerSecond < 0:
		return c.bad(table+".max_messages_per_second", "must not be negative")
	case l.MaxMessagesPerMinute > 0 && l.MaxMessagesPerSecond > 0:
		return c.bad(table+".max_messages_per_second", "set max_messages_per_minute or max_messages_per_second, not both")
	case l.MaxRecipientsPerMessage < 0:
		return c.bad(table+".max_recipients_per_message", "must not be negative")
	}
	return nil
}
