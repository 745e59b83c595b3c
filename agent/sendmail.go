package agent

import (
	"errors"
	"log/slog"
	"os"

	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/agent/maildrop"
	"github.com/sealrelay/sealrelay/agent/smtpd"
)

// SendmailPolicy is the policy of [sendmail] in c: what envelope senders
// local users may give (docs/maildrop.md). agentUID is the user the agent
// runs as.
func SendmailPolicy(c *config.Config, agentUID int) (*maildrop.Policy, error) {
	var rules []maildrop.Rule
	for _, r := range c.Sendmail.Allow {
		rules = append(rules, maildrop.Rule{Users: r.Users, Groups: r.Groups, Senders: r.Senders})
	}
	return maildrop.NewPolicy(c.Hostname, rules, agentUID)
}

// CheckAddress checks an address from the maildrop as the listener checks
// one under SMTPUTF8.
func CheckAddress(addr string, rcpt bool) (string, error) {
	out, e := smtpd.NormalizeAddress(addr, rcpt, true)
	if e != nil {
		return "", errors.New(e.Message)
	}
	return out, nil
}

// newPickup prepares the maildrop in data_dir (refusing unsafe modes) and
// returns the pickup that takes its files into q; nil, with an error
// logged, if the maildrop cannot be made.
func newPickup(c *config.Config, q maildrop.Queue, log *slog.Logger) (*maildrop.Pickup, error) {
	dir := c.MaildropDir()
	log = log.With("component", "maildrop")
	prep, err := maildrop.Prepare(dir)
	var ce *maildrop.CreateError
	if errors.As(err, &ce) {
		// Not a danger, a missing feature: the agent runs, and sendmail
		// says there is no maildrop.
		log.Error("maildrop: sendmail cannot hand over mail until the maildrop exists", "err", err, "hint", ce.Hint())
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if prep.Created {
		log.Info("maildrop created", "dir", dir, "mode", "3733")
	}
	if !prep.Reachable {
		log.Info("maildrop: only root and the agent's user can submit with sendmail: data_dir is not searchable by others (chmod o+x, 0711, lets local users in)", "dir", dir)
	}
	pol, err := SendmailPolicy(c, os.Geteuid())
	if err != nil {
		return nil, err
	}
	return maildrop.NewPickup(maildrop.Options{
		Dir:             dir,
		Hostname:        c.Hostname,
		Policy:          pol,
		Queue:           q,
		Check:           CheckAddress,
		MaxMessageBytes: c.Listen.MaxMessageBytes,
		MaxRecipients:   c.Listen.MaxRecipients,
		Logger:          log,
	}), nil
}
