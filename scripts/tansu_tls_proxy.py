#!/usr/bin/env python3
"""TLS in front of a Tansu broker, for tests (scripts/broker.sh start-secure).

Tansu 0.6.0 takes --cert and --key but never uses them: its broker builds a TLS
acceptor and drops it (tansu-broker's broker.rs, `let _acceptor = ...`), and serves
plaintext. This terminates TLS on LISTEN with CERT and KEY and forwards the bytes to
the broker on BACKEND, which advertises LISTEN, so every connection a client makes
(bootstrap and brokers from metadata) goes through TLS.

Usage: tansu_tls_proxy.py LISTEN_HOST:PORT BACKEND_HOST:PORT CERT KEY
"""

import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    listen, backend, cert, key = sys.argv[1:5]
    lhost, lport = listen.rsplit(":", 1)
    bhost, bport = backend.rsplit(":", 1)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def serve(client_reader, client_writer):
        try:
            broker_reader, broker_writer = await asyncio.open_connection(bhost, int(bport))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, broker_writer), pipe(broker_reader, client_writer)
        )

    server = await asyncio.start_server(serve, lhost, int(lport), ssl=context)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
