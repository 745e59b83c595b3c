// Package rig is sealrelay on disk, as the tests, the benchmark and
// `sealrelay demo` set it up: a server key and a credential sealed to it
// (Seal), a config file (WriteConfig, or both at once with WriteSetup),
// the agent run in this process (StartAgent) or the built binary run as a
// child process until it listens (BuildBinary, StartProcess), and one
// message sent as an application sends it (Send).
//
// The demo is part of the release binary, so this package is product
// code: it imports neither "testing" nor any fault injection, and errors
// are returned, not reported to a test. The testing.TB helpers are in
// internal/testing/testlib.
package rig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
	"github.com/sealrelay/sealrelay/secrets/agefile"
)

// The files Seal writes, in the directory it is given.
const (
	IdentityFile    = "identity.txt"
	RecipientsFile  = "recipients.txt"
	CredentialsFile = "credentials.age"
)

// Files are a server key and a credential file sealed to it.
type Files struct {
	Identity    string // the server's age identity, mode 0600
	Recipients  string // the recipient list: the identity's public key
	Credentials string // the sealed credential file
	PublicKey   string // the identity's public key
}

// Seal writes in dir a new server key (IdentityFile, 0600), a recipient
// list holding its public key after the comment line (RecipientsFile), and
// creds sealed to that list (CredentialsFile). No password is in any other
// file.
func Seal(dir, comment string, creds ...secrets.Credential) (*Files, error) {
	f := &Files{
		Identity:    filepath.Join(dir, IdentityFile),
		Recipients:  filepath.Join(dir, RecipientsFile),
		Credentials: filepath.Join(dir, CredentialsFile),
	}
	// The errors name the file already.
	var err error
	if f.PublicKey, err = keys.WriteNew(f.Identity, false); err != nil {
		return nil, err
	}
	if err := os.WriteFile(f.Recipients, []byte("# "+comment+"\n"+f.PublicKey+"\n"), 0o644); err != nil {
		return nil, err
	}
	rl, err := keys.LoadRecipients(f.Recipients)
	if err != nil {
		return nil, err
	}
	if err := agefile.Write(f.Credentials, creds, rl); err != nil {
		return nil, err
	}
	return f, nil
}

// QuickQueue are [queue] keys that retry fast enough for a test.
const QuickQueue = "min_backoff = \"200ms\"\nmax_backoff = \"1s\"\ndrain_timeout = \"5s\"\n"

// Config is a sealrelay.toml with one relay. Relative paths are taken from
// the config file's directory, as sealrelay takes them. A key whose field
// is empty is not written, except where a default is named.
type Config struct {
	// Comment is a comment line at the top.
	Comment string
	// Hostname is the agent's name; default "sealrelay.test".
	Hostname string
	// DataDir is data_dir; default "data".
	DataDir string
	// Listen is the listener's address; default "127.0.0.1:0".
	Listen string
	// ListenExtra are more [listen] keys, one per line.
	ListenExtra string
	// Relay is the one [[relay]].
	Relay Relay
	// Source is [credentials] source.
	Source string
	// Identity and File are [credentials] identity and file; default
	// IdentityFile and CredentialsFile.
	Identity, File string
	// Queue are the [queue] keys, one per line; no [queue] table if empty.
	Queue string
	// Extra is appended verbatim (more tables).
	Extra string
}

// Relay is a config's [[relay]].
type Relay struct {
	// Name is its name; default "upstream".
	Name string
	// Address is the relay host's host:port.
	Address string
	// TLS and Auth are its tls and auth; default "starttls" and
	// "required".
	TLS, Auth string
	// Credential names the credential it uses.
	Credential string
	// CAFile is its ca_file.
	CAFile string
	// ServerName is its server_name; default "localhost".
	ServerName string
	// AllowPlaintextAuth is written only when true.
	AllowPlaintextAuth bool
	// MaxConnections is written only when above 0.
	MaxConnections int
	// Extra are more keys, one per line.
	Extra string
}

// TOML returns the config file's text.
func (c Config) TOML() string {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&c.Hostname, "sealrelay.test")
	def(&c.DataDir, "data")
	def(&c.Listen, "127.0.0.1:0")
	def(&c.Identity, IdentityFile)
	def(&c.File, CredentialsFile)
	r := c.Relay
	def(&r.Name, "upstream")
	def(&r.TLS, "starttls")
	def(&r.Auth, "required")
	def(&r.ServerName, "localhost")

	var b strings.Builder
	key := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%s = %q\n", k, v)
		}
	}
	if c.Comment != "" {
		fmt.Fprintf(&b, "# %s\n", c.Comment)
	}
	key("hostname", c.Hostname)
	key("data_dir", c.DataDir)
	b.WriteString("\n[listen]\n")
	key("address", c.Listen)
	b.WriteString(c.ListenExtra)
	b.WriteString("\n[[relay]]\n")
	key("name", r.Name)
	key("address", r.Address)
	key("tls", r.TLS)
	key("auth", r.Auth)
	key("credential", r.Credential)
	key("ca_file", r.CAFile)
	key("server_name", r.ServerName)
	if r.AllowPlaintextAuth {
		b.WriteString("allow_plaintext_auth = true\n")
	}
	if r.MaxConnections > 0 {
		fmt.Fprintf(&b, "max_connections = %d\n", r.MaxConnections)
	}
	b.WriteString(r.Extra)
	b.WriteString("\n[credentials]\n")
	key("source", c.Source)
	key("identity", c.Identity)
	key("file", c.File)
	if c.Queue != "" {
		b.WriteString("\n[queue]\n")
		b.WriteString(c.Queue)
	}
	b.WriteString(c.Extra)
	return b.String()
}

// WriteConfig writes c to dir/sealrelay.toml and returns its path.
func WriteConfig(dir string, c Config) (string, error) {
	path := filepath.Join(dir, "sealrelay.toml")
	if err := os.WriteFile(path, []byte(c.TOML()), 0o644); err != nil {
		return "", fmt.Errorf("rig: %w", err)
	}
	return path, nil
}

// CredentialName is the entry of the sealed credential file that
// WriteSetup's relay uses.
const CredentialName = "upstream"

// Options describe a sealrelay setup relaying to one relay host.
type Options struct {
	// Relay is the relay host's host:port (required).
	Relay string
	// Auth is the relay's auth policy: required (default), enabled,
	// disabled.
	Auth string
	// User and Password are sealed into credentials.age as entry
	// CredentialName (required).
	User, Password string
	// CAPEM is the relay's CA, written to ca_file (required: the relay is
	// reached with STARTTLS and verified).
	CAPEM []byte
	// ServerName is the TLS name of the relay; default "localhost".
	ServerName string
	// Listen is the listener's address; default "127.0.0.1:0".
	Listen string
	// MaxConnections is the relay's max_connections; 0 keeps the default.
	MaxConnections int
	// ListenExtra is added to the [listen] table verbatim (more keys, one
	// per line).
	ListenExtra string
	// Queue are [queue] keys (QuickQueue, say).
	Queue string
	// Extra is appended to sealrelay.toml verbatim (more tables).
	Extra string
}

// Setup is a sealrelay configuration written to Dir.
type Setup struct {
	Dir    string
	Config string // Dir/sealrelay.toml
}

// WriteSetup writes, in dir: the files of Seal (User and Password sealed
// as CredentialName), relay-ca.pem and sealrelay.toml with the spool under
// dir/data, every path in it absolute.
func WriteSetup(dir string, o Options) (*Setup, error) {
	if o.Relay == "" || o.User == "" || o.Password == "" || len(o.CAPEM) == 0 {
		return nil, errors.New("rig: Options.Relay, User, Password and CAPEM are required")
	}
	f, err := Seal(dir, "rig server", secrets.NewCredential(CredentialName, o.User, o.Password, ""))
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "relay-ca.pem")
	if err := os.WriteFile(caFile, o.CAPEM, 0o644); err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	cfg, err := WriteConfig(dir, Config{
		DataDir:     filepath.Join(dir, "data"),
		Listen:      o.Listen,
		ListenExtra: o.ListenExtra,
		Relay: Relay{Address: o.Relay, Auth: o.Auth, Credential: CredentialName, CAFile: caFile,
			ServerName: o.ServerName, MaxConnections: o.MaxConnections},
		Source:   "age",
		Identity: f.Identity,
		File:     f.Credentials,
		Queue:    o.Queue,
		Extra:    o.Extra,
	})
	if err != nil {
		return nil, err
	}
	return &Setup{Dir: dir, Config: cfg}, nil
}
