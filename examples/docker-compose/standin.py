#!/usr/bin/env python3
"""A stand-in for an external service, for `make demo-compose` and its test (standins.yaml).

    standin.py NAME [--http PORT]... [--tls PORT]... [--cert FILE --key FILE]

Listens on every address of its container: plain HTTP on each --http port, HTTP over TLS on each
--tls port (any SNI, the certificate given). Answers every request ``200 hello from NAME``.
Prints one JSON line per line of its life on stdout, which `docker logs` keeps:

    {"standin": NAME, "ready": [ports]}                       once listening
    {"standin": NAME, "port": 443, "sni": "github.com", "host": "github.com",
     "request": "GET / HTTP/1.1", "bytes": 77}                  per connection, when it ends

so a test can tell what reached the service and what did not. Python's standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import sys
import threading


def log(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def on_sni(sock: ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext) -> None:
    sock.standin_record["sni"] = server_name  # type: ignore[attr-defined]


def serve(name: str, listener: socket.socket, port: int, context: ssl.SSLContext | None) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(name, conn, port, context), daemon=True).start()


def handle(name: str, conn: socket.socket, port: int, context: ssl.SSLContext | None) -> None:
    record: dict[str, object] = {"standin": name, "port": port, "sni": None, "host": None,
                                 "request": None, "bytes": 0}
    sock: socket.socket = conn
    conn.settimeout(10)
    try:
        if context is not None:
            sock = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            sock.standin_record = record  # type: ignore[attr-defined]  # for on_sni
            sock.do_handshake()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            record["bytes"] = len(data)
        if b"\r\n\r\n" in data:
            lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            record["request"] = lines[0]
            for line in lines[1:]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "host":
                    record["host"] = value.strip()
            body = f"hello from {name}\n".encode()
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                         + f"content-length: {len(body)}\r\n\r\n".encode() + body)
    except (OSError, ssl.SSLError) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
        log(**record)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name")
    parser.add_argument("--http", type=int, action="append", default=[])
    parser.add_argument("--tls", type=int, action="append", default=[])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    if args.tls and not (args.cert and args.key):
        parser.error("--tls needs --cert and --key")

    # PID 1 in its container: without a handler SIGTERM would be ignored and `down` would wait.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threads = []
    for port, tls in [(p, False) for p in args.http] + [(p, True) for p in args.tls]:
        listener = socket.create_server(("0.0.0.0", port), backlog=64)
        context = None
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(args.cert, args.key)
            context.sni_callback = on_sni
        threads.append(threading.Thread(target=serve, args=(args.name, listener, port, context),
                                        daemon=True))
    for thread in threads:
        thread.start()
    log(standin=args.name, ready=sorted(args.http + args.tls))
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
