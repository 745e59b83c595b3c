#!/bin/sh
# build.sh prints the path of the Vault server binary the tests run, building
# it first if the cached copy is missing or does not run.
#
# The binary (~500 MB, Business Source License, used only as a test peer) is
# never committed: it lives in ${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}.
# It is built from this directory's module (its go.mod has
# `tool github.com/hashicorp/vault` at v1.21.0) into a temporary file that is
# renamed into place only after it runs, so a killed build never leaves a
# broken binary behind. Concurrent callers wait for one build (flock).
#
# Build output goes to stderr; stdout carries only the path.
set -eu

version=1.21.0
cache=${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}
bin=$cache/vault-$version
GO=${GO:-go}

works() {
	"$1" version 2>/dev/null | grep -q "Vault v$version"
}

if works "$bin"; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
if command -v flock >/dev/null 2>&1; then
	exec 9>"$bin.lock"
	flock 9
	# Another caller may have built it while this one waited.
	if works "$bin"; then
		echo "$bin"
		exit 0
	fi
fi

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp "$bin.tmp.XXXXXX")
trap 'rm -f "$tmp"' EXIT INT TERM
echo "build.sh: building Vault v$version into $bin (a cold build takes 10-20 minutes)" >&2
(cd "$here" && GOWORK=off GOFLAGS=-mod=readonly "$GO" build -o "$tmp" github.com/hashicorp/vault) >&2
if ! works "$tmp"; then
	echo "build.sh: the built binary does not report Vault v$version" >&2
	exit 1
fi
mv -f "$tmp" "$bin"
trap - EXIT INT TERM
echo "$bin"
