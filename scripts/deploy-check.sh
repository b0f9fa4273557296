#!/usr/bin/env bash
# Validates deploy/ offline (no container runtime needed): installs the validators into
# .tools/deploy-venv (kubernetes-validate, which ships the Kubernetes schemas,
# promql-parser for the alerting rules and the dashboard, and the
# Compose specification's JSON schema from the docker-compose 1.29.2 wheel), then runs
# deploy/check.py against a built projector binary.
#
#   scripts/deploy-check.sh [PROJECTOR_BINARY]    # default: $CARGO_TARGET_DIR/debug/projector
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.tools/deploy-venv
SCHEMAS=.tools/deploy-schemas
KUBERNETES_VALIDATE_VERSION=1.37.0
PROMQL_PARSER_VERSION=0.12.0
COMPOSE_WHEEL_VERSION=1.29.2
bin="${1:-${CARGO_TARGET_DIR:-target}/debug/projector}"

log() { echo "deploy-check.sh: $*" >&2; }

if [[ ! -x "$VENV/bin/kubernetes-validate" ]] || ! "$VENV/bin/python" -c "import promql_parser" 2>/dev/null; then
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION and promql-parser $PROMQL_PARSER_VERSION into $VENV"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" jsonschema pyyaml \
        "promql-parser==$PROMQL_PARSER_VERSION"
fi
if [[ ! -f "$SCHEMAS/compose_spec.json" ]]; then
    log "fetching the Compose specification's schema (docker-compose $COMPOSE_WHEEL_VERSION wheel)"
    tmp=$(mktemp -d)
    "$VENV/bin/python" -m pip download --disable-pip-version-check -q --no-deps \
        --only-binary=:all: "docker-compose==$COMPOSE_WHEEL_VERSION" -d "$tmp"
    mkdir -p "$SCHEMAS"
    "$VENV/bin/python" - "$tmp" "$SCHEMAS" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2] + "/compose_spec.json", "wb") as out:
    out.write(z.read("compose/config/compose_spec.json"))
PY
    rm -rf "$tmp"
fi
[[ -x "$bin" ]] || { log "no projector binary at $bin (cargo build --bin projector)"; exit 1; }
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/python" deploy/check.py --projector "$bin" --schemas "$SCHEMAS"
