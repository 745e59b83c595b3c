// Package cachedir names the directory where the test tools keep what they
// build or download once (the Vault binary, the unpacked OpenSMTPD), as
// the scripts under tools/ do: ${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}.
package cachedir

import (
	"os"
	"path/filepath"
)

// Path returns name inside the cache directory, or "" if there is no home
// directory to put the cache in.
func Path(name string) string {
	dir := os.Getenv("SEALRELAY_CACHE")
	if dir == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return ""
			}
			base = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(base, "sealrelay")
	}
	return filepath.Join(dir, name)
}
