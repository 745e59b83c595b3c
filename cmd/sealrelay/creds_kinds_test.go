package main

import (
	"regexp"
)

// listed reports whether creds list output has a row for entry name with
// that username.
func listed(out, name, username string) bool {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` +\S+ +` + regexp.QuoteMeta(username) + ` `).MatchString(out)
}
