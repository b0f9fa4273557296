#!/usr/bin/env bash
# psql, the Postgres command-line client, for the tests of the Postgres face
# (cli/tests/pg.rs): Debian's postgresql-client, installed with apt when missing.
#
# Usage:
#   scripts/psql.sh install     install if missing (idempotent); prints psql's path
set -euo pipefail

die() { printf 'psql.sh: error: %s\n' "$*" >&2; exit 1; }

do_install() {
    if command -v psql >/dev/null 2>&1; then command -v psql; return 0; fi
    command -v apt-get >/dev/null 2>&1 \
        || die "psql is missing and this is not a Debian-like system: install the PostgreSQL client"
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "psql is missing; installing it needs root (or sudo)"
        sudo="sudo"
    fi
    # Tests running at once may all find it missing: one installs, the others wait
    # for it (apt-get would refuse them its lock), then find it.
    exec 9>"${TMPDIR:-/tmp}/projector-psql-install.lock"
    flock -w 900 9 || die "waited 15 minutes for another install of psql"
    if command -v psql >/dev/null 2>&1; then
        command -v psql
        return 0
    fi
    printf 'psql.sh: installing postgresql-client with apt-get\n' >&2
    $sudo apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql-client >&2 \
        || die "apt-get install postgresql-client failed"
    command -v psql >/dev/null 2>&1 || die "installed postgresql-client but psql is not on PATH"
    command -v psql
}

case "${1:-}" in
    install) do_install ;;
    *) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
