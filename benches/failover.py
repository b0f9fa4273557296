#!/usr/bin/env python3
"""Failover time: from a member's death (kill -9) to its partitions being read again by
another instance, with checkpoints in S3 (BENCHMARKS.md, "Failover").

usage: benches/failover.py [--projector BIN] [--runs N] [--session-timeout-ms MS]
                           [--heartbeat-interval-ms MS] [--strategy S] [--partitions P]
                           [--rate EVENTS_PER_S]

Starts a Tansu broker and a moto S3 server through scripts/broker.sh and scripts/s3.sh,
a producer that keeps sending bank events (projector produce, in batches), and two
instances A and B of the shipped Kafka pipeline with their checkpoints in S3. Each run
kills B with SIGKILL, then polls A's /status every 20 ms until every partition B owned is
assigned to A and A's read position in it has moved past where it was restored:
that moment minus the kill is the failover time. B is then started again and the two
share the partitions before the next run. Prints each run and the median.

The failover time is bounded below by the group noticing the death, which is
session.timeout.ms (the shipped pipeline's 6 s unless --session-timeout-ms); the rest
is the rebalance, the restore from S3 and the first fetch.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from servers import ROOT, broker_and_store, free_port, projector_binary, sh
from servers import wait as wait_until


def status(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1) as r:
            return json.load(r)
    except Exception:
        return None


def owned(port):
    s = status(port)
    if not s:
        return {}
    return {p["partition"]: p["next_offset"] for p in s["partitions"] if p["assigned"]}


def wait(cond, secs, what):
    wait_until(cond, secs, what, "failover.py")


def main():
    ap = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--projector", default=os.path.join(target, "release/projector"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    ap.add_argument("--heartbeat-interval-ms", type=int, default=None,
                    help="default: librdkafka's (3000)")
    ap.add_argument("--strategy", default=None,
                    help="partition.assignment.strategy (default: Projector's, cooperative-sticky)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rate", type=int, default=20000)
    a = ap.parse_args()
    projector_binary(a.projector, "failover.py")
    with broker_and_store() as (broker, s3):
        results = run(a, broker, s3)
    print(f"session.timeout.ms {a.session_timeout_ms}, heartbeat.interval.ms "
          f"{a.heartbeat_interval_ms or 'default'}: median {statistics.median(results) * 1000:.0f} ms, "
          f"min {min(results) * 1000:.0f}, max {max(results) * 1000:.0f} over {len(results)} runs")


def run(a, broker, s3):
    """The runs, against the broker and the S3 server; returns the failover times (s)."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    work = tempfile.mkdtemp(prefix="failover.")
    topic = "failover"
    text = open(os.path.join(ROOT, "pipelines/bank-accounts-kafka.yaml")).read()
    text = (text.replace("${KAFKA_BROKERS:-127.0.0.1:9092}", broker)
            .replace("topics: [bank-events]", f"topics: [{topic}]")
            .replace('session.timeout.ms: "6000"', f'session.timeout.ms: "{a.session_timeout_ms}"'
                     + (f'\n    heartbeat.interval.ms: "{a.heartbeat_interval_ms}"'
                        if a.heartbeat_interval_ms else "")
                     + (f'\n    partition.assignment.strategy: "{a.strategy}"' if a.strategy else ""))
            .replace("views:", "checkpoint:\n  store: s3://projector/failover\n"
                     f"  endpoint: {s3}\n  region: us-east-1\nviews:"))
    pipeline = os.path.join(work, "pipeline.yaml")
    open(pipeline, "w").write(text)
    sh(a.projector, "produce", topic, "--brokers", broker, "--partitions",
       str(a.partitions), "--events", "1000", env=env)

    stop = threading.Event()

    def produce():
        seed = 1
        while not stop.is_set():
            started = time.time()
            subprocess.run([a.projector, "produce", topic, "--brokers", broker,
                            "--events", str(a.rate // 2), "--seed", str(seed)],
                           capture_output=True, env=env)
            seed += 1
            time.sleep(max(0, 0.5 - (time.time() - started)))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    procs = {}

    def start(name, port):
        procs[name] = subprocess.Popen(
            [a.projector, "run", pipeline, "--quiet", "--workers", "1",
             "--http", f"127.0.0.1:{port}", "--state-dir", os.path.join(work, f"state-{name}")],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"{name}.log"), "a"),
            env=env)

    port_a, port_b = free_port(), free_port()
    results = []
    try:
        start("a", port_a)
        start("b", port_b)
        for run in range(a.runs):
            wait(lambda: len(owned(port_a)) + len(owned(port_b)) == a.partitions
                 and owned(port_a) and owned(port_b), 120, "A and B to share the partitions")
            time.sleep(2)
            b_parts = set(owned(port_b))
            procs["b"].send_signal(signal.SIGKILL)
            killed = time.time()
            procs["b"].wait()
            first_seen = {}
            while True:
                now = owned(port_a)
                for p in b_parts:
                    if p in now and p not in first_seen:
                        first_seen[p] = now[p]
                if all(p in now and p in first_seen and now[p] > first_seen[p] for p in b_parts):
                    break
                if time.time() - killed > 120:
                    sys.exit("failover.py: A never read B's partitions")
                time.sleep(0.02)
            took = time.time() - killed
            results.append(took)
            print(f"run {run}: B owned {sorted(b_parts)}; read again by A after {took * 1000:.0f} ms",
                  flush=True)
            start("b", port_b)
    finally:
        stop.set()
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    return results


if __name__ == "__main__":
    main()
