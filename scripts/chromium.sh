#!/usr/bin/env bash
# Headless Chromium and its WebDriver, for the tests of the web console
# (cli/tests/console.rs): Debian's chromium and chromium-driver, installed with apt
# when missing.
#
# Usage:
#   scripts/chromium.sh install     install if missing (idempotent); prints chromedriver's path
set -euo pipefail

die() { printf 'chromium.sh: error: %s\n' "$*" >&2; exit 1; }

do_install() {
    if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
        command -v chromedriver
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "chromium/chromedriver are missing and this is not a Debian-like system: install Chromium and its chromedriver"
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "chromium is missing; installing it needs root (or sudo)"
        sudo="sudo"
    fi
    # Tests running at once may all find it missing: one installs, the others wait
    # for it (apt-get would refuse them its lock), then find it.
    exec 9>"${TMPDIR:-/tmp}/projector-chromium-install.lock"
    flock -w 900 9 || die "waited 15 minutes for another install of chromium"
    if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
        command -v chromedriver
        return 0
    fi
    printf 'chromium.sh: installing chromium and chromium-driver with apt-get\n' >&2
    $sudo apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver fonts-dejavu-core >&2 \
        || die "apt-get install chromium chromium-driver failed"
    command -v chromedriver >/dev/null 2>&1 || die "installed chromium-driver but chromedriver is not on PATH"
    command -v chromedriver
}

case "${1:-}" in
    install) do_install ;;
    *) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
