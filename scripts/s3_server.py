"""moto's S3 server with every request serialised, for tests.

Usage: python s3_server.py HOST PORT
(normally started by scripts/s3.sh with the python of .tools/s3-venv)

This is moto's own server app (the one `moto_server` runs: a
DomainDispatcherApplication over moto's backends, path-style S3, any
credentials accepted, `POST /moto-api/reset` wipes all state), served by
werkzeug with one difference: a single lock is held for the whole of every
request.

Why: moto implements conditional writes (`If-None-Match: *`, `If-Match: ETAG`)
as "check the current object, then store the new one" in two separate steps
with nothing in between. With werkzeug's threaded server, two concurrent
conditional PUTs to the same key can both pass the check and both succeed,
which a real S3 never allows. Serialising every request makes check+store
atomic, so concurrency tests see real-S3 semantics (exactly one winner, the
rest get 412 Precondition Failed).

The lock covers the complete response: a WSGI app may return a lazy iterable
whose body (and even the start_response call) is only produced while it is
iterated, so the body is collected into a list, and the iterable closed,
before the lock is released. Large bodies are therefore buffered in memory,
which is fine for tests. Requests still get their own threads (a slow or idle
client connection does not block others while it is not inside a request),
but only one request at a time is ever handled by moto.
"""
import sys
import threading

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()


def serialised(environ, start_response):
    with lock:
        result = app(environ, start_response)
        try:
            body = list(result)  # drain lazy bodies while the lock is held
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    return body


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: python s3_server.py HOST PORT")
    run_simple(sys.argv[1], int(sys.argv[2]), serialised, threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
