#!/usr/bin/env bash
# Installs the Debian packages the test suite and the benchmark talk to
# (real peers, not mocks): swaks as an SMTP client; Postfix and Cyrus SASL
# (saslpasswd2, the sasldb auxprop plugin, PLAIN and LOGIN) for the interop
# tests and the benchmark (internal/testing/peers/postfixtest runs private instances);
# Dovecot (dovecot-core) as Postfix's SASL backend for CRAM-MD5, SCRAM and
# OAuth2 bearer tokens (internal/testing/peers/dovecot); a C compiler for the cgo
# (SQLite) build of the Hydra test server (tools/hydra/build.sh);
# systemd-analyze (systemd) to verify and rate the unit in dist/systemd,
# bubblewrap and the kernel's syscall numbers (linux-libc-dev) for the
# test that runs the agent in the unit's sandbox (internal/testing/sandbox); mandoc,
# which lints the generated manual pages (dist/man, TestManPagesLint);
# dpkg-dev (dpkg-buildflags, dpkg-shlibdeps) and lintian, with which
# `make deb` builds and the suite checks the Debian packages (dist/deb);
# the programs that hand mail to sendmail in the tests (php-cli's mail(),
# s-nail, python3's smtplib for SMTPUTF8) and strace, which shows what
# files sendmail opens.
# Idempotent: installs only what is missing. SEALRELAY_WITH_POSTFIX=0 skips
# Postfix, SASL and Dovecot.
set -euo pipefail

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

want=()
installed swaks || want+=(swaks)
installed mandoc || want+=(mandoc)
command -v cc >/dev/null 2>&1 || want+=(gcc libc6-dev)
command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
for p in bubblewrap linux-libc-dev dpkg-dev lintian adduser php-cli s-nail python3 strace; do
  installed "$p" || want+=("$p")
done
if [ "${SEALRELAY_WITH_POSTFIX:-1}" = 1 ]; then
  for p in postfix sasl2-bin libsasl2-modules libsasl2-modules-db dovecot-core; do
    installed "$p" || want+=("$p")
  done
fi
# OpenSMTPD (a strict relay host, internal/testing/peers/opensmtpdtest) conflicts with
# Postfix as a Debian package, so it is never installed: its libraries are,
# its package is downloaded and unpacked into the cache, and the users its
# daemon drops to are created, as its postinst would.
# SEALRELAY_WITH_OPENSMTPD=0 skips it.
opensmtpd=${SEALRELAY_WITH_OPENSMTPD:-1}
if [ "$opensmtpd" = 1 ]; then
  for p in libevent-2.1-7 libdb5.3; do
    installed "$p" || want+=("$p")
  done
fi

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
updated=0
if [ ${#want[@]} -gt 0 ]; then
  echo "deps: installing ${want[*]}" >&2
  # Postfix asks questions at install time; "No configuration" installs it
  # without a system instance (no /etc/postfix/main.cf, nothing on port 25):
  # the tests run private instances of their own.
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections 2>/dev/null || true
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  updated=1
fi

[ "$opensmtpd" = 1 ] || exit 0
osmtpd_version=6.8.0p2
cache=${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}
osmtpd_root=$cache/opensmtpd-$osmtpd_version
if [ ! -x "$osmtpd_root/usr/sbin/smtpd" ]; then
  echo "deps: unpacking opensmtpd $osmtpd_version into $osmtpd_root" >&2
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && apt-get download -qq opensmtpd >/dev/null 2>&1); then
    [ "$updated" = 1 ] || $sudo apt-get update -qq >/dev/null
    (cd "$tmp" && apt-get download -qq opensmtpd >/dev/null)
  fi
  deb=$(ls "$tmp"/opensmtpd_*.deb)
  case "$(dpkg-deb -f "$deb" Version)" in
    "$osmtpd_version"-*) ;;
    *) echo "deps: opensmtpd $(dpkg-deb -f "$deb" Version) is not $osmtpd_version" >&2; exit 1 ;;
  esac
  dpkg-deb -x "$deb" "$tmp/root"
  rm -rf "$osmtpd_root"
  mv "$tmp/root" "$osmtpd_root"
fi
for u in opensmtpd opensmtpq; do
  getent passwd "$u" >/dev/null ||
    $sudo useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
done
