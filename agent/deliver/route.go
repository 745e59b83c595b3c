package deliver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/addrpat"
)

// Route sends some of the mail through some of the relays
// (docs/routes.md): a recipient takes the first route whose senders
// match the message's sender and whose recipient domains match its own
// domain; an empty list matches everything. The last route must match
// everything (the default route).
type Route struct {
	// Name identifies the route in logs.
	Name string
	// Senders are sender patterns (internal/addrpat); empty: any sender.
	Senders []string
	// RecipientDomains are domain patterns; empty: any domain.
	RecipientDomains []string
	// Relays are names of Options.Relays, tried in order; empty: all of
	// them, in order.
	Relays []string
	// Limits are the route's own rate limits, on top of its relays'.
	Limits Limits
}

// route is a Route compiled.
type route struct {
	name    string
	senders []addrpat.Sender
	domains []addrpat.Domain
	relays  []*relay
	lim     *limiter
	maxRcpt int
}

// newRoutes compiles opt's routes; without any, one default route holds
// every relay in order.
func newRoutes(rs []Route, relays []*relay) ([]*route, error) {
	if len(rs) == 0 {
		return []*route{{name: "default", relays: relays}}, nil
	}
	var out []*route
	for i, rc := range rs {
		name := rc.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		rt := &route{name: name, lim: newLimiter(rc.Limits, "route "+name), maxRcpt: rc.Limits.RecipientsPerMessage}
		for _, p := range rc.Senders {
			s, err := addrpat.ParseSender(p)
			if err != nil {
				return nil, fmt.Errorf("route %q: sender %w", name, err)
			}
			rt.senders = append(rt.senders, s)
		}
		for _, p := range rc.RecipientDomains {
			d, err := addrpat.ParseDomain(p)
			if err != nil {
				return nil, fmt.Errorf("route %q: recipient domain %w", name, err)
			}
			rt.domains = append(rt.domains, d)
		}
		if len(rc.Relays) == 0 {
			rt.relays = relays
		}
		for _, n := range rc.Relays {
			i := slices.IndexFunc(relays, func(r *relay) bool { return r.cfg.Name == n })
			if i < 0 {
				return nil, fmt.Errorf("route %q: no relay is named %q", name, n)
			}
			rt.relays = append(rt.relays, relays[i])
		}
		out = append(out, rt)
	}
	if last := out[len(out)-1]; len(last.senders) > 0 || len(last.domains) > 0 {
		return nil, errors.New("the last route must take all mail (no senders, no recipient domains)")
	}
	return out, nil
}

// matches reports whether the route takes mail from sender to rcpt.
func (rt *route) matches(sender, rcpt string) bool {
	if len(rt.senders) > 0 && !slices.ContainsFunc(rt.senders, func(s addrpat.Sender) bool { return s.Match(sender) }) {
		return false
	}
	if len(rt.domains) > 0 {
		dom := addrpat.DomainOf(rcpt)
		if !slices.ContainsFunc(rt.domains, func(d addrpat.Domain) bool { return d.Match(dom) }) {
			return false
		}
	}
	return true
}

// Route returns the name of the route that takes the mail from sender to
// rcpt, and the names of its relays in order.
func (d *Deliverer) Route(sender, rcpt string) (string, []string) {
	rt := d.routeFor(sender, rcpt)
	var names []string
	for _, r := range rt.relays {
		names = append(names, r.cfg.Name)
	}
	return rt.name, names
}

// routeFor is the first route that takes mail from sender to rcpt (the
// last route takes all).
func (d *Deliverer) routeFor(sender, rcpt string) *route {
	for _, rt := range d.routes {
		if rt.matches(sender, rcpt) {
			return rt
		}
	}
	return d.routes[len(d.routes)-1]
}

// deliverRoute sends m's recipients idx, all on route rt, filling res:
// through rt's relays in order, the next taking what the one before could
// not because it was unusable.
func (d *Deliverer) deliverRoute(ctx context.Context, rt *route, m *spool.Delivery, idx []int, res []spool.RcptResult) {
	var failures []string
	var errs []error
	for _, r := range rt.relays {
		var err error
		if idx, err = d.viaRelay(ctx, rt, r, m, idx, res); err == nil {
			return
		}
		d.st.connFailures.Add(1)
		d.log.Warn("relay unusable for this attempt", "relay", r.cfg.Name, "address", r.cfg.Address, "route", rt.name, "id", m.ID, "err", err)
		failures = append(failures, fmt.Sprintf("relay %s (%s): %v", r.cfg.Name, r.cfg.Address, err))
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	err := &noRelayError{text: "no relay could take the message: " + strings.Join(failures, "; "), errs: errs}
	for _, i := range idx {
		res[i] = spool.RcptResult{Rcpt: m.To[i], Status: spool.Temporary, Err: err}
	}
}

// viaRelay sends m's recipients idx through r in transactions of at most
// the route's and the relay's recipients per message, each taking a
// token from both their rate limits, and fills res for them: delivered,
// refused, or Waiting when a limit holds a transaction back. If r cannot
// be used, it returns the recipients it did not deal with and why.
func (d *Deliverer) viaRelay(ctx context.Context, rt *route, r *relay, m *spool.Delivery, idx []int, res []spool.RcptResult) ([]int, error) {
	n := len(idx)
	for _, lim := range []int{rt.maxRcpt, r.cfg.Limits.RecipientsPerMessage} {
		if lim > 0 && lim < n {
			n = lim
		}
	}
	for start := 0; start < len(idx); start += n {
		chunk := idx[start:min(start+n, len(idx))]
		at, by, err := take(ctx, rt.lim, r.lim)
		if err != nil {
			return idx[start:], err
		}
		if by != nil {
			werr := fmt.Errorf("waiting for %s", by)
			for _, i := range chunk {
				res[i] = spool.RcptResult{Rcpt: m.To[i], Status: spool.Waiting, RetryAt: at, Relay: r.cfg.Name, Err: werr}
			}
			continue
		}
		sub := *m
		sub.To = make([]string, len(chunk))
		for k, i := range chunk {
			sub.To[k] = m.To[i]
		}
		cres, err := r.deliver(ctx, &sub)
		if err != nil {
			return idx[start:], err
		}
		for k, i := range chunk {
			res[i] = cres[k]
		}
	}
	return nil, nil
}
