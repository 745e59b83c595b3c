package spool

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestOpenQuarantinesDamagedItems damages items in each way a crash or a
// disk can, then restarts: each damaged item is moved (not deleted) to the
// quarantine directory with a log line naming it and saying why, leftover
// temporary files are removed, and the intact item is delivered.
func TestOpenQuarantinesDamagedItems(t *testing.T) {
	h := newHarness(t, Options{})
	put := func() string { return h.put("alice@example.com", "bob@example.org") }
	path := func(id, suffix string) string { return filepath.Join(h.dir, id+suffix) }

	type damage struct {
		name   string
		id     string
		files  []string // the files that must end up in quarantine
		reason string   // in the log line
	}
	var cases []damage

	id := put()
	os.Remove(path(id, ".env"))
	cases = append(cases, damage{"message without envelope", id, []string{id + ".msg"}, "message file without an envelope"})

	id = put()
	env, _ := os.ReadFile(path(id, ".env"))
	os.WriteFile(path(id, ".env"), env[:len(env)/2], 0o600)
	cases = append(cases, damage{"truncated envelope", id, []string{id + ".msg", id + ".env"}, "not a valid envelope: unexpected EOF"})

	id = put()
	os.WriteFile(path(id, ".env"), []byte("{not json"), 0o600)
	cases = append(cases, damage{"corrupt JSON", id, []string{id + ".msg", id + ".env"}, "not a valid envelope: invalid character"})

	id = put()
	os.WriteFile(path(id, ".env"), nil, 0o600)
	cases = append(cases, damage{"empty envelope", id, []string{id + ".msg", id + ".env"}, "empty file"})

	id = put()
	os.WriteFile(path(id, ".msg"), []byte(testMessage[:20]), 0o600)
	cases = append(cases, damage{"wrong size", id, []string{id + ".msg", id + ".env"}, "has 20 bytes, the envelope says"})

	id = put()
	msg, _ := os.ReadFile(path(id, ".msg"))
	msg[len(msg)/2] ^= 0x20 // the same size, another content: bit rot or a torn block
	os.WriteFile(path(id, ".msg"), msg, 0o600)
	cases = append(cases, damage{"same size, other content", id, []string{id + ".msg", id + ".env"}, "does not match the SHA-256 in its envelope"})

	id = put()
	os.Remove(path(id, ".msg"))
	cases = append(cases, damage{"missing message", id, []string{id + ".env"}, ".msg is missing"})

	id = put()
	other := put()
	env, _ = os.ReadFile(path(other, ".env"))
	os.WriteFile(path(id, ".env"), env, 0o600) // another item's envelope
	cases = append(cases, damage{"envelope of another item", id, []string{id + ".msg", id + ".env"}, "does not match its file name"})

	intact := other
	// A Put that died before its renames, and an envelope rewrite that died
	// before its rename.
	tmpID := newID(t0.Add(1))
	os.WriteFile(path(tmpID, ".msg.tmp"), []byte("partial"), 0o600)
	os.WriteFile(path(intact, ".env.tmp"), []byte("{\"version\":"), 0o600)
	os.WriteFile(filepath.Join(h.dir, "README"), []byte("not ours"), 0o600)

	crash(h.q)
	h2 := newHarness(t, Options{Dir: h.dir})
	qdir := filepath.Join(h.dir, "quarantine")
	for _, c := range cases {
		for _, f := range c.files {
			if _, err := os.Stat(filepath.Join(qdir, f)); err != nil {
				t.Errorf("%s: %s not in quarantine: %v", c.name, f, err)
			}
			if _, err := os.Stat(filepath.Join(h.dir, f)); err == nil {
				t.Errorf("%s: %s still in the spool directory", c.name, f)
			}
		}
		lines := h2.logs.Lines("quarantined damaged item", "id="+c.id)
		if len(lines) != 1 || !strings.Contains(lines[0], c.reason) || !strings.Contains(lines[0], c.files[0]) {
			t.Errorf("%s: log lines %q, want one naming %s with reason %q", c.name, lines, c.files[0], c.reason)
		}
	}
	if s := h2.q.Stats(); s.Quarantined != uint64(len(cases)) || s.Queued != 1 {
		t.Errorf("stats = %+v, want %d quarantined, 1 queued", s, len(cases))
	}
	left := filesIn(t, h.dir)
	if want := []string{intact + ".env", intact + ".msg", "README"}; !slices.Equal(left, want) {
		t.Errorf("spool directory holds %v, want %v", left, want)
	}
	if len(h2.logs.Lines("removed leftover temporary file", tmpID+".msg.tmp")) != 1 {
		t.Errorf("no log line for the removed temporary file; logs:\n%s", h2.logs)
	}
	if len(h2.logs.Lines("ignoring unknown file", "README")) != 1 {
		t.Errorf("no log line for the unknown file")
	}

	d := &fakeDeliverer{respond: all(Delivered, nil)}
	h2.run(d)
	h2.waitProcessed(intact)
	if calls := d.deliveries(); len(calls) != 1 || calls[0].ID != intact || calls[0].Body != testMessage {
		t.Errorf("deliveries = %+v, want the intact item only", calls)
	}
}

// TestOpenQuarantineKeepsBothCopies: quarantining never overwrites an
// earlier quarantined file of the same name.
func TestOpenQuarantineKeepsBothCopies(t *testing.T) {
	h := newHarness(t, Options{})
	id := h.put("alice@example.com", "bob@example.org")
	os.Remove(filepath.Join(h.dir, id+".env"))
	crash(h.q)
	h2 := newHarness(t, Options{Dir: h.dir})
	os.WriteFile(filepath.Join(h.dir, id+".msg"), []byte("second"), 0o600)
	crash(h2.q)
	newHarness(t, Options{Dir: h.dir})
	for name, want := range map[string]string{id + ".msg": testMessage, id + ".msg.1": "second"} {
		b, err := os.ReadFile(filepath.Join(h.dir, "quarantine", name))
		if err != nil || string(b) != want {
			t.Errorf("quarantine/%s = %q, %v; want %q", name, b, err, want)
		}
	}
}
