#!/usr/bin/env bash
# Installs the Debian packages the test suite and the benchmark talk to
# (real peers, not mocks): swaks as an SMTP client; Postfix and Cyrus SASL
# (saslpasswd2, the sasldb auxprop plugin, PLAIN and LOGIN) for the interop
# tests and the benchmark (internal/postfixtest runs private instances);
# Dovecot (dovecot-core) as Postfix's SASL backend for CRAM-MD5, SCRAM and
# OAuth2 bearer tokens (internal/peers/dovecot); a C compiler for the cgo
# (SQLite) build of the Hydra test server (tools/hydra/build.sh);
# systemd-analyze (systemd) to verify and rate the unit in dist/systemd,
# bubblewrap and the kernel's syscall numbers (linux-libc-dev) for the
# test that runs the agent in the unit's sandbox (internal/sandbox).
# Idempotent: installs only what is missing. SEALRELAY_WITH_POSTFIX=0 skips
# Postfix, SASL and Dovecot.
set -euo pipefail

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

want=()
installed swaks || want+=(swaks)
command -v cc >/dev/null 2>&1 || want+=(gcc libc6-dev)
command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
for p in bubblewrap linux-libc-dev; do
  installed "$p" || want+=("$p")
done
if [ "${SEALRELAY_WITH_POSTFIX:-1}" = 1 ]; then
  for p in postfix sasl2-bin libsasl2-modules libsasl2-modules-db dovecot-core; do
    installed "$p" || want+=("$p")
  done
fi
[ ${#want[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "deps: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix asks questions at install time; "No configuration" installs it
# without a system instance (no /etc/postfix/main.cf, nothing on port 25):
# the tests run private instances of their own.
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections 2>/dev/null || true
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
