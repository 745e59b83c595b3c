package maildrop

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestHostileFiles: whatever a local user leaves in the maildrop, the
// pickup neither blocks, crashes nor follows it: each file that will not
// do is renamed bad.NAME with the reason logged, and good mail beside
// them is still taken.
func TestHostileFiles(t *testing.T) {
	r := newRig(t)
	good := magic + `{"recipients":["a@example.com"]}` + "\n" + "Subject: ok\r\n\r\nok\r\n"
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(r.dir, name), []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]struct {
		setup func(path string) error
		why   string
	}{
		"m.fifo":    {func(p string) error { return syscall.Mkfifo(p, 0o640) }, "not a regular file"},
		"m.symlink": {func(p string) error { return os.Symlink("/etc/passwd", p) }, "a symlink"},
		"m.dir":     {func(p string) error { return os.Mkdir(p, 0o700) }, "not a regular file"},
		"m.hardlink": {func(p string) error {
			other := filepath.Join(t.TempDir(), "other")
			if err := os.WriteFile(other, []byte(good), 0o640); err != nil {
				return err
			}
			return os.Link(other, p)
		}, "has 2 links"},
		"m.huge": {func(p string) error {
			if err := os.WriteFile(p, []byte(good), 0o640); err != nil {
				return err
			}
			return os.Truncate(p, 1<<40) // sparse: must not be read
		}, "bytes, more than the largest message"},
		"m.magic":     {fileWith("From: x\r\n\r\nhello\r\n"), "not a maildrop file"},
		"m.empty":     {fileWith(""), "not a maildrop file"},
		"m.noline":    {fileWith(magic + `{"recipients":["a@example.com"]}`), "no envelope line"},
		"m.json":      {fileWith(magic + "{not json\n" + "x\r\n"), "envelope: "},
		"m.unknown":   {fileWith(magic + `{"recipients":["a@example.com"],"uid":0}` + "\n" + "x\r\n"), `unknown field \"uid\"`},
		"m.twojson":   {fileWith(magic + `{"recipients":["a@example.com"]} {}` + "\n" + "x\r\n"), "trailing data"},
		"m.norcpt":    {fileWith(magic + `{"recipients":[]}` + "\n" + "x\r\n"), "no recipients"},
		"m.manyrcpt":  {fileWith(magic + `{"recipients":["a@b.c","b@b.c","c@b.c","d@b.c","e@b.c","f@b.c"]}` + "\n" + "x\r\n"), "6 recipients, more than listen.max_recipients (5)"},
		"m.badrcpt":   {fileWith(magic + `{"recipients":["a b@example.com"]}` + "\n" + "x\r\n"), `a b@example.com\": invalid address`},
		"m.badsender": {fileWith(magic + `{"sender":"x y@z","recipients":["a@example.com"]}` + "\n" + "x\r\n"), "sender: invalid address"},
		"m.bareLF":    {fileWith(magic + `{"recipients":["a@example.com"]}` + "\n" + "Subject: x\n\r\nx\r\n"), "bare LF at byte 10"},
		"m.bareCR":    {fileWith(magic + `{"recipients":["a@example.com"]}` + "\n" + "Subject: x\r\r\n\r\nx\r\n"), "bare CR at byte 10"},
		"m.noend":     {fileWith(magic + `{"recipients":["a@example.com"]}` + "\n" + "Subject: x\r\n\r\nx"), "does not end with a line end"},
		"m.nomsg":     {fileWith(magic + `{"recipients":["a@example.com"]}` + "\n"), "empty message"},
		"m.name":      {fileWith(magic + `{"full_name":"a\r\nBcc: x@y.z","recipients":["a@example.com"]}` + "\n" + "x\r\n"), "control character"},
		"weird name":  {fileWith("junk"), "not a maildrop file"},
	}
	for name, c := range cases {
		if err := c.setup(filepath.Join(r.dir, name)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	write("m.good", good)
	r.scan()

	if got := r.q.all(); len(got) != 1 || got[0].to[0] != "a@example.com" {
		t.Fatalf("queued %+v, want the good message only", got)
	}
	logs := r.logs.String()
	for name, c := range cases {
		if _, err := os.Lstat(filepath.Join(r.dir, badPrefix+name)); err != nil {
			t.Errorf("%s: not renamed %s%s: %v", name, badPrefix, name, err)
		}
		line := ""
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, `file="`+name+`"`) || strings.Contains(l, "file="+name+" ") {
				line = l
			}
		}
		if !strings.Contains(line, "maildrop: file refused, renamed") || !strings.Contains(line, c.why) {
			t.Errorf("%s: log line %q, want the reason %q", name, line, c.why)
		}
	}
	if st := r.p.Stats(); st.Rejected != uint64(len(cases)) || st.Taken != 1 {
		t.Errorf("stats %+v, want %d rejected and 1 taken", st, len(cases))
	}
	// A second pass leaves the bad files alone.
	r.scan()
	if st := r.p.Stats(); st.Rejected != uint64(len(cases)) {
		t.Errorf("bad files were looked at again: %+v", st)
	}
}

func fileWith(data string) func(string) error {
	return func(p string) error { return os.WriteFile(p, []byte(data), 0o640) }
}

// FuzzParse: the maildrop file reader never panics, and what it accepts
// holds the envelope it read.
func FuzzParse(f *testing.F) {
	f.Add([]byte(magic + `{"sender":"a@b.c","full_name":"A","recipients":["x@y.z"]}` + "\nSubject: x\r\n\r\nx\r\n"))
	f.Add([]byte(magic + `{"recipients":[]}` + "\n"))
	f.Add([]byte(magic + "{\n"))
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, msg, err := parse(data)
		if err != nil {
			return
		}
		if len(msg) > len(data) || env.Recipients == nil && strings.Contains(string(data), `"recipients":[`) {
			t.Fatalf("parse(%q) = %+v, %q", data, env, msg)
		}
		_ = checkMessage(msg)
		headerFields(msg)
	})
}
