package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(&env{ctx: t.Context(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb}, args)
	return code, out.String(), errb.String()
}

// TestQueueCommands: list looks like mailq; retry and delete act on a
// running agent through its control socket, and on the spool directly when
// no agent runs.
func TestQueueCommands(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	startUpstream(t, dir, upstream.Config{}) // for its CA file; nothing listens at upAddr
	upAddr := testlib.RefusedAddr(t)
	cfg := rigConfig(t, dir, upAddr, relayOpts{}, "")
	// Long backoff: only `queue retry` makes a second attempt happen soon.
	writeTestFile(t, cfg, strings.Replace(readTestFile(t, cfg), `min_backoff = "200ms"`, `min_backoff = "1h"`, 1))
	writeTestFile(t, cfg, strings.Replace(readTestFile(t, cfg), `max_backoff = "1s"`, `max_backoff = "2h"`, 1))
	a := startAgent(t, cfg)
	for _, to := range []string{"one@example.net", "two@example.net"} {
		if err := send(a.Addr().String(), "app@client.test", to, "<q."+to+">"); err != nil {
			t.Fatal(err)
		}
	}
	// What `queue list` reads is on disk: wait until both attempts are
	// recorded there, not only in the agent's memory.
	waitFor(t, 15*time.Second, "both first attempts", func() bool {
		items, _ := spool.ReadDir(filepath.Join(dir, "data", "spool"))
		return len(items) == 2 && items[0].Attempts == 1 && items[1].Attempts == 1
	})

	code, out, errs := runCLI(t, "queue", "list", "-c", cfg)
	if code != 0 {
		t.Fatalf("queue list: exit %d: %s", code, errs)
	}
	items := a.Queue().List()
	for _, want := range []string{"-Queue ID-", items[0].ID, items[1].ID, "app@client.test", "one@example.net", "two@example.net", "connection refused", "in 2 Requests."} {
		if !strings.Contains(out, want) {
			t.Errorf("queue list lacks %q:\n%s", want, out)
		}
	}

	// retry one through the running agent: it is attempted again now.
	if code, _, errs := runCLI(t, "queue", "retry", items[0].ID, "-c", cfg); code != 0 {
		t.Fatalf("queue retry: exit %d: %s", code, errs)
	}
	waitFor(t, 15*time.Second, "the retried item's second attempt", func() bool {
		for _, it := range a.Queue().List() {
			if it.ID == items[0].ID {
				return it.Attempts == 2
			}
		}
		return false
	})

	// delete the other through the running agent.
	if code, _, errs := runCLI(t, "queue", "delete", items[1].ID, "-c", cfg); code != 0 {
		t.Fatalf("queue delete: exit %d: %s", code, errs)
	}
	if n := len(a.Queue().List()); n != 1 {
		t.Fatalf("%d items after delete, want 1", n)
	}
	code, _, errs = runCLI(t, "queue", "delete", "nosuchid", "-c", cfg)
	if code != 1 || !strings.Contains(errs, "nosuchid") {
		t.Errorf("deleting an unknown id: exit %d, stderr %q", code, errs)
	}

	// Without an agent: delete works on the spool directly; list still works.
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCLI(t, "queue", "delete", items[0].ID, "-c", cfg); code != 0 {
		t.Fatalf("offline queue delete: exit %d: %s", code, errs)
	}
	code, out, _ = runCLI(t, "queue", "list", "-c", cfg)
	if code != 0 || !strings.Contains(out, "Mail queue is empty") {
		t.Errorf("queue list after deleting everything: exit %d:\n%s", code, out)
	}

	// Usage errors exit 2.
	for _, args := range [][]string{{"queue"}, {"queue", "flush"}, {"queue", "delete"}, {"queue", "list", "extra"}} {
		if code, _, _ := runCLI(t, append(args, "-c", cfg)...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// TestUndeliverableDSNIsHeld: with auth = "disabled" and a relay that
// refuses every recipient, a message fails, its DSN goes to the same relay
// and is refused too. The DSN does not vanish: it is held in the queue,
// `queue list` shows it (marked "!" and explained), the held-items metric
// counts it, and `queue delete` removes it.
func TestUndeliverableDSNIsHeld(t *testing.T) {
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	up := startUpstream(t, dir, upstream.Config{Behavior: upstream.Behavior{Rules: []upstream.Rule{{
		Command: "RCPT", // every recipient
		Reply:   &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "relaying denied"},
	}}}})
	cfg := rigConfig(t, dir, up.Addr(), relayOpts{Auth: "disabled", NoCred: true}, "")
	writeTestFile(t, cfg, "metrics_address = \"127.0.0.1:0\"\n"+readTestFile(t, cfg))
	a := startAgent(t, cfg)
	if err := send(a.Addr().String(), "app@client.test", "someone@example.net", "<held@rig>"); err != nil {
		t.Fatal(err)
	}
	spoolDir := filepath.Join(dir, "data", "spool")
	var dsn spool.Info
	waitFor(t, 15*time.Second, "the refused DSN to be recorded on disk", func() bool {
		items, _ := spool.ReadDir(spoolDir)
		if len(items) != 1 || items[0].From != "" || items[0].Recipients[0].State != spool.StateFailed {
			return false
		}
		dsn = items[0]
		return true
	})
	if got := dsn.Recipients[0].Address; got != "app@client.test" {
		t.Fatalf("held item to %s, want the DSN to app@client.test", got)
	}
	if up.Count() != 0 {
		t.Errorf("the upstream accepted %d messages, want none", up.Count())
	}

	code, out, errs := runCLI(t, "queue", "list", "-c", cfg)
	if code != 0 {
		t.Fatalf("queue list: exit %d: %s", code, errs)
	}
	for _, want := range []string{dsn.ID + "!", "<>", "app@client.test [failed]", "relaying denied",
		"no DSN can be sent", "sealrelay queue delete " + dsn.ID, "in 1 Request."} {
		if !strings.Contains(out, want) {
			t.Errorf("queue list lacks %q:\n%s", want, out)
		}
	}
	// The envelope reaches the disk a moment before the queue counts the
	// item as held.
	waitFor(t, 10*time.Second, "sealrelay_spool_held_items to be 1", func() bool {
		return gauge(t, a, "sealrelay_spool_held_items") == 1
	})

	if code, _, errs := runCLI(t, "queue", "delete", dsn.ID, "-c", cfg); code != 0 {
		t.Fatalf("queue delete: exit %d: %s", code, errs)
	}
	if code, out, _ := runCLI(t, "queue", "list", "-c", cfg); code != 0 || !strings.Contains(out, "Mail queue is empty") {
		t.Errorf("queue list after the delete: exit %d:\n%s", code, out)
	}
	if got := gauge(t, a, "sealrelay_spool_held_items"); got != 0 {
		t.Errorf("sealrelay_spool_held_items after the delete = %v, want 0", got)
	}
}

// gauge returns the value of the agent's metric name, an unlabelled
// gauge, as its /metrics serves it (-1 if missing).
func gauge(t *testing.T, a *runningAgent, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(scrape(t, metricsURL(t, a)), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// TestOfflineQueueRefusesNonOwner: with no agent running, `queue retry`
// and `queue delete` by a user other than the spool's owner (root, say)
// are refused with the command to run instead, and change nothing: files
// root wrote there would be unusable by the agent. `queue list` works.
func TestOfflineQueueRefusesNonOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the spool to another user")
	}
	dir := t.TempDir()
	rigFiles(t, dir, rigUser, rigPass)
	startUpstream(t, dir, upstream.Config{}) // for its CA file; nothing listens at the relay's address
	cfg := rigConfig(t, dir, testlib.RefusedAddr(t), relayOpts{}, "")
	a := startAgent(t, cfg)
	if err := send(a.Addr().String(), "app@client.test", "one@example.net", "<offline@rig>"); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	waitFor(t, 15*time.Second, "the first attempt on disk", func() bool {
		items, _ := spool.ReadDir(filepath.Join(dataDir, "spool"))
		return len(items) == 1 && items[0].Attempts == 1
	})
	id := a.Queue().List()[0].ID
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	// The spool belongs to nobody (uid 65534), as it would to sealrelay.
	const nobody = 65534
	chownTree(t, dataDir, nobody)
	before := treeState(t, dataDir)

	for _, args := range [][]string{{"retry", id}, {"retry"}, {"delete", id}} {
		code, _, errs := runCLI(t, append(append([]string{"queue"}, args...), "-c", cfg)...)
		cmd := strings.Join(append(append([]string{"sealrelay", "queue"}, args...), "-c", cfg), " ")
		wantErr := "sealrelay: queue " + args[0] + ": no agent is running, and " + filepath.Join(dataDir, "spool") +
			" belongs to nobody: changing it as another user would leave files the agent cannot use; refusing\n"
		wantHint := "sealrelay: hint: run it as the spool's owner: sudo -u nobody " + cmd + "\n"
		if code != 1 || errs != wantErr+wantHint {
			t.Errorf("queue %v as root: exit %d, stderr:\n%s\nwant exit 1 and:\n%s%s", args, code, errs, wantErr, wantHint)
		}
	}
	if after := treeState(t, dataDir); after != before {
		t.Errorf("the refused commands changed the data directory:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	code, out, errs := runCLI(t, "queue", "list", "-c", cfg)
	if code != 0 || !strings.Contains(out, id) {
		t.Errorf("queue list as root: exit %d: %s\n%s", code, errs, out)
	}
}

// chownTree gives dir and everything in it to uid.
func chownTree(t *testing.T, dir string, uid int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, uid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// treeState lists every file under dir with its owner, mode and size.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s uid=%d %s %d %s\n", p, st.Uid, fi.Mode(), fi.Size(), fi.ModTime().Format(time.RFC3339Nano))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
