#!/bin/sh
# build.sh prints the path of the ORY Hydra (OAuth2 server) binary the tests
# run, building it first if the cached copy is missing or does not run (see
# ../cachedtool.sh: where it is cached, and how a build is made safe).
#
# The binary (~57 MB, Apache-2.0, used only as a test peer) is built from
# this directory's module (its go.mod has `tool github.com/ory/hydra/v2` at
# v2.3.0 and the replace of gobuffalo/pop/v6 that Hydra's own go.mod
# carries, which a dependency's replace lines cannot pass on) with the build
# tags sqlite,json1, so that `DSN=memory` works.
set -eu

name=hydra
version=2.3.0
label="ORY Hydra"
note="a cold build takes a few minutes"
GO=${GO:-go}
here=$(cd "$(dirname "$0")" && pwd)

# Hydra reports the version the build stamps into it (-X below); a plain
# `go build` says "master".
works() {
	"$1" version 2>/dev/null | grep -q "^Version: *v$version\$"
}

build() {
	(cd "$here" && GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=1 "$GO" build -tags sqlite,json1 \
		-ldflags "-X github.com/ory/hydra/v2/driver/config.Version=v$version" \
		-o "$1" github.com/ory/hydra/v2)
}

. "$here/../cachedtool.sh"
cached_tool
