package maildrop

import (
	"fmt"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/sealrelay/sealrelay/internal/addrpat"
)

// Rule lets some local users give some envelope senders to sendmail -f.
type Rule struct {
	Users   []string // login names; "*" is every user
	Groups  []string // group names: their members, primary or supplementary
	Senders []string // sender patterns (internal/addrpat)
}

// Policy decides the envelope sender of mail a local user submits
// (docs/maildrop.md): without -f, login@Hostname; with -f, what was asked
// if the user is root or the agent's own user, if it is login@Hostname,
// or if a rule for the user allows it; otherwise login@Hostname again.
type Policy struct {
	hostname string
	agentUID int
	rules    []rule
}

type rule struct {
	users, groups []string
	senders       []addrpat.Sender
}

// NewPolicy compiles the rules. agentUID is the agent's own user, which,
// like root, may give any sender.
func NewPolicy(hostname string, rules []Rule, agentUID int) (*Policy, error) {
	p := &Policy{hostname: hostname, agentUID: agentUID}
	for i, r := range rules {
		c := rule{users: r.Users, groups: r.Groups}
		for _, s := range r.Senders {
			pat, err := addrpat.ParseSender(s)
			if err != nil {
				return nil, fmt.Errorf("sender rule %d: %w", i+1, err)
			}
			c.senders = append(c.senders, pat)
		}
		p.rules = append(p.rules, c)
	}
	return p, nil
}

// User is a local user, as the policy sees one.
type User struct {
	UID    int
	Name   string
	Groups []string // names of the user's groups, primary first
}

// LookupUser returns uid's login name and group names.
func LookupUser(uid int) (*User, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nil, fmt.Errorf("uid %d has no user name: %w", uid, err)
	}
	out := &User{UID: uid, Name: u.Username}
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid}
	}
	for _, gid := range gids {
		if g, err := user.LookupGroupId(gid); err == nil && !slices.Contains(out.Groups, g.Name) {
			out.Groups = append(out.Groups, g.Name)
		}
	}
	return out, nil
}

// Qualify gives an address without a domain the policy's host name, as
// Postfix appends myorigin: "root" is root@Hostname. The null sender
// stays "".
func (p *Policy) Qualify(addr string) string {
	if addr == "" || strings.Contains(addr, "@") {
		return addr
	}
	return addr + "@" + p.hostname
}

// Default is u's own address, login@Hostname.
func (p *Policy) Default(u *User) string { return u.Name + "@" + p.hostname }

// Sender returns the envelope sender for mail u submits having asked for
// asked (nil: sendmail had no -f), and whether that is the sender asked
// for. When it is not, the sender is u's own address.
func (p *Policy) Sender(u *User, asked *string) (string, bool) {
	own := p.Default(u)
	if asked == nil {
		return own, true
	}
	want := p.Qualify(*asked)
	switch {
	case u.UID == 0 || u.UID == p.agentUID:
		return want, true
	case want != "" && addrpat.NormalizeAddress(want) == addrpat.NormalizeAddress(own):
		return want, true
	}
	for _, r := range p.rules {
		if !r.applies(u) {
			continue
		}
		for _, s := range r.senders {
			if s.Match(want) {
				return want, true
			}
		}
	}
	return own, false
}

func (r rule) applies(u *User) bool {
	if slices.Contains(r.users, "*") || slices.Contains(r.users, u.Name) {
		return true
	}
	for _, g := range r.groups {
		if slices.Contains(u.Groups, g) {
			return true
		}
	}
	return false
}
