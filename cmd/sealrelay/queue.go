package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sealrelay/sealrelay/agent"
	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/agent/spool"
)

// cmdQueue lists the spool like mailq, or asks the running agent (through
// its control socket) to retry or delete items. With no agent running,
// retry and delete act on the spool directly.
func cmdQueue(e *env, args []string) error {
	fs := newFlags("queue")
	cfgPath := configFlag(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("queue needs list, retry or delete")
	}
	verb, rest := pos[0], pos[1:]
	switch {
	case verb == "list" && len(rest) == 0:
	case verb == "retry" && len(rest) <= 1:
	case verb == "delete" && len(rest) == 1:
	case verb == "list" || verb == "retry" || verb == "delete":
		return usagef("wrong number of arguments for queue %s", verb)
	default:
		return usagef("unknown queue command %q", verb)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if verb == "list" {
		items, err := spool.ReadDir(cfg.SpoolDir())
		if err != nil {
			return err
		}
		printQueue(e.stdout, items, time.Now())
		return nil
	}

	id := ""
	if len(rest) == 1 {
		id = rest[0]
	}
	cmd := strings.TrimSpace(verb + " " + id)
	err = agent.Control(agent.ControlSocket(cfg.DataDir), cmd)
	if errors.Is(err, agent.ErrNotRunning) {
		err = offlineQueue(cfg, verb, id)
	}
	if err != nil {
		return fmt.Errorf("queue %s: %w", verb, err)
	}
	switch {
	case verb == "delete":
		fmt.Fprintf(e.stderr, "sealrelay: deleted %s\n", id)
	case id == "":
		fmt.Fprintln(e.stderr, "sealrelay: every queued message is due now")
	default:
		fmt.Fprintf(e.stderr, "sealrelay: %s is due now\n", id)
	}
	return nil
}

// offlineQueue opens the spool itself when no agent runs (the spool's lock
// keeps the two from acting at once). Only the spool's owner may: files
// another user (root) wrote there could not be used by the agent, so any
// other user is refused, with the command to run instead.
func offlineQueue(cfg *config.Config, verb, id string) error {
	if err := checkSpoolOwner(cfg, verb, id); err != nil {
		return err
	}
	q, err := spool.Open(spool.Options{Dir: cfg.SpoolDir(), Hostname: cfg.Hostname})
	if err != nil {
		return err
	}
	defer q.Close()
	if verb == "delete" {
		return q.Delete(id)
	}
	return q.Retry(id)
}

// checkSpoolOwner refuses to act on a spool that belongs to another user.
func checkSpoolOwner(cfg *config.Config, verb, id string) error {
	for _, dir := range []string{cfg.SpoolDir(), cfg.DataDir} {
		fi, err := os.Stat(dir)
		if err != nil {
			continue // spool.Open says what is wrong
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || int(st.Uid) == os.Geteuid() {
			continue
		}
		owner := strconv.Itoa(int(st.Uid))
		if u, err := user.LookupId(owner); err == nil {
			owner = u.Username
		}
		cmd := strings.Join(slices.DeleteFunc([]string{"sealrelay", "queue", verb, id, "-c", cfg.File}, func(s string) bool { return s == "" }), " ")
		return &hinted{
			err: fmt.Errorf("no agent is running, and %s belongs to %s: changing it as another user would leave files the agent cannot use; refusing",
				dir, owner),
			hint: fmt.Sprintf("run it as the spool's owner: sudo -u %s %s", owner, cmd),
		}
	}
	return nil
}

// printQueue writes items as mailq does: one block per message, the id
// (with "!" for a held item, which a line then explains), size, arrival
// and sender on the first line, then the last error, then the recipients;
// plus this agent's age and attempt count.
func printQueue(w io.Writer, items []spool.Info, now time.Time) {
	if len(items) == 0 {
		fmt.Fprintln(w, "Mail queue is empty")
		return
	}
	fmt.Fprintf(w, "%-20s %8s %-6s %-8s %s\n", "-Queue ID-", "--Size--", "-Age-", "-Tries-", "-Sender/Recipient-------")
	var total int64
	for _, it := range items {
		total += it.Size
		from := it.From
		if from == "" {
			from = "<>"
		}
		id := it.ID
		if it.Held {
			id += "!" // as mailq marks a held message
		}
		fmt.Fprintf(w, "%-20s %8d %-6s %-8d %s\n", id, it.Size, age(now.Sub(it.Received)), it.Attempts, from)
		if it.Held {
			fmt.Fprintf(w, "%46s(failed, and no DSN can be sent for a message from <>: kept until `sealrelay queue delete %s`)\n", "", it.ID)
		}
		if it.LastError != "" {
			fmt.Fprintf(w, "%46s(%s)\n", "", oneLine(it.LastError))
		}
		for _, r := range it.Recipients {
			state := ""
			if r.State != spool.StatePending {
				state = " [" + string(r.State) + "]"
			}
			fmt.Fprintf(w, "%46s%s%s\n", "", r.Address, state)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "-- %d Kbytes in %d Request%s.\n", (total+1023)/1024, len(items), plural(len(items)))
}

func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
