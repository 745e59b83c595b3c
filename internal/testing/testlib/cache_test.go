package testlib

import (
	"path/filepath"
	"testing"
)

func TestCachePath(t *testing.T) {
	t.Setenv("SEALRELAY_CACHE", "/c")
	if got := CachePath("x"); got != "/c/x" {
		t.Errorf("with SEALRELAY_CACHE: %q", got)
	}
	t.Setenv("SEALRELAY_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/x")
	if got := CachePath("y"); got != "/x/sealrelay/y" {
		t.Errorf("with XDG_CACHE_HOME: %q", got)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/h")
	if got := CachePath("z"); got != filepath.Join("/h", ".cache", "sealrelay", "z") {
		t.Errorf("with HOME: %q", got)
	}
}
