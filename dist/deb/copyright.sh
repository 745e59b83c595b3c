#!/usr/bin/env bash
# Writes /usr/share/doc/PKG/copyright for a package holding BINARY, a Go
# binary: sealrelay's own notice, then each license under which the code
# compiled into BINARY comes (the Go runtime and standard library, and
# every module `go version -m` lists), each text once with the modules it
# covers. The texts come from the module cache the binary was built from.
#
# usage: dist/deb/copyright.sh GO [BINARY]
#
# Without BINARY (a package with no compiled code), only the notice.
set -euo pipefail
GO=$1
bin=${2:-}

year=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y)
cat <<HEAD
sealrelay: SMTP relay agent with sealed relay credentials
Source: https://github.com/sealrelay/sealrelay

Copyright: Copyright $year the sealrelay authors.
License: the sealrelay sources carry no license statement yet; no license
 is granted here beyond what their authors grant elsewhere.
HEAD
[ -n "$bin" ] || exit 0

cat <<'HEAD'

Compiled into the sealrelay binary are the Go runtime and standard library
and the Go modules below, each under the license whose text follows the
list of modules it covers.
HEAD
modcache=$("$GO" env GOMODCACHE)
goroot=$("$GO" env GOROOT)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# text LICENSEFILE: the license as the copyright file gives it. The
# Apache 2.0 and MPL 2.0 texts are in /usr/share/common-licenses on every
# Debian system, and policy says to point there rather than repeat them.
text() {
  if grep -q "Apache License" "$1" && grep -q "Version 2.0, January 2004" "$1"; then
    echo "License: Apache-2.0"
    echo " The full text is in /usr/share/common-licenses/Apache-2.0."
  elif grep -q "Mozilla Public License Version 2.0" "$1" || grep -q "Mozilla Public License, version 2.0" "$1"; then
    echo "License: MPL-2.0"
    echo " The full text is in /usr/share/common-licenses/MPL-2.0."
  else
    sed -e 's/[[:space:]]*$//' "$1"
  fi
}

# add NAME DIR LICENSEFILE: files the module under its license's text,
# with its NOTICE file if it has one (Apache 2.0 asks for it to be kept).
add() {
  local name=$1 dir=$2 file=$3 sum
  sum=$(text "$file" | md5sum | cut -d' ' -f1)
  [ -e "$work/$sum.text" ] || text "$file" >"$work/$sum.text"
  echo "$name" >>"$work/$sum.modules"
  if [ -f "$dir/NOTICE" ]; then
    { echo; echo "NOTICE of $name:"; sed -e 's/[[:space:]]*$//' "$dir/NOTICE"; } >>"$work/notices"
  fi
}

gover=$("$GO" version "$bin" | awk '{print $2}')
add "Go runtime and standard library $gover" "$goroot" "$goroot/LICENSE"
# The module cache escapes capitals: github.com/BurntSushi -> github.com/!burnt!sushi.
# A "=>" line replaces the module of the "dep" line before it; a
# replacement by a directory of this repository (a module carried with
# patches, third_party/) is read from there, and named as the module it
# replaces with the directory it is carried in.
root=$(cd "$(dirname "$0")/../.." && pwd)
"$GO" version -m "$bin" |
  awk '$1 == "dep" { if (m != "") print m; d = $2 " " $3; m = d }
       $1 == "=>" { if ($2 ~ /^\.\.?\//) m = d " " $2; else m = $2 " " $3 }
       END { if (m != "") print m }' |
  while read -r path ver local; do
    if [ -n "$local" ]; then
      dir="$root/${local#./}"
      ver="$ver, patched, carried in ${local#./}"
    else
      dir="$modcache/$(printf '%s' "$path" | sed 's/[A-Z]/!\L&/g')@$ver"
    fi
    lic=""
    for f in LICENSE LICENSE.md LICENSE.txt LICENCE COPYING LICENSE-MIT; do
      if [ -f "$dir/$f" ]; then lic="$dir/$f"; break; fi
    done
    if [ -z "$lic" ]; then
      echo "copyright.sh: no license file for $path $ver in $dir" >&2
      exit 1
    fi
    add "$path $ver" "$dir" "$lic"
  done

for mods in "$work"/*.modules; do
  echo
  echo "----------------------------------------------------------------------"
  echo
  sed 's/^/Module: /' "$mods" | LC_ALL=C sort
  echo
  cat "${mods%.modules}.text"
done
if [ -e "$work/notices" ]; then
  echo
  echo "----------------------------------------------------------------------"
  cat "$work/notices"
fi
