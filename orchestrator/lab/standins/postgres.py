"""PostgreSQL stand-in: speaks enough of the wire protocol for probes, plus `pg_isready`.

Server (`postgres` / `docker-entrypoint.sh postgres -c ...`): listens on `PGPORT` or
`-p N` (default 5432); answers SSLRequest with `N`, any startup packet with
AuthenticationOk + ParameterStatus + ReadyForQuery, and every simple query with an empty
result. `pg_isready [-h HOST] [-p PORT] [-U USER] [-d DB] [-t SECONDS]` (run as
`postgres.py pg_isready ...`) exits 0 when a server answers the startup packet, 2 when
nothing answers — as the real tool. Fault modes: see `_base.py` (never-healthy: no
listener at all).
"""

from __future__ import annotations

import argparse
import os
import socket
import socketserver
import struct
import sys
import time

try:
    from . import _base
except ImportError:  # run as a script inside a lab image
    import _base  # type: ignore[no-redef]

SSL_REQUEST = 80877103
PROTOCOL_3 = 196608


def message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def startup_reply() -> bytes:
    params = b"".join(
        message(b"S", k + b"\0" + v + b"\0")
        for k, v in (
            (b"server_version", b"15.5"),
            (b"client_encoding", b"UTF8"),
            (b"DateStyle", b"ISO, MDY"),
            (b"integer_datetimes", b"on"),
        )
    )
    return (
        message(b"R", struct.pack("!I", 0))
        + params
        + message(b"K", struct.pack("!II", os.getpid(), 1))
        + message(b"Z", b"I")
    )


def read_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


class PgHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn: socket.socket = self.request
        try:
            self.startup(conn)
            self.queries(conn)
        except (ConnectionError, OSError, struct.error):
            return

    def startup(self, conn: socket.socket) -> None:
        while True:
            length, code = struct.unpack("!II", read_exact(conn, 8))
            read_exact(conn, length - 8)
            if code == SSL_REQUEST:
                conn.sendall(b"N")
                continue
            conn.sendall(startup_reply())
            return

    def queries(self, conn: socket.socket) -> None:
        while True:
            kind = read_exact(conn, 1)
            (length,) = struct.unpack("!I", read_exact(conn, 4))
            read_exact(conn, length - 4)
            if kind == b"X":
                return
            if kind == b"Q":
                conn.sendall(message(b"I", b"") + message(b"Z", b"I"))


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="postgres-standin", add_help=False)
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("PGPORT", "5432")))
    args, _unknown = parser.parse_known_args(argv)
    mode = _base.current_mode()
    _base.exit_on_sigterm()
    if not mode.is_healthy:
        _base.log("postgres-standin", "never-healthy: not listening")
        while True:
            time.sleep(3600)
    _base.wait_slow_start(mode, "postgres-standin")
    server = Server(("0.0.0.0", args.port), PgHandler)
    _base.arm_die_after(mode, "postgres-standin")
    _base.log("postgres-standin", f"database system is ready to accept connections on {args.port}")
    server.serve_forever()
    return 0


def probe(host: str, port: int, timeout: float) -> bool:
    startup = struct.pack("!I", PROTOCOL_3) + b"user\0postgres\0\0"
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(struct.pack("!I", len(startup) + 4) + startup)
            return conn.recv(1) in (b"R", b"E")
    except OSError:
        return False


def pg_isready(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pg_isready", add_help=False)
    parser.add_argument("-h", "--host", default=os.environ.get("PGHOST", "localhost"))
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("PGPORT", "5432")))
    parser.add_argument("-t", "--timeout", type=float, default=3.0)
    parser.add_argument("-q", "--quiet", action="store_true")
    args, _unknown = parser.parse_known_args(argv)
    host = "127.0.0.1" if args.host in ("localhost", "") else args.host
    ready = probe(host, args.port, args.timeout)
    if not args.quiet:
        state = "accepting connections" if ready else "no response"
        sys.stdout.write(f"{args.host}:{args.port} - {state}\n")
    return 0 if ready else 2


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["pg_isready"]:
        return pg_isready(args[1:])
    if args[:1] == ["postgres"]:
        args = args[1:]
    return serve_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
