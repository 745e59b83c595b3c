package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"
	"unicode/utf8"
)

// envelopeVersion is the format version written in every envelope.
const envelopeVersion = 1

// Limits the envelope reader enforces. They are far above what the listener
// accepts, and exist so that a damaged or hostile file cannot make the agent
// allocate without bound.
const (
	maxEnvelopeBytes = 1 << 20 // whole envelope file
	maxRecipients    = 10000   // recipients in one envelope
	maxAddressBytes  = 1024    // one address (RFC 5321 allows 256 for a path)
	maxErrorBytes    = 4096    // one stored error text; longer ones are cut
	maxAttempts      = 1 << 20 // attempts counter
)

// State is where a recipient stands.
type State string

const (
	StatePending   State = "pending"   // not yet delivered; will be tried again
	StateDelivered State = "delivered" // the relay accepted it
	StateFailed    State = "failed"    // permanent failure or expiry; in the DSN
)

func (s State) valid() bool {
	return s == StatePending || s == StateDelivered || s == StateFailed
}

// envelope is an item's metadata, as kept in memory and written to ID.env.
type envelope struct {
	Version     int         `json:"version"`
	ID          string      `json:"id"`
	Received    time.Time   `json:"received"`
	From        string      `json:"from"` // "" is the null sender <>
	Size        int64       `json:"size"`
	SHA256      string      `json:"sha256,omitempty"` // of the message file; checked at load (older envelopes lack it)
	Attempts    int         `json:"attempts"`
	NextAttempt time.Time   `json:"next_attempt"`
	LastAttempt time.Time   `json:"last_attempt,omitzero"`
	LastError   string      `json:"last_error,omitempty"`
	Recipients  []recipient `json:"recipients"`
}

// recipient is one envelope recipient and its state.
type recipient struct {
	Address string `json:"address"`
	State   State  `json:"state"`
	// Status is the DSN status code (RFC 3463) of a failed recipient.
	Status string `json:"status,omitempty"`
	// ReplyCode is the relay's reply code (550) that failed the recipient,
	// 0 when no relay reply did.
	ReplyCode int    `json:"reply_code,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// clone returns a deep copy of e.
func (e *envelope) clone() envelope {
	c := *e
	c.Recipients = append([]recipient(nil), e.Recipients...)
	return c
}

// pending returns the indexes of the recipients still pending.
func (e *envelope) pending() []int {
	var p []int
	for i, r := range e.Recipients {
		if r.State == StatePending {
			p = append(p, i)
		}
	}
	return p
}

// failed reports whether any recipient failed.
func (e *envelope) failed() bool {
	for _, r := range e.Recipients {
		if r.State == StateFailed {
			return true
		}
	}
	return false
}

// held reports whether e is finished but cannot be let go: a recipient
// failed and there is nobody to tell, because the sender is the null
// sender (a DSN's sender, or a bounce an application handed over). Such
// an item stays in the queue in a failed state until an operator deletes
// it: it never vanishes silently.
func (e *envelope) held() bool {
	return e.From == "" && e.failed() && len(e.pending()) == 0
}

// marshal encodes e as the indented JSON of an envelope file.
func (e *envelope) marshal() ([]byte, error) {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding envelope of %s: %w", e.ID, err)
	}
	return append(b, '\n'), nil
}

// envelopeWire is the envelope as decoded from disk: pointers tell a missing
// field from a zero one.
type envelopeWire struct {
	Version     *int            `json:"version"`
	ID          *string         `json:"id"`
	Received    *time.Time      `json:"received"`
	From        *string         `json:"from"`
	Size        *int64          `json:"size"`
	SHA256      *string         `json:"sha256"`
	Attempts    *int            `json:"attempts"`
	NextAttempt *time.Time      `json:"next_attempt"`
	LastAttempt *time.Time      `json:"last_attempt"`
	LastError   *string         `json:"last_error"`
	Recipients  []recipientWire `json:"recipients"`
}

type recipientWire struct {
	Address   *string `json:"address"`
	State     *string `json:"state"`
	Status    *string `json:"status"`
	ReplyCode *int    `json:"reply_code"`
	LastError *string `json:"last_error"`
}

// EnvelopeError reports an envelope file that cannot be used, naming the
// file and, where there is one, the field at fault.
type EnvelopeError struct {
	File  string
	Field string // e.g. "recipients[2].state"; "" for the file as a whole
	Err   error
}

func (e *EnvelopeError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("envelope %s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("envelope %s: field %s: %v", e.File, e.Field, e.Err)
}

func (e *EnvelopeError) Unwrap() error { return e.Err }

// readEnvelopeFile reads and checks the envelope at path.
func readEnvelopeFile(path string) (*envelope, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &EnvelopeError{File: path, Err: err}
	}
	defer f.Close()
	return readEnvelope(path, f)
}

// readEnvelope reads an envelope from r, which may hold anything: it caps
// the size, refuses unknown fields and trailing data, requires every
// mandatory field and checks each value. name is used in errors.
func readEnvelope(name string, r io.Reader) (*envelope, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxEnvelopeBytes+1))
	if err != nil {
		return nil, &EnvelopeError{File: name, Err: err}
	}
	if len(data) > maxEnvelopeBytes {
		return nil, &EnvelopeError{File: name, Err: fmt.Errorf("larger than %d bytes", maxEnvelopeBytes)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &EnvelopeError{File: name, Err: errors.New("empty file (torn write?)")}
	}
	var w envelopeWire
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, &EnvelopeError{File: name, Err: fmt.Errorf("not a valid envelope: %w", err)}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &EnvelopeError{File: name, Err: errors.New("data after the envelope")}
	}
	return w.check(name)
}

var (
	statusCode = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)
	sha256Hex  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// check validates w and returns the envelope it describes.
func (w *envelopeWire) check(name string) (*envelope, error) {
	bad := func(field string, format string, args ...any) error {
		return &EnvelopeError{File: name, Field: field, Err: fmt.Errorf(format, args...)}
	}
	missing := func(field string) error { return bad(field, "missing") }

	switch {
	case w.Version == nil:
		return nil, missing("version")
	case *w.Version != envelopeVersion:
		return nil, bad("version", "unsupported version %d (this build reads %d)", *w.Version, envelopeVersion)
	case w.ID == nil:
		return nil, missing("id")
	case !validID(*w.ID):
		return nil, bad("id", "%q is not a spool item id", *w.ID)
	case w.Received == nil:
		return nil, missing("received")
	case w.From == nil:
		return nil, missing("from")
	case w.Size == nil:
		return nil, missing("size")
	case *w.Size < 0:
		return nil, bad("size", "negative (%d)", *w.Size)
	case w.Attempts == nil:
		return nil, missing("attempts")
	case *w.Attempts < 0 || *w.Attempts > maxAttempts:
		return nil, bad("attempts", "%d is out of range [0, %d]", *w.Attempts, maxAttempts)
	case w.NextAttempt == nil:
		return nil, missing("next_attempt")
	case w.Recipients == nil:
		return nil, missing("recipients")
	case len(w.Recipients) == 0:
		return nil, bad("recipients", "empty")
	case len(w.Recipients) > maxRecipients:
		return nil, bad("recipients", "%d recipients, more than %d", len(w.Recipients), maxRecipients)
	}
	if err := checkTime(*w.Received); err != nil {
		return nil, bad("received", "%v", err)
	}
	if err := checkTime(*w.NextAttempt); err != nil {
		return nil, bad("next_attempt", "%v", err)
	}
	if err := checkAddress(*w.From, true); err != nil {
		return nil, bad("from", "%v", err)
	}
	if w.SHA256 != nil && !sha256Hex.MatchString(*w.SHA256) {
		return nil, bad("sha256", "not a hex SHA-256 (64 lowercase hex digits)")
	}
	e := &envelope{
		Version:     *w.Version,
		ID:          *w.ID,
		Received:    *w.Received,
		From:        *w.From,
		Size:        *w.Size,
		SHA256:      deref(w.SHA256),
		Attempts:    *w.Attempts,
		NextAttempt: *w.NextAttempt,
		Recipients:  make([]recipient, len(w.Recipients)),
	}
	if w.LastAttempt != nil && !w.LastAttempt.IsZero() {
		if err := checkTime(*w.LastAttempt); err != nil {
			return nil, bad("last_attempt", "%v", err)
		}
		e.LastAttempt = *w.LastAttempt
	}
	if w.LastError != nil {
		if err := checkText(*w.LastError); err != nil {
			return nil, bad("last_error", "%v", err)
		}
		e.LastError = *w.LastError
	}
	for i, rw := range w.Recipients {
		r, err := rw.check(name, i)
		if err != nil {
			return nil, err
		}
		e.Recipients[i] = r
	}
	return e, nil
}

// check validates the recipient at index i of the envelope name.
func (rw *recipientWire) check(name string, i int) (recipient, error) {
	bad := func(f string, format string, args ...any) error {
		return &EnvelopeError{File: name, Field: fmt.Sprintf("recipients[%d].%s", i, f), Err: fmt.Errorf(format, args...)}
	}
	switch {
	case rw.Address == nil:
		return recipient{}, bad("address", "missing")
	case rw.State == nil:
		return recipient{}, bad("state", "missing")
	case !State(*rw.State).valid():
		return recipient{}, bad("state", "%q is not pending, delivered or failed", *rw.State)
	}
	if err := checkAddress(*rw.Address, false); err != nil {
		return recipient{}, bad("address", "%v", err)
	}
	r := recipient{Address: *rw.Address, State: State(*rw.State)}
	if rw.Status != nil && *rw.Status != "" {
		if !statusCode.MatchString(*rw.Status) {
			return recipient{}, bad("status", "%q is not a status code like 5.1.1", *rw.Status)
		}
		r.Status = *rw.Status
	}
	if rw.ReplyCode != nil && *rw.ReplyCode != 0 {
		if !failureReply(*rw.ReplyCode) {
			return recipient{}, bad("reply_code", "%d is not an SMTP failure reply code (400 to 599)", *rw.ReplyCode)
		}
		r.ReplyCode = *rw.ReplyCode
	}
	if rw.LastError != nil {
		if err := checkText(*rw.LastError); err != nil {
			return recipient{}, bad("last_error", "%v", err)
		}
		r.LastError = *rw.LastError
	}
	return r, nil
}

// failureReply reports whether code is an SMTP reply code of a failure.
func failureReply(code int) bool { return code >= 400 && code <= 599 }

// checkTime accepts times a spool could have written.
func checkTime(t time.Time) error {
	if y := t.Year(); y < 2000 || y > 9999 {
		return fmt.Errorf("year %d is out of range", y)
	}
	return nil
}

// checkAddress accepts an envelope address: valid UTF-8 without control
// characters (so it can never break a line of SMTP, a header or a log),
// bounded. Spaces and angle brackets are allowed: they occur in quoted
// local parts ("john doe"@example.com). The empty address is only the null
// sender.
func checkAddress(a string, nullOK bool) error {
	switch {
	case a == "" && nullOK:
		return nil
	case a == "":
		return errors.New("empty address")
	case len(a) > maxAddressBytes:
		return fmt.Errorf("address longer than %d bytes", maxAddressBytes)
	case !utf8.ValidString(a):
		return errors.New("address is not valid UTF-8")
	}
	for _, c := range a {
		if c < ' ' || c == 0x7f {
			return fmt.Errorf("address contains the character %q", c)
		}
	}
	return nil
}

// checkText accepts a stored error text.
func checkText(s string) error {
	if len(s) > maxErrorBytes {
		return fmt.Errorf("longer than %d bytes", maxErrorBytes)
	}
	return nil
}

// errorText turns a delivery error into the text stored in the envelope:
// one line, bounded.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	return oneLine(err.Error(), maxErrorBytes)
}

// oneLine replaces control characters (CR and LF included) with spaces and
// cuts s to at most n bytes without splitting a character.
func oneLine(s string, n int) string {
	b := []byte(s)
	b = bytes.ToValidUTF8(b, []byte("\uFFFD"))
	out := make([]byte, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		if len(out)+utf8.RuneLen(r) > n {
			break
		}
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}
