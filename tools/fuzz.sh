#!/usr/bin/env bash
# fuzz.sh PKG TARGET TIME: runs one Go fuzz target for TIME.
#
# go1.26 can end a duration-bounded run with a bare "context deadline
# exceeded" at the -fuzztime boundary although no input failed: a race in
# the fuzzing coordinator (https://go.dev/issue/75804, fixed in go1.27). Such
# a run wrote no failing input under testdata/fuzz/TARGET; it is reported
# and not counted as a failure. Any run that wrote a failing input fails.
set -uo pipefail
pkg=$1 target=$2 time=$3
GO=${GO:-go}
corpus="$pkg/testdata/fuzz/$target"
before=$(ls "$corpus" 2>/dev/null | sort)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$GO" test -run '^$' -fuzz "^$target\$" -fuzztime "$time" "$pkg" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
[ "$status" = 0 ] && exit 0
after=$(ls "$corpus" 2>/dev/null | sort)
if [ "$before" = "$after" ] && grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
  echo "fuzz.sh: $target: the fuzztime deadline race of go1.26 (go.dev/issue/75804); no failing input was written, so this run counts as passed" >&2
  exit 0
fi
exit "$status"
