package maildrop

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealrelay/sealrelay/internal/safeio"
)

// magic is the first line of every maildrop file.
const magic = "sealrelay-maildrop 1\n"

// maxEnvelope bounds the envelope line of a file.
const maxEnvelope = 1 << 20

// Names in the maildrop: a message is "m." followed by 32 hex digits, the
// first 16 the time it was written (so names sort by age), the rest
// random; safeio's temporary files start with "."; files the agent could
// not take start with "bad.".
const (
	msgPrefix = "m."
	badPrefix = "bad."
)

// Envelope is what sendmail says about a message, beside the message.
type Envelope struct {
	// Sender is the sender sendmail was asked for (-f), as given; nil
	// when none was. "" is the null sender.
	Sender *string `json:"sender,omitempty"`
	// FullName is the -F name, for a From: header the agent adds when the
	// message has none.
	FullName string `json:"full_name,omitempty"`
	// Recipients as given: an address without a domain gets the agent's
	// hostname.
	Recipients []string `json:"recipients"`
}

// SubmitError is a failure to leave a message in the maildrop. Stage says
// where: "open" (the maildrop), "create", "write" or "commit".
type SubmitError struct {
	Stage string
	Dir   string
	Err   error
}

func (e *SubmitError) Error() string {
	return fmt.Sprintf("maildrop %s: %s: %v", e.Dir, e.Stage, e.Err)
}

func (e *SubmitError) Unwrap() error { return e.Err }

// Hint says what to do about the common failures.
func (e *SubmitError) Hint() string {
	switch {
	case errors.Is(e.Err, fs.ErrNotExist) && e.Stage == "open":
		return fmt.Sprintf("the agent creates %s when it starts (sealrelay serve); or the config this command read is not the agent's: give it with -C", e.Dir)
	case errors.Is(e.Err, fs.ErrPermission):
		return fmt.Sprintf("local users need to reach %s: its directory must be searchable by others (chmod o+x %s) and the maildrop mode 3733, as the agent makes it", e.Dir, filepath.Dir(e.Dir))
	case errors.Is(e.Err, unix.ENOSPC), errors.Is(e.Err, unix.EDQUOT):
		return "the file system is full (or your quota is used up); try again later"
	}
	return ""
}

// Submit leaves a message in the maildrop dir and returns its file name
// once it is durable. msg is the message with CRLF line endings.
func Submit(dir string, env Envelope, msg []byte) (string, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return "", &SubmitError{"open", dir, err}
	}
	if !fi.IsDir() {
		return "", &SubmitError{"open", dir, unix.ENOTDIR}
	}
	head, err := json.Marshal(env)
	if err != nil {
		return "", &SubmitError{"write", dir, err}
	}
	name, err := newName(time.Now())
	if err != nil {
		return "", &SubmitError{"create", dir, err}
	}
	path := filepath.Join(dir, name)
	// The directory fsync of Commit needs to open the directory, which a
	// user who may not list it cannot: then syncfs(2) of the file system,
	// through the file itself (opened before the rename: once renamed,
	// the agent may take and remove it at once), makes the rename durable
	// instead.
	var keep *os.File
	syncDir := func() error {
		err := safeio.SyncDir(dir)
		if !errors.Is(err, fs.ErrPermission) {
			return err
		}
		return unix.Syncfs(int(keep.Fd()))
	}
	f, err := safeio.Create(path, safeio.Options{Mode: 0o640, SyncDir: syncDir})
	if err != nil {
		return "", &SubmitError{"create", dir, err}
	}
	if keep, err = os.Open(f.TempName()); err != nil {
		f.Abort()
		return "", &SubmitError{"create", dir, err}
	}
	defer keep.Close()
	w := bufio.NewWriter(f)
	w.WriteString(magic)
	w.Write(head)
	w.WriteByte('\n')
	w.Write(msg)
	if err := w.Flush(); err != nil {
		f.Abort()
		return "", &SubmitError{"write", dir, err}
	}
	if err := f.Commit(); err != nil {
		return "", &SubmitError{"commit", dir, err}
	}
	return name, nil
}

// newName is "m." + 16 hex digits of time + 16 random hex digits.
func newName(now time.Time) (string, error) {
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%016x%s", msgPrefix, now.UnixNano(), hex.EncodeToString(r[:])), nil
}

// parse reads a maildrop file: the magic line, the envelope, the message.
// Its errors say what is wrong, for the log.
func parse(data []byte) (Envelope, []byte, error) {
	var env Envelope
	if !bytes.HasPrefix(data, []byte(magic)) {
		return env, nil, errors.New("not a maildrop file (no " + strings.TrimSpace(magic) + " line)")
	}
	rest := data[len(magic):]
	nl := bytes.IndexByte(rest, '\n')
	if nl < 0 || nl > maxEnvelope {
		return env, nil, fmt.Errorf("no envelope line within %d bytes", maxEnvelope)
	}
	dec := json.NewDecoder(bytes.NewReader(rest[:nl]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return env, nil, fmt.Errorf("envelope: %v", err)
	}
	if dec.More() {
		return env, nil, errors.New("envelope: trailing data")
	}
	return env, rest[nl+1:], nil
}

// readLimited reads r up to limit bytes; more is an error.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}
