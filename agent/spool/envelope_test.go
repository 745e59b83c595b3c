package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// goldenEnvelope is an item part way through its life.
func goldenEnvelope() *envelope {
	return &envelope{
		Version:     envelopeVersion,
		ID:          "189cab0a10fa62000931753c",
		Received:    t0,
		From:        "alice@example.com",
		Size:        2048,
		Attempts:    2,
		NextAttempt: t0.Add(90 * time.Second),
		LastAttempt: t0.Add(30 * time.Second),
		LastError:   "451 4.3.0 try again later",
		Recipients: []recipient{
			{Address: "bob@example.org", State: StateDelivered},
			{Address: "carol@example.org", State: StateFailed, Status: "5.1.1", ReplyCode: 550, LastError: "550 5.1.1 user unknown"},
			{Address: "dave@example.org", State: StatePending, LastError: "451 4.3.0 try again later"},
		},
	}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update if the change is intended):\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestEnvelopeGolden(t *testing.T) {
	b, err := goldenEnvelope().marshal()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "envelope.golden", b)

	// The golden file reads back to the same envelope.
	e, err := readEnvelope("envelope.golden", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := e.marshal()
	if !bytes.Equal(again, b) {
		t.Errorf("round trip changed the envelope:\n%s", again)
	}
}

// TestReadEnvelopeErrors: each kind of damage is refused with an error
// naming the file and the field.
func TestReadEnvelopeErrors(t *testing.T) {
	good, _ := goldenEnvelope().marshal()
	edit := func(old, new string) string {
		if !bytes.Contains(good, []byte(old)) {
			t.Fatalf("golden envelope lacks %q", old)
		}
		return strings.Replace(string(good), old, new, 1)
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"empty", "", "envelope F: empty file (torn write?)"},
		{"not json", "{not json", "envelope F: not a valid envelope: invalid character 'n'"},
		{"truncated", string(good[:len(good)/2]), "envelope F: not a valid envelope: unexpected EOF"},
		{"array", "[]", "envelope F: not a valid envelope: json: cannot unmarshal array"},
		{"trailing data", string(good) + "{}", "envelope F: data after the envelope"},
		{"too big", strings.Repeat(" ", maxEnvelopeBytes+1), "envelope F: larger than 1048576 bytes"},
		{"unknown field", edit(`"version": 1,`, `"version": 1, "password": "x",`), `unknown field "password"`},
		{"no version", edit(`"version": 1,`, ``), "envelope F: field version: missing"},
		{"future version", edit(`"version": 1,`, `"version": 2,`), "field version: unsupported version 2 (this build reads 1)"},
		{"no id", edit(`"id": "189cab0a10fa62000931753c",`, ``), "field id: missing"},
		{"bad id", edit(`"id": "189cab0a10fa62000931753c"`, `"id": "../../etc/passwd"`), `field id: "../../etc/passwd" is not a spool item id`},
		{"no received", edit(`"received": "2026-03-14T09:26:53Z",`, ``), "field received: missing"},
		{"received year 0", edit(`"received": "2026-03-14T09:26:53Z"`, `"received": "0001-01-01T00:00:00Z"`), "field received: year 1 is out of range"},
		{"bad time", edit(`"received": "2026-03-14T09:26:53Z"`, `"received": "yesterday"`), "not a valid envelope: parsing time"},
		{"no from", edit(`"from": "alice@example.com",`, ``), "field from: missing"},
		{"from with CR", edit(`"from": "alice@example.com"`, `"from": "alice@example.com\r\nRCPT TO:<x@y>"`), `field from: address contains the character '\r'`},
		{"no size", edit(`"size": 2048,`, ``), "field size: missing"},
		{"negative size", edit(`"size": 2048`, `"size": -1`), "field size: negative (-1)"},
		{"string size", edit(`"size": 2048`, `"size": "2048"`), "cannot unmarshal string into Go struct field"},
		{"bad sha256", edit(`"size": 2048,`, `"size": 2048, "sha256": "ABC",`), "field sha256: not a hex SHA-256 (64 lowercase hex digits)"},
		{"no attempts", edit(`"attempts": 2,`, ``), "field attempts: missing"},
		{"huge attempts", edit(`"attempts": 2`, `"attempts": 99999999`), "field attempts: 99999999 is out of range [0, 1048576]"},
		{"no next attempt", edit(`"next_attempt": "2026-03-14T09:28:23Z",`, ``), "field next_attempt: missing"},
		{"bad last attempt", edit(`"last_attempt": "2026-03-14T09:27:23Z"`, `"last_attempt": "1500-01-01T00:00:00Z"`), "field last_attempt: year 1500"},
		{"long last error", edit(`"last_error": "451 4.3.0 try again later",`, `"last_error": "`+strings.Repeat("x", 5000)+`",`), "field last_error: longer than 4096 bytes"},
		{"no recipients", edit(`"recipients": [`, `"recipientz": [`), `unknown field "recipientz"`},
		{"empty recipients", `{"version":1,"id":"189cab0a10fa62000931753c","received":"2026-03-14T09:26:53Z","from":"","size":1,"attempts":0,"next_attempt":"2026-03-14T09:26:53Z","recipients":[]}`, "field recipients: empty"},
		{"null recipients", `{"version":1,"id":"189cab0a10fa62000931753c","received":"2026-03-14T09:26:53Z","from":"","size":1,"attempts":0,"next_attempt":"2026-03-14T09:26:53Z","recipients":null}`, "field recipients: missing"},
		{"recipient without address", edit(`"address": "bob@example.org",`, ``), "field recipients[0].address: missing"},
		{"empty address", edit(`"address": "bob@example.org"`, `"address": ""`), "field recipients[0].address: empty address"},
		{"bad state", edit(`"state": "failed"`, `"state": "bounced"`), `field recipients[1].state: "bounced" is not pending, delivered or failed`},
		{"no state", edit(`"state": "delivered"`, `"statez": "delivered"`), `unknown field "statez"`},
		{"bad status", edit(`"status": "5.1.1"`, `"status": "5.1.1; rm -rf"`), `field recipients[1].status: "5.1.1; rm -rf" is not a status code like 5.1.1`},
		{"bad reply code", edit(`"reply_code": 550`, `"reply_code": 250`), `field recipients[1].reply_code: 250 is not an SMTP failure reply code (400 to 599)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readEnvelope("F", strings.NewReader(tc.data))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.data)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "envelope F: ") {
				t.Errorf("error = %q, want it to name the file and contain %q", err, tc.want)
			}
		})
	}
}

// TestReadEnvelopeTornAnywhere: an envelope cut at any offset before its
// end is refused (a torn write is never taken for a complete item).
func TestReadEnvelopeTornAnywhere(t *testing.T) {
	good, _ := goldenEnvelope().marshal()
	end := bytes.LastIndexByte(good, '}')
	for n := 0; n <= end; n++ {
		if _, err := readEnvelope("F", bytes.NewReader(good[:n])); err == nil {
			t.Fatalf("envelope cut to %d of %d bytes was accepted", n, len(good))
		}
	}
}

// TestEnvelopeHoldsNoSecret: the envelope is written from the envelope
// struct alone, whose fields are the sender, recipients, times, counts and
// error texts; nothing else (a credential from a Delivery's context, say)
// can reach it. This pins the field list, so adding one is a conscious act.
func TestEnvelopeHoldsNoSecret(t *testing.T) {
	b, _ := goldenEnvelope().marshal()
	var keys []string
	for _, line := range strings.Split(string(b), "\n") {
		if k, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			keys = append(keys, strings.Trim(k, `"`))
		}
	}
	want := "version id received from size attempts next_attempt last_attempt last_error recipients " +
		"address state address state status reply_code last_error address state last_error"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("envelope fields = %s\nwant %s", got, want)
	}
}

func TestReadDir(t *testing.T) {
	h := newHarness(t, Options{})
	a := h.put("alice@example.com", "bob@example.org")
	h.clock.Set(t0.Add(time.Second))
	b := h.put("", "carol@example.org")
	broken := newID(t0.Add(2 * time.Second))
	os.WriteFile(filepath.Join(h.dir, broken+".env"), []byte(`{"version":1}`), 0o600)

	infos, err := ReadDir(h.dir)
	if len(infos) != 2 || infos[0].ID != a || infos[1].ID != b {
		t.Fatalf("ReadDir = %+v", infos)
	}
	if infos[1].From != "" || infos[1].Recipients[0] != (RcptInfo{Address: "carol@example.org", State: StatePending}) ||
		infos[0].Size != int64(len(testMessage)) || !infos[1].Received.Equal(t0.Add(time.Second)) {
		t.Errorf("ReadDir = %+v", infos)
	}
	want := "envelope " + filepath.Join(h.dir, broken+".env") + ": field id: missing"
	if err == nil || err.Error() != want {
		t.Errorf("ReadDir error = %v, want %q", err, want)
	}

	if _, err := ReadDir(filepath.Join(h.dir, "nope")); err == nil || !strings.Contains(err.Error(), "reading spool directory: open ") {
		t.Errorf("ReadDir of a missing directory: %v", err)
	}
}

// FuzzReadEnvelope feeds the envelope reader arbitrary bytes: it never
// panics, and whatever it accepts is a valid envelope that survives a
// write and a second read unchanged.
func FuzzReadEnvelope(f *testing.F) {
	good, _ := goldenEnvelope().marshal()
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := readEnvelope("fuzz", bytes.NewReader(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "envelope fuzz: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if !validID(e.ID) || len(e.Recipients) == 0 || e.Size < 0 || e.Attempts < 0 {
			t.Fatalf("accepted an invalid envelope: %+v", e)
		}
		for _, r := range e.Recipients {
			if !r.State.valid() || checkAddress(r.Address, false) != nil {
				t.Fatalf("accepted an invalid recipient: %+v", r)
			}
		}
		b, err := e.marshal()
		if err != nil {
			t.Fatalf("cannot write back an accepted envelope: %v", err)
		}
		e2, err := readEnvelope("fuzz", bytes.NewReader(b))
		if err != nil {
			t.Fatalf("cannot read back what was written: %v\n%s", err, b)
		}
		b2, _ := e2.marshal()
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed the envelope:\n%s\n%s", b, b2)
		}
	})
}
