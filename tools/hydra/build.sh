#!/bin/sh
# build.sh prints the path of the ORY Hydra (OAuth2 server) binary the tests
# run, building it first if the cached copy is missing or does not run.
#
# The binary (~57 MB, Apache-2.0, used only as a test peer) is never
# committed: it lives in ${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}.
# It is built from this directory's module (its go.mod has
# `tool github.com/ory/hydra/v2` at v2.3.0 and the replace of
# gobuffalo/pop/v6 that Hydra's own go.mod carries, which a dependency's
# replace lines cannot pass on) with the build tags sqlite,json1, so that
# `DSN=memory` works, into a temporary file that is renamed into place only
# after it runs, so a killed build never leaves a broken binary behind.
# Concurrent callers wait for one build (flock).
#
# Build output goes to stderr; stdout carries only the path.
set -eu

version=2.3.0
cache=${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}
bin=$cache/hydra-$version
GO=${GO:-go}

# Hydra reports the version the build stamps into it (-X below); a plain
# `go build` says "master".
works() {
	"$1" version 2>/dev/null | grep -q "^Version: *v$version\$"
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
echo "build.sh: building ORY Hydra v$version into $bin (a cold build takes a few minutes)" >&2
(cd "$here" && GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=1 "$GO" build -tags sqlite,json1 \
	-ldflags "-X github.com/ory/hydra/v2/driver/config.Version=v$version" \
	-o "$tmp" github.com/ory/hydra/v2) >&2
if ! works "$tmp"; then
	echo "build.sh: the built binary does not report Hydra v$version" >&2
	exit 1
fi
mv -f "$tmp" "$bin"
trap - EXIT INT TERM
echo "$bin"
