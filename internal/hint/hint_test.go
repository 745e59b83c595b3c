package hint

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

type hinted struct{ msg, hint string }

func (e *hinted) Error() string { return e.msg }
func (e *hinted) Hint() string  { return e.hint }

// TestAll: hints are found through both Unwrap forms, in order, each once.
func TestAll(t *testing.T) {
	a := &hinted{"a", "fix a"}
	b := &hinted{"b", "fix b"}
	err := fmt.Errorf("outer: %w", errors.Join(a, fmt.Errorf("wrapped: %w", b), &hinted{"a again", "fix a"}))
	if got, want := All(err), []string{"fix a", "fix b"}; !slices.Equal(got, want) {
		t.Errorf("All = %q, want %q", got, want)
	}
	if got := All(errors.New("plain")); got != nil {
		t.Errorf("All(plain) = %q, want none", got)
	}
	if got := All(nil); got != nil {
		t.Errorf("All(nil) = %q, want none", got)
	}
}
