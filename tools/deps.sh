#!/usr/bin/env bash
# Installs the Debian packages the test suite talks to (real peers, not
# mocks): swaks as an SMTP client, Postfix for interop and the benchmark.
# Idempotent: installs only what is missing.
set -euo pipefail

want=()
command -v swaks >/dev/null 2>&1 || want+=(swaks)
if [ "${SEALRELAY_WITH_POSTFIX:-1}" = 1 ]; then
  [ -x /usr/sbin/postfix ] || want+=(postfix)
  [ -x /usr/sbin/saslpasswd2 ] || want+=(sasl2-bin)
  [ -e /usr/lib/x86_64-linux-gnu/sasl2/libsasldb.so ] || [ -e /usr/lib/x86_64-linux-gnu/sasl2/libsasldb.so.2 ] || want+=(libsasl2-modules-db)
  [ -e /usr/lib/x86_64-linux-gnu/sasl2/libplain.so ] || [ -e /usr/lib/x86_64-linux-gnu/sasl2/libplain.so.2 ] || want+=(libsasl2-modules)
fi
[ ${#want[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "deps: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix asks questions at install time; answer them up front.
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections 2>/dev/null || true
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
