package keys

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// MaxSealed caps the size of a sealed file or value this package opens.
const MaxSealed = 4 << 20

// binaryHeader starts an age file that is not armored.
const binaryHeader = "age-encryption.org/v1\n"

// NotRecipientError reports that none of this server's keys is among the
// recipients a file was sealed to.
type NotRecipientError struct {
	Name       string   // what was being opened: a file name or a Vault entry
	PublicKeys []string // this server's public keys
}

func (e *NotRecipientError) Error() string {
	return fmt.Sprintf("this server's key %s is not among the recipients of %s",
		strings.Join(e.PublicKeys, ", "), e.Name)
}

// Hint tells the operator how to let this server read the file.
func (e *NotRecipientError) Hint() string {
	return "add this server's public key to the recipient list, then run `sealrelay creds reencrypt` on a server that is a recipient"
}

// CorruptError reports a sealed file that is truncated, altered or not an
// age file at all. No plaintext is returned with it.
type CorruptError struct {
	Name   string
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s is corrupt or truncated: %s", e.Name, e.Reason)
}

// Hint suggests where a good copy comes from.
func (e *CorruptError) Hint() string {
	return "restore the file from the copy it was distributed from, or seal it again with `sealrelay creds set`"
}

// Seal encrypts plaintext to every recipient of l as an ASCII-armored age
// file. It does not touch the disk.
func Seal(plaintext []byte, l *RecipientList) ([]byte, error) {
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, l.Recipients()...)
	if err != nil {
		return nil, fmt.Errorf("encrypting to %s: %w", l.File, pluginRecipientError(err))
	}
	if _, err := w.Write(plaintext); err != nil {
		return nil, fmt.Errorf("encrypting to %s: %w", l.File, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encrypting to %s: %w", l.File, err)
	}
	if err := aw.Close(); err != nil {
		return nil, fmt.Errorf("encrypting to %s: %w", l.File, err)
	}
	return buf.Bytes(), nil
}

// Open decrypts an age file, armored or binary, with id; name is used in
// errors. It reads the payload to its end and checks its authentication
// before returning anything, so a truncated or altered file yields an error
// and no data. Errors never quote the input.
func Open(sealed []byte, id *Identity, name string) ([]byte, error) {
	if len(sealed) > MaxSealed {
		return nil, &CorruptError{Name: name, Reason: fmt.Sprintf("larger than %d bytes", MaxSealed)}
	}
	var src io.Reader
	trimmed := bytes.TrimLeft(sealed, " \t\r\n")
	switch {
	case bytes.HasPrefix(trimmed, []byte(armor.Header)):
		src = armor.NewReader(bytes.NewReader(sealed))
	case bytes.HasPrefix(sealed, []byte(binaryHeader)):
		src = bytes.NewReader(sealed)
	case len(bytes.TrimSpace(sealed)) == 0:
		return nil, &CorruptError{Name: name, Reason: "it is empty"}
	default:
		return nil, &CorruptError{Name: name, Reason: "not an age file (no \"" + armor.Header + "\" line)"}
	}
	r, err := age.Decrypt(src, id.Identities()...)
	if err != nil {
		return nil, openError(err, id, name)
	}
	plain, err := io.ReadAll(io.LimitReader(r, MaxSealed+1))
	if err != nil {
		clear(plain)
		return nil, openError(err, id, name)
	}
	if len(plain) > MaxSealed {
		clear(plain)
		return nil, &CorruptError{Name: name, Reason: fmt.Sprintf("plaintext larger than %d bytes", MaxSealed)}
	}
	return plain, nil
}

// openError turns an age error into one of ours. Armor errors can quote a
// line of the input, so their text is not passed on.
func openError(err error, id *Identity, name string) error {
	var nm *age.NoIdentityMatchError
	var ae *armor.Error
	var pe *PluginError
	switch {
	case errors.As(err, &pe):
		return fmt.Errorf("opening %s: %w", name, pe)
	case errors.As(err, &nm):
		return &NotRecipientError{Name: name, PublicKeys: id.PublicKeys()}
	case errors.As(err, &ae):
		return &CorruptError{Name: name, Reason: "the armored text is damaged or cut short"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &CorruptError{Name: name, Reason: "it ends too early"}
	case strings.Contains(err.Error(), "header"):
		return &CorruptError{Name: name, Reason: "its header is damaged"}
	default:
		return &CorruptError{Name: name, Reason: "its content failed authentication (altered or cut short)"}
	}
}
