package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/BurntSushi/toml"
)

// Error is an error in a config file, naming the file, the line
// where known, and the key.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Key == "" {
		return loc + ": " + e.Msg
	}
	return loc + ": " + e.Key + ": " + e.Msg
}

// Load reads, defaults and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(data, path)
}

// Parse parses and validates config data; file names it in errors.
// Relative paths in the config are taken relative to the file's directory.
func Parse(data []byte, file string) (*Config, error) {
	c, err := decode(data, file)
	if err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadSubmission reads the config at path as sendmail needs it: data_dir
// (the maildrop), hostname, the listener's limits and [sendmail]. Only
// those are validated, so that what a local user cannot see (a relay's
// ca_file, Vault's files) does not stop their mail; the agent validates
// the rest.
func LoadSubmission(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := decode(data, path)
	if err != nil {
		return nil, err
	}
	for _, check := range []func() error{c.validateTop, c.validateListen, c.validateSendmail} {
		if err := check(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// decode reads config data over Default: each [[relay]] and [[route]]
// gets its own defaults; relative paths are resolved and what depends on
// other keys is filled in. It refuses unknown keys but validates nothing.
func decode(data []byte, file string) (*Config, error) {
	if len(data) > maxConfigFile {
		return nil, &Error{File: file, Msg: fmt.Sprintf("larger than %d bytes", maxConfigFile)}
	}
	c := Default()
	c.File, c.raw = file, data
	// Relays are decoded raw first, so that each gets its defaults before
	// its own keys are applied.
	var raw struct {
		Relays []toml.Primitive `toml:"relay"`
		Routes []toml.Primitive `toml:"route"`
	}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw)
	if err != nil {
		return nil, tomlError(file, err)
	}
	md2, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		return nil, tomlError(file, err)
	}
	c.Relays = nil
	for i, p := range raw.Relays {
		r := defaultRelay(i)
		if err := md.PrimitiveDecode(p, &r); err != nil {
			return nil, tomlError(file, err)
		}
		c.Relays = append(c.Relays, r)
	}
	c.Routes = nil
	for i, p := range raw.Routes {
		r := defaultRoute(i)
		if err := md.PrimitiveDecode(p, &r); err != nil {
			return nil, tomlError(file, err)
		}
		c.Routes = append(c.Routes, r)
	}
	for _, k := range md2.Undecoded() {
		return nil, &Error{File: file, Key: k.String(), Msg: "unknown key"}
	}
	c.resolve(filepath.Dir(file))
	c.normalize()
	return c, nil
}

// tomlError turns a TOML decoding error into an Error with a line and
// key. Config files hold no secrets, so quoting values is fine.
func tomlError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: file, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
	}
	return &Error{File: file, Msg: err.Error()}
}
