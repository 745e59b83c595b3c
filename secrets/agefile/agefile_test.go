package agefile

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/sealrelay/sealrelay/internal/hint"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
)

const testPassword = "correct-horse-battery-staple-7f3a"

// newServer makes an identity (test only) and a recipient list holding it.
func newServer(t testing.TB, name string) (*keys.Identity, string) {
	t.Helper()
	file, pub, err := keys.Generate(false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id, err := keys.Parse(bytes.NewReader(file), name+"-identity.txt")
	if err != nil {
		t.Fatal(err)
	}
	return id, pub
}

func recipients(t testing.TB, pubs ...string) *keys.RecipientList {
	t.Helper()
	var b strings.Builder
	for i, p := range pubs {
		b.WriteString("# server " + string(rune('a'+i)) + " (test only)\n" + p + "\n")
	}
	rl, err := keys.ParseRecipients(strings.NewReader(b.String()), "recipients.txt")
	if err != nil {
		t.Fatal(err)
	}
	return rl
}

func TestParse(t *testing.T) {
	in := `# credentials for the relays
[secondary]
username = "backup@example.com"
password = 'lit"eral'

[primary]
username = "relay@example.com"
password = """multi
line"""
`
	creds, err := Parse([]byte(in), "credentials.age")
	if err != nil {
		t.Fatal(err)
	}
	if len(creds) != 2 {
		t.Fatalf("got %d entries, want 2", len(creds))
	}
	want := []struct{ name, user, pass string }{
		{"primary", "relay@example.com", "multi\nline"},
		{"secondary", "backup@example.com", `lit"eral`},
	}
	for i, w := range want {
		c := creds[i]
		if c.Name != w.name || c.Username != w.user || c.Password() != w.pass || c.Version != "" {
			t.Errorf("entry %d = %v (password match %v), want %s/%s", i, c, c.Password() == w.pass, w.name, w.user)
		}
	}
}

func TestParseEmpty(t *testing.T) {
	creds, err := Parse([]byte("# nothing yet\n"), "credentials.age")
	if err != nil || len(creds) != 0 {
		t.Fatalf("Parse(empty) = %v, %v; want no entries and no error", creds, err)
	}
}

func TestParseErrors(t *testing.T) {
	const pw = "hunter2-do-not-print"
	tests := []struct {
		name, in, want string
	}{
		{"unknown key", "[primary]\nusername = \"u\"\npassword = \"" + pw + "\"\npasword = \"x\"\n",
			`credentials.age: entry "primary" has unknown key "pasword" (a password entry takes username, password, and kind and generation)`},
		{"unknown key with odd characters", "[primary]\nusername = \"u\"\npassword = \"" + pw + "\"\n\"" + pw + " x\" = 1\n",
			`credentials.age: entry "primary" has an unknown key (a password entry takes username, password, and kind and generation)`},
		{"nested table", "[primary]\nusername = \"u\"\npassword = \"" + pw + "\"\n[primary.extra]\n",
			`credentials.age: entry "primary" has unknown key "extra"`},
		{"missing username", "[primary]\npassword = \"" + pw + "\"\n",
			`credentials.age: entry "primary" has no username`},
		{"missing password", "[primary]\nusername = \"u\"\n",
			`credentials.age: entry "primary" has no password`},
		{"empty password", "[primary]\nusername = \"u\"\npassword = \"\"\n",
			`credentials.age: entry "primary" has no password`},
		{"password not a string", "[primary]\nusername = \"u\"\npassword = 12345\n",
			`credentials.age: entry "primary": password must be a string`},
		{"NUL in password", "[primary]\nusername = \"u\"\npassword = \"a\\u0000b\"\n",
			`credentials.age: entry "primary": password contains a NUL character`},
		{"duplicate entry", "[primary]\nusername = \"u\"\npassword = \"" + pw + "\"\n\n[primary]\nusername = \"v\"\n",
			`credentials.age: line 5: entry "primary" is defined twice`},
		{"duplicate key", "[primary]\nusername = \"u\"\npassword = \"" + pw + "\"\npassword = \"" + pw + "\"\n",
			`credentials.age: line 4: entry "primary" sets password twice`},
		{"top-level value", "relay = \"x\"\n[primary]\nusername = \"u\"\npassword = \"" + pw + "\"\n",
			`credentials.age: top-level key "relay" is not an entry table`},
		{"top-level value with odd name", "\"" + pw + "!\" = 1\n",
			`credentials.age: a top-level value is not an entry table`},
		{"bad entry name", "[\"" + pw + " x\"]\nusername = \"u\"\npassword = \"p\"\n",
			`credentials.age: an entry name has characters other than A-Z a-z 0-9 . _ -`},
		{"unquoted password", "[primary]\nusername = \"u\"\npassword = " + pw + "\n",
			`credentials.age: line 3: invalid TOML syntax (details withheld: they could quote a password)`},
		{"unterminated string", "[primary]\nusername = \"u\"\npassword = \"" + pw + "\n",
			`credentials.age: line 3: invalid TOML syntax`},
		{"garbage after value", "[primary]\nusername = \"u\"\npassword = \"" + pw + "\" " + pw + "\n",
			`credentials.age: line 3: invalid TOML syntax`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds, err := Parse([]byte(tt.in), "credentials.age")
			if err == nil {
				t.Fatalf("Parse succeeded with %d entries; want an error", len(creds))
			}
			if creds != nil {
				t.Errorf("Parse returned entries with its error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q\nwant it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter") {
				t.Errorf("error quotes the password: %q", err)
			}
		})
	}
}

func TestMarshal(t *testing.T) {
	creds := []secrets.Credential{
		secrets.NewCredential("secondary", "b@example.com", `quote" and \ backslash`, ""),
		secrets.NewCredential("primary", "a@example.com", testPassword, "ignored"),
	}
	got, err := Marshal(creds)
	if err != nil {
		t.Fatal(err)
	}
	want := "[primary]\nusername = \"a@example.com\"\npassword = \"" + testPassword + "\"\n\n" +
		"[secondary]\nusername = \"b@example.com\"\npassword = \"quote\\\" and \\\\ backslash\"\n"
	if string(got) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", got, want)
	}
	back, err := Parse(got, "marshalled")
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || back[0].Name != "primary" || !back[0].SameSecret(creds[1]) || !back[1].SameSecret(creds[0]) {
		t.Errorf("Parse(Marshal(x)) = %v, not x", back)
	}
}

func TestMarshalRefuses(t *testing.T) {
	tests := []struct {
		name  string
		creds []secrets.Credential
		want  string
	}{
		{"empty password", []secrets.Credential{secrets.NewCredential("primary", "u", "", "")}, `entry "primary" has no password`},
		{"empty username", []secrets.Credential{secrets.NewCredential("primary", "", "p", "")}, `entry "primary" has no username`},
		{"bad name", []secrets.Credential{secrets.NewCredential("a b", "u", "p", "")}, "an entry name is empty or has characters other than"},
		{"duplicate", []secrets.Credential{secrets.NewCredential("x", "u", "p", ""), secrets.NewCredential("x", "v", "q", "")}, `entry "x" is given twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Marshal(tt.creds)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Marshal error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestWriteRead(t *testing.T) {
	id, pub := newServer(t, "a")
	path := filepath.Join(t.TempDir(), "credentials.age")
	creds := []secrets.Credential{secrets.NewCredential("primary", "relay@example.com", testPassword, "")}
	if err := Write(path, creds, recipients(t, pub)); err != nil {
		t.Fatal(err)
	}
	sealed, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(sealed, []byte("-----BEGIN AGE ENCRYPTED FILE-----\n")) {
		t.Errorf("file is not armored age:\n%s", sealed)
	}
	if bytes.Contains(sealed, []byte(testPassword)) {
		t.Error("file holds the password in plaintext")
	}
	got, err := Read(path, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "primary" || !got[0].SameSecret(creds[0]) {
		t.Fatalf("Read = %v", got)
	}
	v := got[0].Version
	if !regexp.MustCompile(`^sha256:[0-9a-f]{12}$`).MatchString(v) || v != Version(sealed) {
		t.Errorf("Version = %q, want sha256: and 12 hex digits of the ciphertext's hash (%s)", v, Version(sealed))
	}

	// Sealing the same content again gives a new ciphertext, so a new version.
	if err := Write(path, creds, recipients(t, pub)); err != nil {
		t.Fatal(err)
	}
	again, err := Read(path, id)
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Version == v {
		t.Errorf("version %s did not change when the file was rewritten", v)
	}
}

func TestWriteToSeveralRecipients(t *testing.T) {
	idA, pubA := newServer(t, "a")
	idB, pubB := newServer(t, "b")
	idC, _ := newServer(t, "c")
	path := filepath.Join(t.TempDir(), "credentials.age")
	creds := []secrets.Credential{secrets.NewCredential("primary", "u", testPassword, "")}
	if err := Write(path, creds, recipients(t, pubA, pubB)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []*keys.Identity{idA, idB} {
		if _, err := Read(path, id); err != nil {
			t.Errorf("recipient %s cannot read: %v", id.PublicKey(), err)
		}
	}
	_, err := Read(path, idC)
	var nr *keys.NotRecipientError
	if !errors.As(err, &nr) {
		t.Fatalf("non-recipient got %v, want *keys.NotRecipientError", err)
	}
}

func TestReadNotRecipient(t *testing.T) {
	_, pubA := newServer(t, "a")
	other, _ := newServer(t, "other")
	path := filepath.Join(t.TempDir(), "credentials.age")
	if err := Write(path, []secrets.Credential{secrets.NewCredential("primary", "u", testPassword, "")}, recipients(t, pubA)); err != nil {
		t.Fatal(err)
	}
	creds, err := Read(path, other)
	if creds != nil {
		t.Error("Read returned entries with its error")
	}
	want := "this server's key " + other.PublicKey() + " is not among the recipients of " + path
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant %s", err, want)
	}
	var h hint.Hinter
	if !errors.As(err, &h) || !strings.Contains(h.Hint(), "creds reencrypt") {
		t.Errorf("error has no hint naming creds reencrypt: %v", err)
	}
}

func TestReadCorrupt(t *testing.T) {
	id, pub := newServer(t, "a")
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials.age")
	if err := Write(path, []secrets.Credential{secrets.NewCredential("primary", "u", testPassword, "")}, recipients(t, pub)); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.age")
	read := func(data []byte) ([]secrets.Credential, error) {
		t.Helper()
		if err := os.WriteFile(bad, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return Read(bad, id)
	}
	footer := bytes.Index(good, []byte("-----END"))
	bodyStart := bytes.IndexByte(good, '\n') + 1

	t.Run("truncated", func(t *testing.T) {
		for n := 0; n < footer; n++ {
			creds, err := read(good[:n])
			var ce *keys.CorruptError
			if !errors.As(err, &ce) || creds != nil {
				t.Fatalf("cut to %d of %d bytes: got %d entries, error %v; want *keys.CorruptError and nothing", n, len(good), len(creds), err)
			}
			if !strings.Contains(err.Error(), bad+" is corrupt or truncated") {
				t.Fatalf("cut to %d bytes: error %q does not name the file", n, err)
			}
		}
	})

	t.Run("bit flipped", func(t *testing.T) {
		corrupt := 0
		lastLine := bytes.LastIndexByte(good[:footer-1], '\n') + 1
		for off := bodyStart; off < footer; off++ {
			for _, bit := range []byte{0x01, 0x20} {
				data := bytes.Clone(good)
				data[off] ^= bit
				creds, err := read(data)
				if creds != nil || err == nil {
					t.Fatalf("bit %#x flipped at %d: got %d entries, error %v; want an error and nothing", bit, off, len(creds), err)
				}
				// A flip inside a recipient stanza leaves no stanza this
				// key can open, which age reports as not-a-recipient.
				var ce *keys.CorruptError
				var nr *keys.NotRecipientError
				switch {
				case errors.As(err, &ce):
					corrupt++
				case errors.As(err, &nr) && off < lastLine:
				default:
					t.Fatalf("bit %#x flipped at %d (payload starts %d): error %v (%T)", bit, off, lastLine, err, err)
				}
			}
		}
		if corrupt == 0 {
			t.Error("no flip gave a *keys.CorruptError")
		}
	})

	t.Run("not age", func(t *testing.T) {
		_, err := read([]byte("[primary]\nusername = \"u\"\npassword = \"" + testPassword + "\"\n"))
		want := bad + ` is corrupt or truncated: not an age file`
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error = %v, want %q", err, want)
		}
		if strings.Contains(err.Error(), testPassword) {
			t.Errorf("error quotes the input: %v", err)
		}
	})
}

func TestReadMissingFile(t *testing.T) {
	id, _ := newServer(t, "a")
	path := filepath.Join(t.TempDir(), "nope.age")
	_, err := Read(path, id)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("error = %v, want a not-exist error naming %s", err, path)
	}
}

func TestWriteKeepsModeAndLeavesNoTempFiles(t *testing.T) {
	_, pub := newServer(t, "a")
	rl := recipients(t, pub)
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials.age")
	creds := []secrets.Credential{secrets.NewCredential("primary", "u", testPassword, "")}

	var temps []string
	testHookBeforeSync = func(tmp string) error {
		temps = append(temps, tmp)
		data, err := os.ReadFile(tmp)
		if err != nil {
			t.Errorf("reading temp file: %v", err)
		}
		if !bytes.HasPrefix(data, []byte("-----BEGIN AGE ENCRYPTED FILE-----")) || bytes.Contains(data, []byte(testPassword)) {
			t.Errorf("temp file %s holds something other than ciphertext:\n%s", tmp, data)
		}
		if filepath.Dir(tmp) != dir {
			t.Errorf("temp file %s is not in the file's directory %s", tmp, dir)
		}
		return nil
	}
	t.Cleanup(func() { testHookBeforeSync = nil })

	if err := Write(path, creds, rl); err != nil {
		t.Fatal(err)
	}
	if mode := stat(t, path).Mode().Perm(); mode != 0o600 {
		t.Errorf("new file has mode %04o, want 0600", mode)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, creds, rl); err != nil {
		t.Fatal(err)
	}
	if mode := stat(t, path).Mode().Perm(); mode != 0o640 {
		t.Errorf("rewritten file has mode %04o, want the 0640 it had", mode)
	}
	if len(temps) != 2 {
		t.Errorf("the hook saw %d temp files, want 2", len(temps))
	}
	assertOnly(t, dir, "credentials.age")
}

func TestWriteFailureLeavesNoTempFile(t *testing.T) {
	_, pub := newServer(t, "a")
	dir := t.TempDir()
	// A non-empty directory where the file should be: the rename fails.
	path := filepath.Join(dir, "credentials.age")
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := Write(path, []secrets.Credential{secrets.NewCredential("primary", "u", testPassword, "")}, recipients(t, pub))
	if err == nil || !strings.Contains(err.Error(), "writing credential file "+path) {
		t.Fatalf("error = %v, want one naming %s", err, path)
	}
	assertOnly(t, dir, "credentials.age")
}

func TestWriteRefusesInvalidEntry(t *testing.T) {
	_, pub := newServer(t, "a")
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials.age")
	err := Write(path, []secrets.Credential{secrets.NewCredential("primary", "u", "", "")}, recipients(t, pub))
	if err == nil || err.Error() != "writing "+path+`: entry "primary" has no password` {
		t.Fatalf("error = %v", err)
	}
	assertOnly(t, dir)
}

func stat(t *testing.T, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// assertOnly checks that dir holds exactly the named entries.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

func TestSourceFetch(t *testing.T) {
	id, pub := newServer(t, "a")
	path := filepath.Join(t.TempDir(), "credentials.age")
	creds := []secrets.Credential{
		secrets.NewCredential("primary", "a@example.com", testPassword, ""),
		secrets.NewCredential("secondary", "b@example.com", "other-password", ""),
	}
	if err := Write(path, creds, recipients(t, pub)); err != nil {
		t.Fatal(err)
	}
	src := NewSource(path, id)
	if got := src.String(); got != "age file "+path {
		t.Errorf("String() = %q", got)
	}
	got, err := src.Fetch(context.Background(), []string{"primary"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got["primary"].SameSecret(creds[0]) || got["primary"].Version == "" {
		t.Errorf("Fetch(primary) = %v", got)
	}

	got, err = src.Fetch(context.Background(), []string{"primary", "tertiary"})
	var nf *secrets.NotFoundError
	if got != nil || !errors.As(err, &nf) || !errors.Is(err, secrets.ErrNotFound) {
		t.Fatalf("Fetch(missing) = %v, %v; want nothing and *secrets.NotFoundError", got, err)
	}
	if want := `age file ` + path + ` has no entry "tertiary"`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

// watch starts src.Watch and returns its channel once the watch is in place.
func watch(t *testing.T, src *Source) <-chan struct{} {
	t.Helper()
	ready := make(chan struct{})
	testHookWatching = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, changed) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch returned %v after its context ended, want nil", err)
		}
		testHookWatching = nil
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Watch ended early: %v", err)
	}
	return changed
}

// waitChanged fails the test if no change is reported within a generous
// bound (this is a liveness check, not a timing assertion).
func waitChanged(t *testing.T, changed <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatalf("no change reported after %s", what)
	}
}

func TestSourceWatchSeesAtomicRename(t *testing.T) {
	id, pub := newServer(t, "a")
	rl := recipients(t, pub)
	path := filepath.Join(t.TempDir(), "credentials.age")
	if err := Write(path, []secrets.Credential{secrets.NewCredential("primary", "u", "first-password", "")}, rl); err != nil {
		t.Fatal(err)
	}
	src := NewSource(path, id)
	changed := watch(t, src)
	if err := Write(path, []secrets.Credential{secrets.NewCredential("primary", "u", "second-password", "")}, rl); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, changed, "a rename over the file")
	got, err := src.Fetch(context.Background(), []string{"primary"})
	if err != nil {
		t.Fatal(err)
	}
	if got["primary"].Password() != "second-password" {
		t.Error("Fetch after the change returned the old password")
	}
}

func TestSourceWatchSeesKubernetesSwap(t *testing.T) {
	id, pub := newServer(t, "a")
	rl := recipients(t, pub)
	dir := t.TempDir()
	// The layout kubelet makes for a mounted Secret:
	//   credentials.age -> ..data/credentials.age, ..data -> ..v1
	for _, v := range []string{"..v1", "..v2"} {
		if err := os.Mkdir(filepath.Join(dir, v), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := Write(filepath.Join(dir, "..v1", "credentials.age"), []secrets.Credential{secrets.NewCredential("primary", "u", "first-password", "")}, rl); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(dir, "..v2", "credentials.age"), []secrets.Credential{secrets.NewCredential("primary", "u", "second-password", "")}, rl); err != nil {
		t.Fatal(err)
	}
	must(t, os.Symlink("..v1", filepath.Join(dir, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "credentials.age"), filepath.Join(dir, "credentials.age")))
	path := filepath.Join(dir, "credentials.age")

	src := NewSource(path, id)
	changed := watch(t, src)
	// kubelet's swap: a new link, renamed over ..data.
	must(t, os.Symlink("..v2", filepath.Join(dir, "..data_tmp")))
	must(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	waitChanged(t, changed, "a swap of the ..data link")
	got, err := src.Fetch(context.Background(), []string{"primary"})
	if err != nil {
		t.Fatal(err)
	}
	if got["primary"].Password() != "second-password" {
		t.Error("Fetch after the swap returned the old password")
	}
}

func TestTouches(t *testing.T) {
	tests := []struct {
		name string
		op   string
		want bool
	}{
		{"/etc/sealrelay/credentials.age", "create", true},
		{"/etc/sealrelay/credentials.age", "write", true},
		{"/etc/sealrelay/credentials.age", "rename", true},
		{"/etc/sealrelay/credentials.age", "remove", true},
		{"/etc/sealrelay/credentials.age", "chmod", false},
		{"/etc/sealrelay/..data", "create", true},
		{"/etc/sealrelay/.credentials.age.tmp-123", "create", false},
		{"/etc/sealrelay/identity.txt", "write", false},
	}
	for _, tt := range tests {
		if got := touches(event(tt.name, tt.op), "credentials.age"); got != tt.want {
			t.Errorf("touches(%s %s) = %v, want %v", tt.op, tt.name, got, tt.want)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func event(name, op string) fsnotify.Event {
	ops := map[string]fsnotify.Op{"create": fsnotify.Create, "write": fsnotify.Write, "rename": fsnotify.Rename, "remove": fsnotify.Remove, "chmod": fsnotify.Chmod}
	return fsnotify.Event{Name: name, Op: ops[op]}
}
