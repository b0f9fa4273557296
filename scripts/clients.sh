#!/usr/bin/env bash
# Independent clients for tests, in a venv: confluent-kafka (librdkafka's Python
# binding, with Confluent's Avro and Protobuf serializers and schema-registry client),
# grpcio-tools, whose protoc compiles the tests' .proto files for the serializer, and
# psycopg 3 (with its own libpq), a Postgres driver for the tests of `--pg`.
#
# Usage:
#   scripts/clients.sh install     install into .tools/clients-venv (idempotent); prints its python
#   scripts/clients.sh python ARGS run that python (installing first), e.g. scripts/produce.py
#
# The tests produce with these clients, not with Projector's own producer, so the
# wire format (compression codecs, TLS and SASL, the Confluent framing of Avro and
# Protobuf records) is checked against someone else's encoder.
#
# Environment:
#   CONFLUENT_KAFKA_VERSION   version to install (default below)
#   PYTHON                    interpreter to create the venv with (default python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/clients-venv"
VERSION="${CONFLUENT_KAFKA_VERSION:-2.12.1}"
GRPCIO_TOOLS_VERSION="${GRPCIO_TOOLS_VERSION:-1.85.4}"
PSYCOPG_VERSION="${PSYCOPG_VERSION:-3.3.9}"
PYTHON="${PYTHON:-python3}"

die() { printf 'clients.sh: error: %s\n' "$*" >&2; exit 1; }

installed() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "
import confluent_kafka, fastavro, google.protobuf, httpx, grpc_tools.protoc, psycopg
assert confluent_kafka.version() == '$VERSION'
assert psycopg.__version__ == '$PSYCOPG_VERSION'" >/dev/null 2>&1
}

do_install() {
    if installed; then echo "$VENV/bin/python"; return 0; fi
    mkdir -p "$ROOT/.tools"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$ROOT/.tools/.clients.lock"
        flock 9
        if installed; then exec 9>&-; echo "$VENV/bin/python"; return 0; fi
    fi
    printf 'clients.sh: installing confluent-kafka %s into %s\n' "$VERSION" "$VENV" >&2
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV" >&2 \
        || die "could not create a venv with $PYTHON (Debian: apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
        "confluent-kafka[avro,protobuf,schemaregistry]==$VERSION" \
        "grpcio-tools==$GRPCIO_TOOLS_VERSION" "psycopg[binary]==$PSYCOPG_VERSION" >&2 \
        || die "pip install confluent-kafka==$VERSION failed (needs PyPI)"
    exec 9>&-
    installed || die "installed confluent-kafka but it does not import"
    echo "$VENV/bin/python"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
    install) do_install ;;
    python)  py="$(do_install)"; exec "$py" "$@" ;;
    *) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
