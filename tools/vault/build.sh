#!/bin/sh
# build.sh prints the path of the Vault server binary the tests run, building
# it first if the cached copy is missing or does not run (see
# ../cachedtool.sh: where it is cached, and how a build is made safe).
#
# The binary (~500 MB, Business Source License, used only as a test peer)
# is built from this directory's module (its go.mod has
# `tool github.com/hashicorp/vault` at v1.21.0).
set -eu

name=vault
version=1.21.0
label=Vault
note="a cold build takes 10-20 minutes"
GO=${GO:-go}
here=$(cd "$(dirname "$0")" && pwd)

works() {
	"$1" version 2>/dev/null | grep -q "Vault v$version"
}

build() {
	(cd "$here" && GOWORK=off GOFLAGS=-mod=readonly "$GO" build -o "$1" github.com/hashicorp/vault)
}

. "$here/../cachedtool.sh"
cached_tool
