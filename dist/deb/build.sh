#!/usr/bin/env bash
# Builds the Debian packages of sealrelay from this checkout, with
# dpkg-deb from a staging tree (no debhelper):
#
#   sealrelay_VERSION_ARCH.deb      the binary, the systemd unit, the man
#                                   pages, /etc/sealrelay with an example
#                                   config (a conffile), the service user
#   sealrelay-mta_VERSION_ARCH.deb  /usr/sbin/sendmail and mailq as links
#                                   to sealrelay (the sendmail entry point)
#
# usage: dist/deb/build.sh [-v VERSION] [-o OUTDIR]
#
# VERSION defaults to 0.0~gitYYYYMMDDHHMMSS.COMMIT (the last commit; a
# native package, so no Debian revision); OUTDIR to ./build/deb. The
# binary is built with the Go toolchain on PATH (GO to override) for the
# machine's architecture, static (CGO_ENABLED=0), with its version set so
# that `sealrelay version` prints VERSION. What the maintainer scripts do,
# and what remove and purge keep, is in README.md ("The Debian package").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
GO=${GO:-go}
version=""
out="$root/build/deb"
while getopts "v:o:" opt; do
  case $opt in
    v) version=$OPTARG ;;
    o) out=$OPTARG ;;
    *) echo "usage: $0 [-v VERSION] [-o OUTDIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$version" ]; then
  version="0.0~git$(TZ=UTC git -C "$root" log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S).$(git -C "$root" rev-parse --short=12 HEAD)"
fi
case $version in
  [0-9]*) ;;
  *) echo "build.sh: version $version must start with a digit" >&2; exit 2 ;;
esac
case $version in
  *-* | *_* | *" "*) echo "build.sh: version $version: a native package's version has no '-', '_' or space" >&2; exit 2 ;;
esac

goarch=$("$GO" env GOARCH)
case $goarch in
  amd64 | arm64 | s390x | riscv64 | mips64le) arch=$goarch ;;
  386) arch=i386 ;;
  arm) arch=armhf ;;
  ppc64le) arch=ppc64el ;;
  *) echo "build.sh: no Debian architecture for GOARCH $goarch" >&2; exit 1 ;;
esac
maintainer=${DEB_MAINTAINER:-"sealrelay maintainers <dev@sealrelay.invalid>"}
# Files in the packages carry the last commit's time, so that two builds
# of one commit give the same packages.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}
date_rfc2822=$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" -R)

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 022

# gz FILE: compress for the package, as dh_compress does (no name, no time).
gz() { gzip -9n "$1"; }

# The parts both packages have: copyright and changelog.
# docdir PKG DIR [BINARY]
docdir() {
  local pkg=$1 dir=$2/usr/share/doc/$1
  install -d "$dir"
  "$here/copyright.sh" "$GO" ${3:+"$3"} >"$dir/copyright"
  {
    echo "$pkg ($version) unstable; urgency=medium"
    echo
    echo "  * Built from commit $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)."
    echo "    The project's history is its git log."
    echo
    echo " -- $maintainer  $date_rfc2822"
  } >"$dir/changelog"
  gz "$dir/changelog"
}

# control PKG DIR ARCH FIELDS: writes DIR/DEBIAN/control.
control() {
  local pkg=$1 dir=$2 fields=$3 size
  size=$(du -sk --apparent-size --exclude=DEBIAN "$dir" | cut -f1)
  {
    echo "Package: $pkg"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $size"
    printf '%s\n' "$fields"
  } >"$dir/DEBIAN/control"
}

# md5sums DIR: the sums of every file but the conffiles, as dh_md5sums.
md5sums() {
  local dir=$1
  (
    cd "$dir"
    find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\n' | LC_ALL=C sort | xargs -r -d '\n' md5sum
  ) >"$dir/DEBIAN/md5sums"
  [ -s "$dir/DEBIAN/md5sums" ] || rm "$dir/DEBIAN/md5sums"
}

# pack DIR: builds the .deb, files owned by root.
pack() {
  local dir=$1 pkg=$2
  find "$dir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  dpkg-deb --root-owner-group -Zxz --build "$dir" "$out/${pkg}_${version}_${arch}.deb" >/dev/null
  echo "$out/${pkg}_${version}_${arch}.deb"
}

echo "build.sh: building sealrelay $version for $arch" >&2
# As Debian builds Go programs: with cgo (the C library resolves users and
# host names, through NSS), a position-independent executable, linked by
# the system's linker with full RELRO, as Debian's hardening asks.
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
CGO_CFLAGS=$(dpkg-buildflags --get CFLAGS) CGO_CPPFLAGS=$(dpkg-buildflags --get CPPFLAGS) \
  CGO_LDFLAGS=$(dpkg-buildflags --get LDFLAGS) && export CGO_CFLAGS CGO_CPPFLAGS CGO_LDFLAGS
(cd "$root" && CGO_ENABLED=1 "$GO" build -trimpath -buildvcs=false -buildmode=pie \
  -ldflags "-s -w -X main.version=$version -linkmode=external" -o "$work/sealrelay" ./cmd/sealrelay)
strip --remove-section=.comment "$work/sealrelay" # the compilers' names, as dh_strip removes
# The C library version it needs, as dpkg-shlibdeps finds it.
mkdir -p "$work/src/debian"
printf 'Source: sealrelay

Package: sealrelay
Architecture: any
' >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O "$work/sealrelay" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build.sh: dpkg-shlibdeps found no library dependency" >&2; exit 1; }

# --- sealrelay ---
p=$work/pkg
install -d "$p/DEBIAN" "$p/usr/bin" "$p/lib/systemd/system" "$p/etc/sealrelay" \
  "$p/usr/share/man/man5" "$p/usr/share/man/man8" "$p/usr/share/doc/sealrelay/examples"
install -m 0755 "$work/sealrelay" "$p/usr/bin/sealrelay"
install -m 0644 "$root/dist/systemd/sealrelay.service" "$p/lib/systemd/system/sealrelay.service"
install -m 0644 "$root/dist/deb/sealrelay.toml" "$p/etc/sealrelay/sealrelay.toml"
install -m 0644 "$root/dist/systemd/sealrelay-credential.service.d/credential.conf" \
  "$p/usr/share/doc/sealrelay/examples/credential.conf"
install -d "$p/usr/share/doc/sealrelay/examples/rotate" "$p/usr/share/doc/sealrelay/examples/systemd"
install -m 0755 "$root"/dist/examples/rotate/* "$p/usr/share/doc/sealrelay/examples/rotate/"
install -m 0644 "$root"/dist/examples/systemd/* "$p/usr/share/doc/sealrelay/examples/systemd/"
for page in "$root"/dist/man/*.[1-8]; do
  sec=${page##*.}
  install -d "$p/usr/share/man/man$sec"
  install -m 0644 "$page" "$p/usr/share/man/man$sec/"
  gz "$p/usr/share/man/man$sec/$(basename "$page")"
done
for doc in README.md SECURITY.md; do
  install -m 0644 "$root/$doc" "$p/usr/share/doc/sealrelay/$doc"
  gz "$p/usr/share/doc/sealrelay/$doc"
done
docdir sealrelay "$p" "$work/sealrelay"
for s in postinst prerm postrm; do
  install -m 0755 "$here/sealrelay.$s" "$p/DEBIAN/$s"
done
echo /etc/sealrelay/sealrelay.toml >"$p/DEBIAN/conffiles"
md5sums "$p"
control sealrelay "$p" "Depends: adduser, $shlibs
Section: mail
Priority: optional
Homepage: https://github.com/sealrelay/sealrelay
Description: SMTP relay agent with sealed relay credentials
 sealrelay accepts mail from local applications over SMTP, spools it
 durably and forwards it to an upstream relay host over STARTTLS with SMTP
 AUTH. The relay password is never in a config file: it is sealed with age
 to the servers allowed to read it, or held in HashiCorp Vault, and
 sealrelay decrypts it only into memory with this server's own key.
 .
 This package installs the agent, a hardened systemd unit (Type=notify,
 with a watchdog), the service user, /etc/sealrelay with an example
 configuration, and the manual pages. The service is not enabled until
 the server has a key and a relay is configured."
pack "$p" sealrelay

# --- sealrelay-mta ---
m=$work/mta
install -d "$m/DEBIAN" "$m/usr/sbin" "$m/usr/lib" "$m/usr/bin" "$m/usr/share/man/man8" "$m/usr/share/man/man1"
ln -s ../bin/sealrelay "$m/usr/sbin/sendmail"
ln -s ../sbin/sendmail "$m/usr/lib/sendmail"
ln -s sealrelay "$m/usr/bin/mailq"
# The sendmail entry point's own page when there is one, else sealrelay(8).
sendmail_page=sealrelay.8.gz
[ -e "$root/dist/man/sealrelay-sendmail.8" ] && sendmail_page=sealrelay-sendmail.8.gz
ln -s "$sendmail_page" "$m/usr/share/man/man8/sendmail.8.gz"
ln -s "../man8/$sendmail_page" "$m/usr/share/man/man1/mailq.1.gz"
docdir sealrelay-mta "$m"
md5sums "$m"
control sealrelay-mta "$m" "Depends: sealrelay (= $version)
Provides: mail-transport-agent
Conflicts: mail-transport-agent
Replaces: mail-transport-agent
Section: mail
Priority: optional
Homepage: https://github.com/sealrelay/sealrelay
Description: sealrelay as the system's sendmail
 sealrelay accepts mail from local applications over SMTP, spools it
 durably and forwards it to an upstream relay host with SMTP AUTH, with
 the relay password sealed with age or held in HashiCorp Vault.
 .
 This package makes sealrelay the system's mail transport agent, as
 msmtp-mta does for msmtp: /usr/sbin/sendmail (and /usr/lib/sendmail) run
 sealrelay's sendmail entry point, and mailq lists its queue. It takes
 the place of any other MTA (Postfix, Exim)."
pack "$m" sealrelay-mta
