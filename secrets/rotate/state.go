package rotate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/sealrelay/sealrelay/internal/safeio"
)

// Step is the last step of a rotation that completed.
type Step string

// The steps, in order; the rotation is done, and its state file gone,
// when the fifth (retire) completes.
const (
	StepMade     Step = "made"     // 1: the new secret is made and kept, sealed
	StepSet      Step = "set"      // 2: the relay accepts it (set hook)
	StepResealed Step = "resealed" // 3: the entry holds it
	StepSwitched Step = "switched" // 4: every agent holds it
)

// number is the step's position in the five.
func (s Step) number() int {
	switch s {
	case StepMade:
		return 1
	case StepSet:
		return 2
	case StepResealed:
		return 3
	case StepSwitched:
		return 4
	}
	return 0
}

// stateFormat is the version of the state file's layout.
const stateFormat = 1

// State is an unfinished rotation, as its state file holds it. It never
// holds a secret in clear: Previous and Pending are the entry before the
// rotation and the new one, sealed (age file) or as references (Vault).
type State struct {
	Format int    `json:"format"`
	Name   string `json:"name"`
	Source string `json:"source"`
	Kind   string `json:"kind"`
	// Step is the last step completed.
	Step Step `json:"step"`
	// SetHookRun says the set hook was started: the relay may hold the new
	// secret, so a roll back must retire it.
	SetHookRun bool `json:"set_hook_run"`
	// MadeByHook says the make hook made the new secret: it may be valid
	// at the provider from step 1 on.
	MadeByHook bool `json:"made_by_hook,omitempty"`
	// Aborting says --abort began; Restored that it put the previous
	// entry back.
	Aborting bool `json:"aborting,omitempty"`
	Restored bool `json:"restored,omitempty"`

	OldUsername   string `json:"old_username"`
	OldGeneration string `json:"old_generation"`
	NewUsername   string `json:"new_username"`
	NewGeneration string `json:"new_generation"`

	Previous string `json:"previous"`
	Pending  string `json:"pending"`

	Started time.Time  `json:"started"`
	Updated time.Time  `json:"updated"`
	Log     []LogEntry `json:"log"`
}

// LogEntry is one line of a rotation's log.
type LogEntry struct {
	At   time.Time `json:"at"`
	Text string    `json:"text"`
}

// maxState caps a state file.
const maxState = 1 << 20

// loadState reads the state file at path; (nil, nil) when there is none.
func loadState(path string) (*State, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rotation state: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("rotation state: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, &Error{Msg: fmt.Sprintf("rotation state %s has mode %04o: others may read or change it", path, fi.Mode().Perm()),
			hint: "chmod 600 " + path}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxState+1))
	if err != nil {
		return nil, fmt.Errorf("rotation state %s: %w", path, err)
	}
	var st State
	if len(b) > maxState || json.Unmarshal(b, &st) != nil || st.Format != stateFormat || st.Name == "" || st.Step.number() == 0 {
		return nil, &Error{Msg: fmt.Sprintf("rotation state %s is damaged or of another version", path),
			hint: "read it (it holds no secret in clear), put the credential and the relay right by hand, then remove it"}
	}
	return &st, nil
}

// save writes st to path through the one durable write, mode 0600.
func (st *State) save(path string, now time.Time) error {
	st.Updated = now
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	err = safeio.WriteFile(path, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	}, safeio.Options{Mode: 0o600})
	if err != nil {
		return fmt.Errorf("writing the rotation state: %w", err)
	}
	return nil
}

// lock takes an exclusive lock on path+".lock" (made mode 0600 if need
// be), so that two rotations of one entry never run at once; the returned
// function releases it.
func lock(path string) (func(), error) {
	lp := path + ".lock"
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("rotation lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &Error{Msg: "another creds rotate of this entry is running (it holds " + lp + ")",
				hint: "wait for it to finish"}
		}
		return nil, fmt.Errorf("rotation lock %s: %w", lp, err)
	}
	return func() { f.Close() }, nil
}

// Error is a rotation error that may carry the operator's fix.
type Error struct {
	Msg  string
	Err  error
	hint string
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Hint is the fix, where known.
func (e *Error) Hint() string { return e.hint }
