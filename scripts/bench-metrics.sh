#!/bin/bash
# The cost of `GET /metrics` under scraping (BENCHMARKS.md): the bank pipeline's
# generator (EVENTS events, 10,000 keys) run to its end with nobody scraping, and with a
# client scraping /metrics every 100 ms and every 10 ms (Prometheus scrapes every 15 s
# or so: these are 150 and 1,500 times that), RUNS times each, interleaved. Prints each
# run's events/s (over its uptime when it finished, as /status says) and the
# scrapes' latency and size.
# Usage: scripts/bench-metrics.sh   (EVENTS=5000000 RUNS=3 by default; needs a release
# build: cargo build --release --bin projector)
set -e
P=${PROJECTOR:-target/release/projector}
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-5000000} RUNS=${RUNS:-3} python3 - "$P" <<'PY'
import json, os, subprocess, sys, tempfile, threading, time, urllib.request

projector = sys.argv[1]
events, runs = int(os.environ["EVENTS"]), int(os.environ["RUNS"])
text = open("pipelines/bank-accounts.yaml").read().replace(
    "  events: 1000000", f"  events: {events}")

def one(interval, port):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "p.yaml")
        open(path, "w").write(text)
        proc = subprocess.Popen([projector, "run", path, "--quiet", "--http",
                                 f"127.0.0.1:{port}", "--state-dir", os.path.join(d, "st")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        stop, scrapes = threading.Event(), []
        def scrape():
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    body = urllib.request.urlopen(f"{base}/metrics").read()
                    scrapes.append((time.perf_counter() - t, len(body)))
                except OSError:
                    pass
                time.sleep(interval)
        if interval:
            threading.Thread(target=scrape, daemon=True).start()
        try:
            while True:
                time.sleep(0.05)
                try:
                    s = json.load(urllib.request.urlopen(f"{base}/status"))
                except OSError:
                    continue
                if s["state"] == "finished":
                    break
            stop.set()
            # Over the run's uptime when it finished (start-up included, a few ms).
            return s["events"]["read"], s["uptime_ms"], scrapes
        finally:
            proc.terminate()
            proc.wait()

results = {0: [], 0.1: [], 0.01: []}
port = 18090
for r in range(runs):
    for interval in results:
        port += 1
        results[interval].append(one(interval, port))
for interval, rs in results.items():
    rates = [read / (ms / 1000.0) for read, ms, _ in rs]
    lat = sorted(l for _, _, sc in rs for l, _ in sc)
    size = [b for _, _, sc in rs for _, b in sc]
    label = "no scraping" if not interval else f"scrape every {int(interval * 1000)} ms"
    line = f"{label:>22}: " + ", ".join(f"{x / 1e6:.2f}M" for x in rates) + " events/s"
    if lat:
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
        line += (f"; {len(lat)} scrapes, p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms,"
                 f" {sum(size) // len(size)} bytes")
    print(line)
PY
