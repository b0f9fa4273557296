#!/usr/bin/env python3
"""A small Confluent-compatible schema registry, in memory, for tests.

No Confluent-compatible registry installs from the package registries this project
reaches (Karapace is not on PyPI), so the tests run this. It serves the REST endpoints
Projector calls and the ones confluent-kafka's serializers call to register their
schemas, with the Schema Registry's JSON shapes and error codes:

  POST /subjects/{subject}/versions        register (same schema: same id)
  POST /subjects/{subject}                 look a schema up under a subject
  GET  /subjects                           subjects
  GET  /subjects/{subject}/versions        versions of a subject
  GET  /subjects/{subject}/versions/{v}    a version (or "latest")
  GET  /schemas/ids/{id}                   a schema by id
  GET  /config, /config/{subject}          compatibility (always BACKWARD)

Compatibility is not checked (the tests register compatible evolutions). With
--user and --password, every request needs HTTP basic authentication (401 otherwise).

Usage: schema_registry.py PORT [--user U --password P]
Prints "http://127.0.0.1:PORT" once it listens.
"""

import argparse
import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LOCK = threading.Lock()
SCHEMAS = {}  # id -> {"schema": str, "schemaType": str, "references": list}
SUBJECTS = {}  # subject -> [id, ...] (version i+1 is index i)
AUTH = None


def key_of(body):
    return (body.get("schemaType", "AVRO"), body["schema"],
            json.dumps(body.get("references", []), sort_keys=True))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("registry: " + fmt % args + "\n")

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, code, message):
        self.reply(status, {"error_code": code, "message": message})

    def authorized(self):
        if AUTH is None:
            return True
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic ") and base64.b64decode(header[6:]).decode() == AUTH:
            return True
        self.error(401, 40101, "Unauthorized")
        return False

    def body(self):
        n = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(n) or b"{}")

    def parts(self):
        return [unquote(p) for p in urlparse(self.path).path.strip("/").split("/") if p]

    def version_reply(self, subject, version, sid):
        s = SCHEMAS[sid]
        out = {"subject": subject, "version": version, "id": sid, "schema": s["schema"]}
        if s["schemaType"] != "AVRO":
            out["schemaType"] = s["schemaType"]
        if s["references"]:
            out["references"] = s["references"]
        return out

    def do_GET(self):
        if not self.authorized():
            return
        p = self.parts()
        with LOCK:
            if p == ["subjects"]:
                return self.reply(200, sorted(SUBJECTS))
            if p[:1] == ["config"]:
                return self.reply(200, {"compatibilityLevel": "BACKWARD"})
            if len(p) == 3 and p[:2] == ["schemas", "ids"]:
                s = SCHEMAS.get(int(p[2]))
                if s is None:
                    return self.error(404, 40403, f"Schema {p[2]} not found")
                out = {"schema": s["schema"]}
                if s["schemaType"] != "AVRO":
                    out["schemaType"] = s["schemaType"]
                if s["references"]:
                    out["references"] = s["references"]
                return self.reply(200, out)
            if len(p) >= 3 and p[0] == "subjects" and p[2] == "versions":
                ids = SUBJECTS.get(p[1])
                if ids is None:
                    return self.error(404, 40401, f"Subject '{p[1]}' not found.")
                if len(p) == 3:
                    return self.reply(200, list(range(1, len(ids) + 1)))
                v = len(ids) if p[3] == "latest" else int(p[3])
                if not 1 <= v <= len(ids):
                    return self.error(404, 40402, f"Version {p[3]} not found.")
                return self.reply(200, self.version_reply(p[1], v, ids[v - 1]))
        self.error(404, 404, "Not found")

    def do_POST(self):
        if not self.authorized():
            return
        p = self.parts()
        body = self.body()
        if "schema" not in body:
            return self.error(422, 42201, "Invalid schema")
        body.setdefault("schemaType", "AVRO")
        body.setdefault("references", [])
        with LOCK:
            existing = next((i for i, s in SCHEMAS.items() if key_of(s) == key_of(body)), None)
            if len(p) == 3 and p[0] == "subjects" and p[2] == "versions":
                sid = existing
                if sid is None:
                    sid = len(SCHEMAS) + 1
                    SCHEMAS[sid] = {k: body[k] for k in ("schema", "schemaType", "references")}
                ids = SUBJECTS.setdefault(p[1], [])
                if sid not in ids:
                    ids.append(sid)
                return self.reply(200, {"id": sid})
            if len(p) == 2 and p[0] == "subjects":
                ids = SUBJECTS.get(p[1], [])
                if existing is None or existing not in ids:
                    return self.error(404, 40403, "Schema not found")
                return self.reply(200, self.version_reply(p[1], ids.index(existing) + 1, existing))
        self.error(404, 404, "Not found")

    def do_PUT(self):
        if not self.authorized():
            return
        self.reply(200, self.body())


def main():
    global AUTH
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--user")
    ap.add_argument("--password")
    args = ap.parse_args()
    if args.user:
        AUTH = f"{args.user}:{args.password}"
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
