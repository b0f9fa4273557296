#!/usr/bin/env python3
"""Checks deploy/ without a container runtime (CI runs it through scripts/test.sh).

usage: deploy/check.py --projector BIN --schemas DIR

- The Kubernetes manifests validate against the Kubernetes schemas (kubernetes-validate,
  strict: unknown fields are errors), and compose.yaml against the Compose
  specification's JSON schema (DIR/compose_spec.json).
- Every `projector` command line in the manifests, the compose file and the Dockerfile
  uses a subcommand and flags the binary has (its --help), and serves on the port the
  container declares (containerPort, EXPOSE, the compose port mapping).
- Every probe path answers 200 without a token from a running binary.
- The pipeline in the ConfigMap is deploy/pipeline.yaml, and `projector validate`
  accepts it with the environment the StatefulSet and the compose file give it.
- The alerting rules (prometheus/alerts.yaml) and the Grafana dashboard
  (grafana/projector.json) parse as PromQL (promql-parser) and name only series that
  docs/metrics.md lists, and `GET /metrics` of a running binary serves them.
"""
import argparse
import glob
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import jsonschema
import promql_parser
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
problems = []


def problem(msg):
    problems.append(msg)
    print(f"check.py: FAIL {msg}", file=sys.stderr)


def ok(msg):
    print(f"check.py: ok   {msg}")


def help_flags(projector, sub):
    out = subprocess.run([projector, sub, "--help"], capture_output=True, text=True, check=True)
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out.stdout))


def check_command(projector, where, args, port=None):
    """`args` are projector's arguments (without the binary)."""
    if not args:
        problem(f"{where}: no projector arguments")
        return
    sub = args[0]
    try:
        flags = help_flags(projector, sub)
    except subprocess.CalledProcessError:
        problem(f"{where}: `projector {sub}` is not a subcommand")
        return
    for a in args[1:]:
        if a.startswith("--") and a.split("=")[0] not in flags:
            problem(f"{where}: `projector {sub}` has no flag {a}")
    if "--http" in args:
        addr = args[args.index("--http") + 1]
        if port is not None and int(addr.rsplit(":", 1)[1]) != int(port):
            problem(f"{where}: serves {addr} but the container declares port {port}")
    ok(f"{where}: projector {' '.join(args)}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_probe_paths(projector, paths):
    port = free_port()
    state = tempfile.mkdtemp(prefix="deploy-check.")
    proc = subprocess.Popen(
        [projector, "run", os.path.join(ROOT, "pipelines/bank-accounts.yaml"), "--quiet",
         "--http", f"127.0.0.1:{port}", "--state-dir", state],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for path in sorted(paths):
            status = None
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                        status = r.status
                        break
                except Exception:
                    time.sleep(0.2)
            if status == 200:
                ok(f"probe path {path} answers 200")
            else:
                problem(f"probe path {path} does not answer 200 (got {status})")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def validate_pipeline(projector, where, text, env):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    full = dict(os.environ, **env)
    out = subprocess.run([projector, "validate", f.name], capture_output=True, text=True, env=full)
    os.unlink(f.name)
    if out.returncode == 0:
        ok(f"{where}: the pipeline validates")
    else:
        problem(f"{where}: projector validate failed:\n{out.stdout}{out.stderr}")


def documented_series():
    """Every series name docs/metrics.md lists, a histogram's with its suffixes."""
    names = set()
    for line in open(os.path.join(ROOT, "docs", "metrics.md")):
        m = re.match(r"\| `([a-z_]+)` \| (\w+) \|", line)
        if m:
            names.add(m.group(1))
            if m.group(2) == "histogram":
                names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    return names


def check_promql(where, expr, known):
    # Grafana's variables stand for label values.
    expr = re.sub(r"\$\{?\w+\}?", ".*", expr)
    try:
        promql_parser.parse(expr)
    except Exception as e:  # the parser raises plain exceptions
        problem(f"{where}: PromQL does not parse: {e}: {expr}")
        return
    for name in re.findall(r"\b((?:projector|process)_[a-z_]+)\b", expr):
        if name not in known:
            problem(f"{where}: {name} is not a series docs/metrics.md lists")


def check_monitoring(projector):
    known = documented_series()
    if len(known) < 30:
        problem(f"docs/metrics.md lists only {len(known)} series")
    rules = yaml.safe_load(open(os.path.join(HERE, "prometheus", "alerts.yaml")))
    count = 0
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            where = f"alerts.yaml {rule.get('alert')}"
            count += 1
            for key in ("alert", "expr"):
                if key not in rule:
                    problem(f"{where}: no {key}")
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                problem(f"{where}: severity is not critical, warning or info")
            if "summary" not in rule.get("annotations", {}):
                problem(f"{where}: no summary")
            if "for" in rule and not re.fullmatch(r"\d+[smhd]", str(rule["for"])):
                problem(f"{where}: 'for: {rule['for']}' is not a duration")
            check_promql(where, rule.get("expr", ""), known)
    ok(f"{count} alerting rules parse and name documented series")
    dashboard = json.load(open(os.path.join(HERE, "grafana", "projector.json")))
    targets = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for title, expr in targets:
        check_promql(f"dashboard panel '{title}'", expr, known)
    if not dashboard.get("uid") or not targets:
        problem("the dashboard has no uid or no queries")
    ok(f"the dashboard's {len(targets)} queries parse and name documented series")
    # The binary serves what the docs list.
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [projector, "run", os.path.join(ROOT, "pipelines", "bank-accounts.yaml"),
             "--http", f"127.0.0.1:{port}", "--state-dir", tmp, "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    # One query, so that the query series exist.
                    urllib.request.urlopen(urllib.request.Request(
                        f"{base}/sql", data=b"SELECT 1", method="POST")).read()
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(2)  # a checkpoint, and the watchdog's first look
            with urllib.request.urlopen(f"{base}/metrics") as r:
                text = r.read().decode()
            served = set(re.findall(r"^([a-z_]+)[{ ]", text, re.M))
            histograms = {n[: -len("_count")] for n in served if n.endswith("_count")}
            # Lag needs a source with an end (Kafka); the generator has none.
            missing = {n for n in known - served - histograms
                       if not n.startswith("projector_partition_lag")}
            if missing:
                problem(f"GET /metrics does not serve {sorted(missing)}")
            else:
                ok("GET /metrics serves the documented series")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--projector", required=True)
    ap.add_argument("--schemas", required=True, help="a directory with compose_spec.json")
    a = ap.parse_args()

    manifests = sorted(glob.glob(os.path.join(HERE, "k8s", "*.yaml")))
    r = subprocess.run(["kubernetes-validate", "--strict", "--quiet", *manifests],
                       capture_output=True, text=True)
    if r.returncode != 0:
        problem(f"kubernetes-validate:\n{r.stdout}{r.stderr}")
    else:
        ok(f"{len(manifests)} manifests validate against the Kubernetes schemas (strict)")

    docs = [d for m in manifests for d in yaml.safe_load_all(open(m)) if d]
    kinds = {d["kind"] for d in docs}
    for needed in ["StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"]:
        if needed not in kinds:
            problem(f"no {needed} in deploy/k8s")
    pipeline_text = open(os.path.join(HERE, "pipeline.yaml")).read()
    probe_paths = set()
    secret_env = {}
    for d in docs:
        if d["kind"] == "Secret":
            secret_env.update(d.get("stringData", {}))
        if d["kind"] == "ConfigMap" and "pipeline.yaml" in d.get("data", {}):
            if d["data"]["pipeline.yaml"] != pipeline_text:
                problem("the ConfigMap's pipeline.yaml differs from deploy/pipeline.yaml")
            else:
                ok("the ConfigMap holds deploy/pipeline.yaml")
    for d in docs:
        if d["kind"] != "StatefulSet":
            continue
        spec = d["spec"]["template"]["spec"]
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace < 30:
            problem(f"terminationGracePeriodSeconds {grace} leaves too little for a final checkpoint")
        for c in spec["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            env = {e["name"]: e.get("value", "x") for e in c.get("env", [])}
            env.update(secret_env)
            env = {k: re.sub(r"\$\((\w+)\)", "x", v) for k, v in env.items()}
            check_command(a.projector, f"StatefulSet {d['metadata']['name']}", c["args"],
                          port=ports.get("http"))
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"]:
                p = c.get(probe, {}).get("httpGet")
                if p:
                    probe_paths.add(p["path"])
                    if p["port"] not in ports and p["port"] not in ports.values():
                        problem(f"{probe} uses port {p['port']}, not a container port")
            validate_pipeline(a.projector, "StatefulSet env", pipeline_text, env)

    compose_path = os.path.join(HERE, "compose.yaml")
    compose = yaml.safe_load(open(compose_path))
    schema = json.load(open(os.path.join(a.schemas, "compose_spec.json")))
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(compose))
    for e in errors:
        problem(f"compose.yaml {list(e.path)}: {e.message}")
    if not errors:
        ok("compose.yaml validates against the Compose specification's schema")
    instances = 0
    for name, svc in compose["services"].items():
        if svc.get("image", "").startswith("projector"):
            ports = [p.split(":")[-1] for p in svc.get("ports", [])]
            check_command(a.projector, f"compose service {name}", svc["command"],
                          port=ports[0] if ports else None)
            if svc["command"][0] == "run":
                instances += 1
                env = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v))
                       for k, v in svc["environment"].items()}
                env["HOSTNAME"] = name
                validate_pipeline(a.projector, f"compose service {name}", pipeline_text, env)
    if instances < 3:
        problem(f"compose.yaml runs {instances} Projector instances, not 3")
    for needed in ["tansu", "minio"]:
        if needed not in compose["services"]:
            problem(f"compose.yaml has no {needed} service")

    dockerfile = open(os.path.join(HERE, "Dockerfile")).read()
    if len(re.findall(r"^FROM ", dockerfile, re.M)) < 2:
        problem("the Dockerfile is not multi-stage")
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    if not user or user[-1].split(":")[0] in ("root", "0"):
        problem("the Dockerfile's image does not run as a non-root user")
    expose = re.findall(r"^EXPOSE (\d+)", dockerfile, re.M)
    cmd = re.search(r"^CMD (\[.*\])", dockerfile, re.M)
    entry = re.search(r"^ENTRYPOINT (\[.*\])", dockerfile, re.M)
    if not (cmd and entry and expose):
        problem("the Dockerfile needs ENTRYPOINT, CMD and EXPOSE")
    else:
        if json.loads(entry.group(1))[0] not in dockerfile.split("COPY --from=build", 1)[1]:
            problem("the ENTRYPOINT is not the binary the image copies")
        check_command(a.projector, "Dockerfile CMD", json.loads(cmd.group(1)), port=expose[0])

    check_probe_paths(a.projector, probe_paths)
    check_monitoring(a.projector)
    if problems:
        sys.exit(f"check.py: {len(problems)} problem(s) in deploy/")
    print("check.py: deploy/ is consistent with the binary")


if __name__ == "__main__":
    main()
