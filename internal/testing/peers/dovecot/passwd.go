package dovecot

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Passwords returns a user's live passwords, first (the one CRAM-MD5 and
// SCRAM use) first.
func (s *Server) Passwords(user string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.passwords[strings.ToLower(user)])
}

// SetPassword makes password the user's only password (creating the
// user if needed). When it returns, Dovecot checks against it.
func (s *Server) SetPassword(t testing.TB, user, password string) {
	t.Helper()
	s.change(t, user, password, func(cur []string) ([]string, error) { return []string{password}, nil })
}

// AddPassword gives the user one more live password beside the ones it
// has, as the first step of a rotation; it fails the test when the user
// has Slots passwords already.
func (s *Server) AddPassword(t testing.TB, user, password string) {
	t.Helper()
	s.change(t, user, password, func(cur []string) ([]string, error) {
		if slices.Contains(cur, password) {
			return cur, nil
		}
		if len(cur) >= s.slots {
			return nil, fmt.Errorf("user %s has %d passwords, the most Config.Slots allows", user, len(cur))
		}
		return append(cur, password), nil
	})
}

// RemovePassword takes one password away from the user, as the last step
// of a rotation; the others move up. It fails the test if the user does
// not have it.
func (s *Server) RemovePassword(t testing.TB, user, password string) {
	t.Helper()
	s.change(t, user, password, func(cur []string) ([]string, error) {
		i := slices.Index(cur, password)
		if i < 0 {
			return nil, fmt.Errorf("user %s does not have that password", user)
		}
		return slices.Delete(cur, i, i+1), nil
	})
}

func (s *Server) change(t testing.TB, user, password string, f func([]string) ([]string, error)) {
	t.Helper()
	user = strings.ToLower(user)
	if err := checkEntry(user, password); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next, err := f(slices.Clone(s.passwords[user]))
	if err != nil {
		t.Fatalf("dovecot: %v", err)
	}
	if len(next) == 0 {
		delete(s.passwords, user)
	} else {
		s.passwords[user] = next
	}
	if err := s.writePasswd(); err != nil {
		t.Fatal(err)
	}
	// Dovecot looks at a passwd-file at most once a second: from the next
	// second on, every lookup sees the new files.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
}

// checkEntry refuses what would break a passwd-file line.
func checkEntry(user, password string) error {
	if user == "" || strings.ContainsAny(user, ": \t\r\n") {
		return fmt.Errorf("dovecot: user name %q cannot go into a passwd-file", user)
	}
	if strings.ContainsAny(password, ":\r\n") {
		return fmt.Errorf("dovecot: the password of %s holds ':' or a line break, which a passwd-file cannot", user)
	}
	return nil
}

// PasswdFiles returns the passwd-files, one per slot in passdb order, as
// an operator's rotation hook edits them. Once a hook has changed them,
// Passwords and the helpers that change passwords no longer know what
// they hold: use one or the other in a test.
func (s *Server) PasswdFiles() []string {
	out := make([]string, s.slots)
	for i := range out {
		out[i] = s.passwdFile(i)
	}
	return out
}

// passwdFile is the file of slot i.
func (s *Server) passwdFile(i int) string {
	return filepath.Join(s.dir, "passwd."+strconv.Itoa(i))
}

// writePasswd writes every slot's file, in slot order: a password moving
// from slot 1 to slot 0 is in both for a moment, never in neither. Each
// file is written to a temporary file, readable by the dovecot group only,
// and renamed into place with an mtime no earlier file had, so that
// Dovecot reads it again even when its size did not change.
func (s *Server) writePasswd() error {
	mtime := time.Now().Truncate(time.Second)
	if !mtime.After(s.mtime) {
		mtime = s.mtime.Add(time.Second)
	}
	s.mtime = mtime
	for i := range s.slots {
		var b strings.Builder
		for _, user := range slices.Sorted(maps.Keys(s.passwords)) {
			if pw := s.passwords[user]; i < len(pw) {
				fmt.Fprintf(&b, "%s:{PLAIN}%s::::::\n", user, pw[i])
			}
		}
		path := s.passwdFile(i)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(b.String()), 0o640); err != nil {
			return fmt.Errorf("dovecot: %w", err)
		}
		if err := os.Chown(tmp, 0, s.gid); err != nil {
			return fmt.Errorf("dovecot: %w", err)
		}
		if err := os.Chtimes(tmp, mtime, mtime); err != nil {
			return fmt.Errorf("dovecot: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("dovecot: %w", err)
		}
	}
	return nil
}
