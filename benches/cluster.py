#!/usr/bin/env python3
"""Queries across instances: key lookups answered by another instance, and an aggregate
over every row of a view spread over N instances, while events are ingested
(BENCHMARKS.md, "Queries across instances").

usage: benches/cluster.py [--projector BIN] [--instances N] [--partitions P]
                          [--keys K] [--events E] [--rate EVENTS_PER_S]
                          [--lookups L] [--aggregates A]

Starts a Tansu broker and a moto S3 server through scripts/broker.sh and scripts/s3.sh,
fills a topic with E bank events over K keys (`projector produce`), starts N instances
of the shipped Kafka pipeline (checkpoints in S3, `partitioner: murmur2`) and waits
until every one answers from the whole topic. Then, while a producer keeps sending
events at RATE, it sends from one client over one keep-alive connection to the first
instance:
- L key lookups (`SELECT * FROM accounts WHERE account_id = '…'`) of random keys; each
  answer's `x-projector-partition-epochs` names the key's partition, and the ones the
  first instance does not own were answered by another instance: their latency is
  reported apart from the local ones;
- A aggregates over every row (`SELECT count(*), sum(balance), max(balance) FROM
  accounts`), which read every partition, most from the other instances.
Prints p50, p99 and max of each, and the view's row count.
"""
import argparse
import http.client
import json
import os
import random
import signal
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
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
            return json.load(r)
    except Exception:
        return None


def wait(cond, secs, what):
    wait_until(cond, secs, what, "cluster.py")


class Client:
    """One keep-alive HTTP connection to an instance."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def sql(self, query):
        self.conn.request("POST", "/sql", body=query, headers={"content-type": "text/plain"})
        r = self.conn.getresponse()
        body = r.read()
        return r.status, dict(r.getheaders()), body


def epochs(headers):
    h = headers.get("x-projector-partition-epochs", "")
    out = {}
    for part in filter(None, h.split(",")):
        name, at = part.split("=")
        epoch, offset = at.split("@")
        out[name] = (int(epoch), int(offset))
    return out


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def report(what, ms):
    print(f"{what}: {len(ms)} queries, p50 {pct(ms, 50):.2f} ms, p99 {pct(ms, 99):.2f} ms, "
          f"max {max(ms):.2f} ms", flush=True)


def main():
    ap = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--projector", default=os.path.join(target, "release/projector"))
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--lookups", type=int, default=5_000)
    ap.add_argument("--aggregates", type=int, default=200)
    a = ap.parse_args()
    projector_binary(a.projector, "cluster.py")
    with broker_and_store() as (broker, s3):
        run(a, broker, s3)


def run(a, broker, s3):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    work = tempfile.mkdtemp(prefix="cluster.")
    topic = "cluster"
    text = open(os.path.join(ROOT, "pipelines/bank-accounts-kafka.yaml")).read()
    text = (text.replace("${KAFKA_BROKERS:-127.0.0.1:9092}", broker)
            .replace("topics: [bank-events]", f"topics: [{topic}]")
            .replace("views:", "checkpoint:\n  store: s3://projector/cluster\n"
                     f"  endpoint: {s3}\n  region: us-east-1\n  interval: 5s\nviews:"))
    pipeline = os.path.join(work, "pipeline.yaml")
    open(pipeline, "w").write(text)
    started = time.time()
    sh(a.projector, "produce", topic, "--brokers", broker, "--partitions", str(a.partitions),
       "--events", str(a.events), "--keys", str(a.keys), env=env)
    print(f"produced {a.events} events over {a.keys} keys to {a.partitions} partitions "
          f"in {time.time() - started:.1f} s", flush=True)
    procs = []
    ports = [free_port() for _ in range(a.instances)]
    stop = threading.Event()
    try:
        for i, port in enumerate(ports):
            procs.append(subprocess.Popen(
                [a.projector, "run", pipeline, "--quiet", "--workers", "1",
                 "--http", f"127.0.0.1:{port}", "--state-dir", os.path.join(work, f"state-{i}")],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"{i}.log"), "a"),
                env=env))
        clients = [Client(p) for p in ports]

        def whole(c):
            try:
                st, h, _ = c.sql("SELECT count(*) FROM accounts")
            except Exception:
                return False
            return st == 200 and sum(o for _, o in epochs(h).values()) >= a.events

        started = time.time()
        wait(lambda: all(whole(Client(p)) for p in ports), 900,
             "every instance to answer from the whole topic")
        print(f"{a.instances} instances caught up in {time.time() - started:.1f} s", flush=True)
        own = {p["partition"] for p in status(ports[0])["partitions"] if p["assigned"]}
        print(f"the asked instance owns {len(own)} of {a.partitions} partitions", flush=True)

        def produce():
            seed = 1000
            while not stop.is_set():
                t = time.time()
                subprocess.run([a.projector, "produce", topic, "--brokers", broker,
                                "--events", str(a.rate // 2), "--keys", str(a.keys),
                                "--seed", str(seed)], capture_output=True, env=env)
                seed += 1
                time.sleep(max(0, 0.5 - (time.time() - t)))

        producer = threading.Thread(target=produce, daemon=True)
        if a.rate > 0:
            producer.start()
        time.sleep(2)
        c = clients[0]
        st, _, body = c.sql("SELECT count(*) AS n FROM accounts")
        rows = json.loads(body)[0]["n"]
        print(f"the view has {rows} rows", flush=True)
        width = len(str(a.keys - 1)) if a.keys > 1 else 1
        width = max(width, 6)
        rnd = random.Random(7)
        local, remote = [], []
        for _ in range(a.lookups):
            key = f"acc-{rnd.randrange(a.keys):0{width}d}"
            t = time.perf_counter()
            st, h, body = c.sql(f"SELECT * FROM accounts WHERE account_id = '{key}'")
            ms = (time.perf_counter() - t) * 1000
            if st != 200:
                sys.exit(f"cluster.py: lookup failed: {st} {body[:300]}")
            parts = list(epochs(h))
            if len(parts) != 1:
                sys.exit(f"cluster.py: a lookup read {parts}, not one partition")
            (remote if parts[0] not in own else local).append(ms)
        report("key lookup answered by another instance", remote)
        report("key lookup answered locally", local)
        agg = []
        for _ in range(a.aggregates):
            t = time.perf_counter()
            st, h, body = c.sql("SELECT count(*) AS n, sum(balance) AS total, "
                                "max(balance) AS top FROM accounts")
            agg.append((time.perf_counter() - t) * 1000)
            if st != 200 or len(epochs(h)) != a.partitions:
                sys.exit(f"cluster.py: aggregate failed: {st} {body[:300]}")
        report(f"aggregate over all {rows} rows on {a.instances} instances", agg)
        view = []
        for _ in range(a.aggregates):
            t = time.perf_counter()
            st, h, body = c.sql("SELECT * FROM volume_by_type")
            view.append((time.perf_counter() - t) * 1000)
        report("aggregate view (partials merged across instances)", view)
        lags = [status(p) for p in ports]
        read = sum(s["events"]["read"] for s in lags if s)
        print(f"events read by the instances meanwhile: {read}", flush=True)
    finally:
        stop.set()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
