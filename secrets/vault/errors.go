package vault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"

	"github.com/hashicorp/vault/api"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
)

// The kinds of failure an *Error reports; test them with errors.Is. An
// entry that does not exist is reported with secrets.ErrNotFound; one
// that does not fit its kind's schema with secrets.ErrMissingKey (which
// ErrMissingKey is), secrets.ErrUnknownKey or secrets.ErrInvalidEntry.
var (
	ErrConnRefused      = errors.New("connection refused")
	ErrUnreachable      = errors.New("vault unreachable")
	ErrSealed           = errors.New("vault is sealed")
	ErrPermissionDenied = errors.New("permission denied")
	ErrTokenInvalid     = errors.New("vault token revoked or expired")
	ErrLoginFailed      = errors.New("vault login failed")
	ErrWrapTokenUsed    = errors.New("wrapping token already used")
	ErrMissingKey       = secrets.ErrMissingKey
	ErrSealMismatch     = errors.New("sealed setting does not match the stored value")
	ErrUnexpected       = errors.New("unexpected answer from vault")
)

// Error is a failure to read, write or log in to Vault. Its text names the
// Vault path ("secret/data/sealrelay/primary: connection refused: ...") and
// never contains a token, secret ID, JWT or entry value.
type Error struct {
	Path   string // the Vault path involved: "secret/data/sealrelay/primary", "auth/approle/login"
	Kind   error  // ErrConnRefused, ErrSealed, ..., or secrets.ErrNotFound
	Detail string // what else the operator needs: the address, Vault's own message
	Err    error  // the underlying error, if any
	hint   string
}

func (e *Error) Error() string {
	kind := e.Kind.Error()
	if errors.Is(e.Kind, secrets.ErrNotFound) {
		kind = "entry missing"
	}
	if e.Detail == "" {
		return e.Path + ": " + kind
	}
	return e.Path + ": " + kind + ": " + e.Detail
}

// Unwrap returns the kind and the underlying error.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Hint tells the operator what to do, where that is known.
func (e *Error) Hint() string { return e.hint }

// PermissionError reports a token, role ID, secret ID or JWT file whose
// mode lets group or others at it; it is the keys package's error.
type PermissionError = keys.PermissionError

// nodeDown reports whether err means this Vault node cannot serve requests
// now, so another node should be tried.
func nodeDown(err error) bool {
	if err == nil {
		return false
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode == 502 || re.StatusCode == 503 || re.StatusCode == 504
	}
	return isNetError(err)
}

// isNetError reports whether err came from the network: a failed dial,
// read or TLS handshake, a timeout. (Not every error with a Timeout method
// is one: syscall.Errno has one too.)
func isNetError(err error) bool {
	var ue *url.Error
	var oe *net.OpError
	return errors.As(err, &ue) || errors.As(err, &oe) || errors.Is(err, syscall.ECONNREFUSED)
}

// isTimeout reports a network timeout.
func isTimeout(err error) bool {
	var ue *url.Error
	var oe *net.OpError
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ue) && ue.Timeout() || errors.As(err, &oe) && oe.Timeout()
}

// isForbidden reports a 403 from Vault.
func isForbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

// isClientError reports a 4xx answer from Vault: the request itself (or the
// credential in it) was refused.
func isClientError(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode >= 400 && re.StatusCode < 500
}

// vaultMessage returns Vault's own error messages on one line. Vault does
// not echo tokens or values in them.
func vaultMessage(re *api.ResponseError) string {
	var msgs []string
	for _, m := range re.Errors {
		m = strings.Join(strings.Fields(m), " ")
		m = strings.TrimPrefix(m, "1 error occurred: * ")
		if m != "" {
			msgs = append(msgs, m)
		}
	}
	if len(msgs) == 0 {
		return fmt.Sprintf("HTTP %d", re.StatusCode)
	}
	return strings.Join(msgs, "; ")
}

// classify turns an error from the Vault client into an *Error for path.
// Errors that are already ours pass through.
func classify(path, addr string, err error) error {
	if err == nil {
		return nil
	}
	var ours *Error
	if errors.As(err, &ours) || errors.Is(err, keys.ErrUnsafeFile) {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", path, err)
	}
	var ne *nodeError
	if errors.As(err, &ne) {
		addr = strings.Join(ne.addrs, ", ")
	}
	e := &Error{Path: path, Err: err}
	var re *api.ResponseError
	switch {
	case errors.Is(err, api.ErrSecretNotFound):
		e.Kind = secrets.ErrNotFound
	case errors.As(err, &re):
		msg := vaultMessage(re)
		switch {
		case re.StatusCode == 503 && strings.Contains(msg, "sealed"):
			e.Kind, e.Detail = ErrSealed, "vault at "+addr
			e.hint = "unseal it (vault operator unseal), or list another node in [credentials.vault] addresses"
		case re.StatusCode == 403:
			e.Kind, e.Detail = ErrPermissionDenied, msg
		case re.StatusCode == 404:
			e.Kind = secrets.ErrNotFound
		default:
			e.Kind, e.Detail = ErrUnexpected, fmt.Sprintf("HTTP %d from %s: %s", re.StatusCode, addr, msg)
		}
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Kind, e.Detail = ErrConnRefused, "vault at "+addr
		e.hint = "check that vault runs and listens at " + addr + " ([credentials.vault] address)"
	default:
		switch {
		case isTimeout(err):
			e.Kind, e.Detail = ErrUnreachable, "no answer from "+addr+" in time"
		case isNetError(err):
			e.Kind, e.Detail = ErrUnreachable, innermost(err)
		default:
			return err // not from the network: a file that could not be read, a bad setting
		}
		e.hint = "check that vault runs and is reachable at " + addr + " ([credentials.vault] address, ca_file)"
	}
	return e
}

// innermost returns the text of the error a *url.Error wraps (the URL
// itself is known to the caller), or err's text.
func innermost(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
