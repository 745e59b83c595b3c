#!/bin/sh
# Rebuilds third_party/go-smtp: go-smtp at the version go.mod requires,
# from the Go module proxy, with docs/patches/go-smtp-*.patch applied in
# order, without its cmd/ (a debug server). go.mod's replace line builds sealrelay against it (README.md,
# "Performance", says why).
#
#   tools/third_party.sh          rewrite third_party/go-smtp
#   tools/third_party.sh -check   fail if third_party/go-smtp is not exactly that
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
mod=github.com/emersion/go-smtp
ver=$(go list -m -f '{{.Version}}' "$mod")
src=$(go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
[ -d "$src" ] || { echo "third_party.sh: go mod download $mod@$ver gave no directory" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -R "$src" "$tmp/go-smtp"
chmod -R u+w "$tmp/go-smtp"
for p in "$repo"/docs/patches/go-smtp-*.patch; do
	(cd "$tmp/go-smtp" && git apply --whitespace=nowarn "$p") || { echo "third_party.sh: $p does not apply to $mod@$ver" >&2; exit 1; }
done
# go-smtp's cmd/smtp-debug-server prints whole sessions, AUTH included, to
# stdout; sealrelay never builds it, so the copy leaves it out.
rm -rf "$tmp/go-smtp/cmd"
if [ "${1:-}" = "-check" ]; then
	if ! diff -r "$tmp/go-smtp" third_party/go-smtp >/dev/null; then
		echo "third_party.sh: third_party/go-smtp is not $mod@$ver with docs/patches/go-smtp-*.patch applied" >&2
		echo "third_party.sh: hint: run tools/third_party.sh to rebuild it" >&2
		exit 1
	fi
	exit 0
fi
rm -rf third_party/go-smtp
mkdir -p third_party
cp -R "$tmp/go-smtp" third_party/go-smtp
echo "third_party/go-smtp: $mod@$ver with $(ls docs/patches/go-smtp-*.patch | wc -l) patches"
