#!/usr/bin/env python3
"""Open N PostgreSQL sessions and leave them idle.

Usage: idle.py HOST PORT USER DATABASE N

Each connection sends a StartupMessage (protocol 3.0), expects trust
authentication and reads until the first ReadyForQuery, so every session is
logged in and idle, as a pooled application's spare connections are. Prints
"ready N" once all are open, then holds them until stdin closes. Standard
library only: the benchmark needs no driver.
"""

import socket
import struct
import sys


def startup(user: str, database: str) -> bytes:
    body = struct.pack("!i", 196608)
    for key, value in (("user", user), ("database", database), ("application_name", "bench-idle")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def read_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed during startup")
        out += chunk
    return out


def until_ready(sock: socket.socket) -> None:
    while True:
        tag = read_exact(sock, 1)
        (length,) = struct.unpack("!i", read_exact(sock, 4))
        body = read_exact(sock, length - 4)
        if tag == b"E":
            raise ConnectionError("login refused: " + body.decode(errors="replace"))
        if tag == b"R" and struct.unpack("!i", body[:4])[0] != 0:
            raise ConnectionError("the server asked for a password (the bench expects trust)")
        if tag == b"Z":
            return


def main() -> None:
    host, port, user, database, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    packet = startup(user, database)
    sessions = []
    for _ in range(count):
        sock = socket.create_connection((host, port))
        sock.sendall(packet)
        until_ready(sock)
        sessions.append(sock)
    print(f"ready {len(sessions)}", flush=True)
    sys.stdin.read()
    for sock in sessions:
        sock.sendall(b"X\0\0\0\x04")
        sock.close()


if __name__ == "__main__":
    main()
