#!/usr/bin/env python3
"""Subscription delay and subscribers held (BENCHMARKS.md).

Runs the bank pipeline reading its events from stdin (`source: {type: file, path: "-"}`)
and writes MoneyDeposited events for 1,000 accounts at RATE events/s, noting when each
was written. SUBSCRIBERS clients hold `GET /subscribe?view=accounts` open; one of them
parses every change and matches it to its event by the row's `last_version`: the delay
is from the event's write to stdin to its upsert reaching the subscriber (it includes
the epoch cut, every 50 ms by default). The others read and discard, and the run says
how many were still subscribed at the end (none dropped, none refused).

Usage: scripts/bench-subscribe.py [SUBSCRIBERS...]   (default: 1 100 1000)
Environment: PROJECTOR (default target/release/projector), RATE (default 2000),
SECONDS (default 20), KEYED=1: the subscribers other than the watched one each follow
one account (`key=`), as an application's users would, instead of the whole view.
"""

import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECTOR = os.environ.get("PROJECTOR", os.path.join(ROOT, "target/release/projector"))
RATE = float(os.environ.get("RATE", "2000"))
SECONDS = float(os.environ.get("SECONDS", "20"))
KEYS = 1000


def pipeline(path):
    text = open(os.path.join(ROOT, "pipelines/bank-accounts.yaml")).read()
    out, skipping = [], False
    for line in text.splitlines():
        if line == "source:":
            out.append('source:\n  type: file\n  path: "-"')
            skipping = True
            continue
        if skipping and line.startswith(" "):
            continue
        skipping = False
        out.append(line)
    open(path, "w").write("\n".join(out) + "\n")


def subscribe(port, key=None):
    s = socket.create_connection(("127.0.0.1", port))
    query = "view=accounts" + (f"&key={key}" if key else "")
    s.sendall(f"GET /subscribe?{query} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    return s


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def one(n, port):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "p.yaml")
        pipeline(path)
        proc = subprocess.Popen(
            [PROJECTOR, "run", path, "--quiet", "--http", f"127.0.0.1:{port}", "--state-dir",
             os.path.join(d, "st")],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            version = {}

            def event(key, typ, payload):
                v = version.get(key, 0) + 1
                version[key] = v
                line = json.dumps({"eventId": f"e-{key}-{v}", "eventType": typ, "aggregateId": key,
                                   "version": v, "timestamp": int(time.time() * 1000),
                                   "payload": payload})
                proc.stdin.write(line.encode() + b"\n")
                return v

            for k in range(KEYS):
                event(f"acc-{k:06d}", "AccountOpened", {"owner": f"owner {k}"})
            proc.stdin.flush()
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health")
                    break
                except OSError:
                    time.sleep(0.05)
            time.sleep(1)
            keyed = os.environ.get("KEYED") == "1"
            sockets = [subscribe(port)] + [
                subscribe(port, f"acc-{j % KEYS:06d}" if keyed else None) for j in range(1, n)]
            watched = sockets[0]
            sent = {}  # (key, version) -> time written
            delays, stop = [], threading.Event()
            dropped = [0]

            def read_all():
                sel = selectors.DefaultSelector()
                for s in sockets:
                    s.setblocking(False)
                    sel.register(s, selectors.EVENT_READ)
                buf = b""
                while not stop.is_set():
                    for k, _ in sel.select(timeout=0.1):
                        s = k.fileobj
                        try:
                            data = s.recv(1 << 16)
                        except BlockingIOError:
                            continue
                        if not data:
                            sel.unregister(s)
                            dropped[0] += 1
                            continue
                        if s is not watched:
                            if b"subscribe.too_slow" in data:
                                dropped[0] += 1
                            continue
                        now = time.perf_counter()
                        buf += data
                        *lines, buf = buf.split(b"\n")
                        for line in lines:
                            if line.startswith(b'data: {"epoch"') and b'"row"' in line:
                                row = json.loads(line[6:])["row"]
                                t = sent.pop((row["account_id"], row["last_version"]), None)
                                if t is not None:
                                    delays.append(now - t)

            reader = threading.Thread(target=read_all, daemon=True)
            reader.start()
            start = time.perf_counter()
            i = 0
            while time.perf_counter() - start < SECONDS:
                due = start + i / RATE
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                key = f"acc-{(i * 7919) % KEYS:06d}"
                v = event(key, "MoneyDeposited", {"amount": 10})
                proc.stdin.flush()
                sent[(key, v)] = time.perf_counter()
                i += 1
            time.sleep(1)
            stop.set()
            reader.join()
            held = n - dropped[0]
            for s in sockets:
                s.close()
            ms = [d * 1000 for d in delays]
            print(f"{n:>5} subscribers{' (keyed)' if keyed else ''}: {held} held · {len(ms)} of {i} events seen by the "
                  f"watched one · delay p50 {percentile(ms, 0.5):.1f} ms, p99 "
                  f"{percentile(ms, 0.99):.1f} ms, max {max(ms) if ms else float('nan'):.1f} ms",
                  flush=True)
        finally:
            proc.stdin.close()
            proc.terminate()
            proc.wait()


def main():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    counts = [int(a) for a in sys.argv[1:]] or [1, 100, 1000]
    port = 18300
    for n in counts:
        one(n, port)
        port += 1


if __name__ == "__main__":
    main()
