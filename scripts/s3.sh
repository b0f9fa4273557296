#!/usr/bin/env bash
# Local S3-compatible server (moto, in memory) for tests.
#
# Usage:
#   scripts/s3.sh install              install moto into .tools/s3-venv (idempotent); prints the python path
#   scripts/s3.sh start [PORT]         start a server on 127.0.0.1:PORT (free port if omitted); prints
#                                      "http://127.0.0.1:PORT" (the only line on stdout) once it answers HTTP
#   scripts/s3.sh bucket ENDPOINT NAME create bucket NAME (idempotent: an existing bucket is fine)
#   scripts/s3.sh stop [PORT]          stop the server on PORT, or every server this script started
#   scripts/s3.sh status               list servers started by this script
#
# Typical use:
#   S3_ENDPOINT=$(scripts/s3.sh start)
#   scripts/s3.sh bucket "$S3_ENDPOINT" test-bucket
#   ... run tests (path-style addressing; any access key and secret work) ...
#   scripts/s3.sh stop "${S3_ENDPOINT##*:}"
#
# The server is moto's S3 server (PyPI `moto[s3]` plus flask/flask-cors), run
# by scripts/s3_server.py, which serialises every request so that conditional
# writes (If-None-Match: *, If-Match) are atomic under concurrency like on real
# S3. Everything lives in the git-ignored .tools/ directory of the repo:
#   .tools/s3-venv          python venv moto is installed into
#   .tools/s3/PORT.pid      pid of the server on PORT
#   .tools/s3/PORT.log      its log (one line per request)
#
# Environment:
#   MOTO_VERSION            moto version to install (default below)
#   FLASK_VERSION           flask version to install (default below)
#   FLASK_CORS_VERSION      flask-cors version to install (default below)
#   WERKZEUG_VERSION        werkzeug version to install (default below)
#   S3_START_TIMEOUT        seconds to wait for the server to answer HTTP (default 20)
#   PYTHON                  python interpreter to create the venv with (default python3)
#
# Notes on the server: state is in memory, so every bucket and object is gone
# when it stops; `curl -X POST ENDPOINT/moto-api/reset` wipes it without a
# restart. Buckets must be created (the `bucket` command) before use. Requests
# are not authenticated: any credentials and any signature are accepted.
# moto also reads MOTO_* environment variables, which the server inherits.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/s3-venv"
PY="$VENV/bin/python"
SERVER="$ROOT/scripts/s3_server.py"
STATE="$TOOLS/s3"
MOTO_VERSION="${MOTO_VERSION:-5.2.6}"
FLASK_VERSION="${FLASK_VERSION:-3.1.3}"
FLASK_CORS_VERSION="${FLASK_CORS_VERSION:-6.0.5}"
WERKZEUG_VERSION="${WERKZEUG_VERSION:-3.1.9}"
PYTHON="${PYTHON:-python3}"
START_TIMEOUT="${S3_START_TIMEOUT:-20}"

log() { printf 's3.sh: %s\n' "$*" >&2; }
die() { printf 's3.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

pip_specs() {
    printf '%s\n' "moto[s3]==$MOTO_VERSION" "flask==$FLASK_VERSION" \
        "flask-cors==$FLASK_CORS_VERSION" "werkzeug==$WERKZEUG_VERSION"
}

# Cheap check (no moto import): the venv runs and holds exactly the pinned versions.
moto_ok() {
    [[ -x "$PY" ]] || return 1
    "$PY" -I - "$MOTO_VERSION" "$FLASK_VERSION" "$FLASK_CORS_VERSION" "$WERKZEUG_VERSION" \
        >/dev/null 2>&1 <<'EOF'
import sys
from importlib.metadata import version
want = dict(zip(["moto", "flask", "flask-cors", "werkzeug"], sys.argv[1:]))
sys.exit(any(version(name) != v for name, v in want.items()))
EOF
}

do_install() {
    if moto_ok; then
        echo "$PY"
        return 0
    fi
    mkdir -p "$TOOLS"
    # Serialise concurrent installs (e.g. parallel test jobs calling start).
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$TOOLS/.s3-install.lock"
        flock 9
        if moto_ok; then   # somebody else finished it while we waited
            exec 9>&-
            echo "$PY"
            return 0
        fi
    fi
    local t0 specs
    t0="$(now_ms)"
    specs="$(pip_specs | tr '\n' ' ')"
    log "installing moto $MOTO_VERSION from PyPI into $VENV"
    # A venv whose interpreter no longer runs (e.g. its base python was removed) is rebuilt.
    if [[ -e "$VENV" ]] && ! "$PY" -I -c '' >/dev/null 2>&1; then
        log "removing broken venv $VENV"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$PY" ]]; then
        command -v "$PYTHON" >/dev/null 2>&1 || die "moto install needs $PYTHON (with venv and pip); not found"
        log "creating venv $VENV"
        if ! "$PYTHON" -m venv "$VENV" >&2; then
            rm -rf "$VENV"
            die "could not create a venv with '$PYTHON -m venv $VENV' (on Debian/Ubuntu: apt-get install python3-venv)"
        fi
    fi
    log "pip install ${specs% }"
    local -a spec_arr
    mapfile -t spec_arr < <(pip_specs)
    if ! "$PY" -m pip install --disable-pip-version-check -q "${spec_arr[@]}" >&2; then
        die "could not install moto: 'pip install ${specs% }' failed (see pip output above). Needs access to PyPI (or a configured pip index)."
    fi
    exec 9>&-   # release the lock; never leak fd 9 into the server process
    moto_ok || die "pip succeeded but $VENV does not hold ${specs% }"
    # The full import the server does, so a broken install fails here, not at start.
    "$PY" -I -c 'import moto.moto_server.werkzeug_app, werkzeug.serving' >&2 \
        || die "moto is installed in $VENV but its server does not import (see the traceback above)"
    log "installed moto $MOTO_VERSION in $(( ($(now_ms) - t0) / 1000 )) s"
    echo "$PY"
}

free_port() {
    "$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

port_open() {
    # bash's /dev/tcp: succeeds once something accepts on the port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Print the HTTP status code of METHOD URL, "000" when there was no HTTP
# response at all (connection refused, timeout, ...). The response body is
# written to OUT (default: discarded). Proxies are bypassed: the server is local.
http_code() {
    local method="$1" url="$2" out="${3:-/dev/null}"
    if command -v curl >/dev/null 2>&1; then
        curl -s --noproxy '*' --connect-timeout 2 --max-time 5 -o "$out" \
            -w '%{http_code}' -X "$method" "$url" || true
    else
        "$PYTHON" - "$method" "$url" "$out" <<'EOF'
import sys, urllib.error, urllib.request
method, url, out = sys.argv[1:]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(url, method=method,
                             data=b"" if method in ("PUT", "POST") else None)
try:
    with opener.open(req, timeout=5) as r:
        code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
except Exception:
    code, body = 0, b""
with open(out, "wb") as f:
    f.write(body)
print("%03d" % code)
EOF
    fi
}

# Milliseconds since the epoch (bash 5's EPOCHREALTIME; whole seconds otherwise).
now_ms() {
    if [[ -n "${EPOCHREALTIME:-}" ]]; then
        local us="${EPOCHREALTIME//[.,]/}"
        echo $(( 10#$us / 1000 ))
    else
        echo $(( $(date +%s) * 1000 ))
    fi
}

# SIGTERM, up to 10 s for a clean exit, then SIGKILL.
kill_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    log "pid $pid ignored SIGTERM for 10s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    return 1
}

pid_alive() {
    local pid="$1"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    # A zombie still answers kill -0; treat it as dead.
    local st
    st="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
    [[ "$st" != "Z" ]]
}

# Is PID really the s3_server.py we started on PORT? (guards against pid reuse)
is_our_server() {
    local pid="$1" port="$2"
    pid_alive "$pid" || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 0   # no procfs: trust the pid file
    local cmd
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$cmd" == *"s3_server.py 127.0.0.1 $port "* ]]
}

valid_port() {
    [[ "$1" =~ ^[0-9]+$ ]] && (( $1 > 0 && $1 < 65536 ))
}

# Start once on PORT. Returns 0 when it answers HTTP, 2 if the process died
# early (e.g. the port was taken), 1 on timeout.
start_on() {
    local port="$1"
    local pidf="$STATE/$port.pid" logf="$STATE/$port.log"
    : >"$logf"
    log "starting moto S3 server on 127.0.0.1:$port (log: $logf)"
    # The subshell closes every inherited fd above 2 (a caller's pipes must not
    # be held open by a long-lived server), then execs setsid, which execs
    # python, so $! is the server's own pid. setsid gives it its own session,
    # so it outlives the caller's terminal / Ctrl-C; with stdin/stdout/stderr
    # detached, $(s3.sh start) returns as soon as the server answers.
    # python -I: a caller's PYTHONPATH/PYTHONHOME must not leak into the venv.
    (
        for fdpath in "/proc/$BASHPID/fd"/*; do
            fd="${fdpath##*/}"
            if [[ "$fd" =~ ^[0-9]+$ ]] && (( fd > 2 )); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        exec setsid "$PY" -I -u "$SERVER" 127.0.0.1 "$port"
    ) </dev/null >>"$logf" 2>&1 &
    local pid=$!
    echo "$pid" >"$pidf"
    local t0 now code
    t0="$(now_ms)"
    while true; do
        if ! pid_alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            rm -f "$pidf"
            return 2
        fi
        # Any HTTP status will do (GET / is ListBuckets): the app is up and serving.
        if port_open "$port"; then
            code="$(http_code GET "http://127.0.0.1:$port/")"
            if [[ "$code" != 000 ]]; then
                log "moto pid $pid ready on http://127.0.0.1:$port after $(( $(now_ms) - t0 )) ms (GET / -> $code)"
                return 0
            fi
        fi
        now="$(now_ms)"
        if (( now - t0 >= START_TIMEOUT * 1000 )); then
            return 1
        fi
        sleep 0.1
    done
}

do_start() {
    local want_port="${1:-}"
    if [[ -n "$want_port" ]]; then
        valid_port "$want_port" || die "invalid port '$want_port'"
    fi
    [[ -f "$SERVER" ]] || die "missing $SERVER"
    do_install >/dev/null
    mkdir -p "$STATE"

    local attempts=1
    [[ -z "$want_port" ]] && attempts=3   # a picked port may be grabbed before the server binds it
    local port rc i
    for ((i = 1; i <= attempts; i++)); do
        if [[ -n "$want_port" ]]; then
            port="$want_port"
            if [[ -f "$STATE/$port.pid" ]] && is_our_server "$(cat "$STATE/$port.pid")" "$port"; then
                die "an S3 server started by this script already runs on port $port (pid $(cat "$STATE/$port.pid")); stop it first"
            fi
            if port_open "$port"; then
                die "port $port on 127.0.0.1 is already in use"
            fi
        else
            port="$(free_port)" || die "could not pick a free port with $PYTHON"
        fi
        rc=0
        start_on "$port" || rc=$?
        case $rc in
            0) echo "http://127.0.0.1:$port"; return 0 ;;
            2) log "moto exited during startup on port $port; log tail:"
               tail -n 30 "$STATE/$port.log" >&2 || true
               ;;
            *) local pid
               pid="$(cat "$STATE/$port.pid" 2>/dev/null || true)"
               log "moto (pid $pid) did not answer HTTP on 127.0.0.1:$port within ${START_TIMEOUT}s; log tail:"
               tail -n 30 "$STATE/$port.log" >&2 || true
               # We spawned this pid a moment ago: kill it directly.
               [[ -n "$pid" ]] && { kill_pid "$pid" || true; wait "$pid" 2>/dev/null || true; }
               rm -f "$STATE/$port.pid"
               die "S3 server start timed out"
               ;;
        esac
    done
    die "could not start the moto S3 server (see log tail above)"
}

# PUT ENDPOINT/NAME. moto answers 200 for a new bucket and, like us-east-1 S3,
# also for one that exists; a 409 BucketAlreadyOwnedByYou is accepted as well.
do_bucket() {
    [[ $# -eq 2 ]] || { usage; exit 2; }
    local endpoint="${1%/}" name="$2"
    [[ "$endpoint" =~ ^https?://[^/]+$ ]] \
        || die "invalid endpoint '$1' (want e.g. http://127.0.0.1:PORT, as printed by 'start')"
    [[ "$name" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] \
        || die "invalid bucket name '$name' (3-63 chars: lowercase letters, digits, '.', '-')"
    local body code
    body="$(mktemp)"
    code="$(http_code PUT "$endpoint/$name" "$body")"
    case "$code" in
        200)
            rm -f "$body"
            log "bucket $name ready at $endpoint/$name"
            ;;
        409)
            if grep -q BucketAlreadyOwnedByYou "$body"; then
                rm -f "$body"
                log "bucket $name already exists at $endpoint/$name"
                return 0
            fi
            log "response body:"; cat "$body" >&2; echo >&2; rm -f "$body"
            die "could not create bucket $name at $endpoint: HTTP 409"
            ;;
        000)
            rm -f "$body"
            die "no HTTP response from $endpoint (is the server running? scripts/s3.sh status)"
            ;;
        *)
            log "response body:"; cat "$body" >&2; echo >&2; rm -f "$body"
            die "could not create bucket $name at $endpoint: HTTP $code"
            ;;
    esac
}

# Stop the server whose pid file is .tools/s3/PORT.pid.
stop_port() {
    local port="$1" pidf="$STATE/$1.pid"
    if [[ ! -f "$pidf" ]]; then
        log "no S3 server started by this script on port $port (no $pidf); nothing to stop"
        return 0
    fi
    local pid
    pid="$(cat "$pidf")"
    if ! [[ "$pid" =~ ^[0-9]+$ ]]; then
        rm -f "$pidf"; log "removed malformed pid file $pidf"; return 0
    fi
    if ! is_our_server "$pid" "$port"; then
        rm -f "$pidf"
        log "S3 server on port $port (pid $pid) was not running; removed stale pid file"
        return 0
    fi
    kill_pid "$pid" || die "could not kill pid $pid"
    rm -f "$pidf"
    log "stopped S3 server on http://127.0.0.1:$port (pid $pid)"
}

do_stop() {
    if [[ $# -gt 0 && -n "$1" ]]; then
        valid_port "$1" || die "invalid port '$1'"
        stop_port "$1"
        return
    fi
    local f found=0
    shopt -s nullglob
    for f in "$STATE"/*.pid; do
        found=1
        stop_port "$(basename "$f" .pid)" || true
    done
    (( found )) || log "no S3 servers to stop"
}

do_status() {
    local f port pid n=0
    shopt -s nullglob
    for f in "$STATE"/*.pid; do
        port="$(basename "$f" .pid)"
        pid="$(cat "$f" 2>/dev/null || true)"
        if is_our_server "$pid" "$port"; then
            echo "http://127.0.0.1:$port pid=$pid running log=$STATE/$port.log"
            n=$((n + 1))
        else
            echo "http://127.0.0.1:$port pid=$pid not running (stale pid file)"
        fi
    done
    (( n > 0 )) || log "no running S3 servers started by this script"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
    install) do_install ;;
    start)   do_start "${1:-}" ;;
    bucket)  do_bucket "$@" ;;
    stop)    do_stop "${1:-}" ;;
    status)  do_status ;;
    -h|--help|help) usage ;;
    *) usage; exit 2 ;;
esac
