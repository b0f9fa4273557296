"""What the benchmark scripts share: a Tansu broker and a moto S3 server started (and
stopped) through scripts/broker.sh and scripts/s3.sh, and small helpers."""
import contextlib
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def sh(*args, **kw):
    """Runs a command, returns its stdout (stripped); fails on a non-zero exit."""
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(cond, secs, what, script):
    """Polls `cond` every 50 ms for `secs`; exits naming `what` if it never holds."""
    deadline = time.time() + secs
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    sys.exit(f"{script}: timed out waiting for {what}")


@contextlib.contextmanager
def broker_and_store():
    """Starts a broker and an S3 server with a bucket `projector`; yields their addresses
    (host:port, http://host:port) and stops both afterwards."""
    broker = sh("bash", os.path.join(ROOT, "scripts/broker.sh"), "start")
    try:
        s3 = sh("bash", os.path.join(ROOT, "scripts/s3.sh"), "start")
        try:
            sh("bash", os.path.join(ROOT, "scripts/s3.sh"), "bucket", s3, "projector")
            yield broker, s3
        finally:
            sh("bash", os.path.join(ROOT, "scripts/s3.sh"), "stop", s3.rsplit(":", 1)[1])
    finally:
        sh("bash", os.path.join(ROOT, "scripts/broker.sh"), "stop", broker.rsplit(":", 1)[1])


def projector_binary(path, script):
    """Exits with how to build it when `path` is not an executable."""
    if not os.access(path, os.X_OK):
        sys.exit(f"{script}: no projector binary at {path} (build it with "
                 "`cargo build --release --bin projector`, or pass --projector)")
