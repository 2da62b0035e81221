"""The protocol's limits, against a real uvicorn on loopback with raw sockets.

A raw socket, because the attacks are what a well-behaved HTTP client never sends:
a head that never ends, a byte a second, a Content-Length it does not mean.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from nsprov.api.httplimits import HttpLimits, protocol_for
from tests.cluster.controlplane import free_port
from tests.support import wait_until

LIMITS = HttpLimits(max_head_bytes=4096, max_body_bytes=1000, read_timeout=1.0, max_connections=8)


@dataclass
class Server:
    port: int
    registry: CollectorRegistry
    seen: list[str]

    def cut(self, reason: str) -> float:
        return self.registry.get_sample_value("cut_total", {"reason": reason}) or 0.0

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return sock


@pytest.fixture
def server() -> Iterator[Server]:
    seen: list[str] = []

    async def hello(request: Request) -> Response:
        seen.append(request.url.path)
        return PlainTextResponse("hello")

    registry = CollectorRegistry()
    cuts = Counter("cut", "cut", ["reason"], registry=registry)
    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=[Route("/", hello, methods=["GET", "POST"])]),
        host="127.0.0.1",
        port=port,
        http=protocol_for(LIMITS, cuts),
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(running.serve()), daemon=True)
    thread.start()
    wait_until(lambda: running.started, timeout=10, message="uvicorn started")
    try:
        yield Server(port, registry, seen)
    finally:
        running.should_exit = True
        thread.join(timeout=10)


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the one answer on ``sock`` (read until closed)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def _problem(sock: socket.socket, status: int) -> dict[str, object]:
    got, headers, body = _answer(sock)
    assert got == status, body
    assert headers["content-type"] == "application/problem+json"
    problem: dict[str, object] = json.loads(body)
    assert problem["status"] == status
    assert problem["title"]
    return problem


def test_a_plain_request_is_answered(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _answer(sock)[0] == 200


def test_an_unfinished_head_over_the_limit_is_a_431(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 5000 + b"\r\n")
        assert "4096 bytes" in str(_problem(sock, 431)["detail"])
    assert server.cut("head_too_large") == 1


def test_a_whole_head_over_the_limit_is_a_431_too(server: Server) -> None:
    """h11 bounds only incomplete heads: one that arrives in a single read passes it."""
    token = "t" * 6000
    with server.connect() as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        _problem(sock, 431)
    assert server.seen == []


def test_a_declared_body_over_the_limit_is_a_413_before_the_app(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
        assert "1000 bytes" in str(_problem(sock, 413)["detail"])
    assert server.seen == []
    assert server.cut("body_too_large") == 1


def test_a_chunked_body_over_the_limit_is_cut(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            sock.sendall(b"190\r\n" + b"b" * 400 + b"\r\n")
        status, _, _ = _answer(sock)
    # The app answered before reading the body (200), or the refusal came first (413):
    # either way the connection is closed once the body passes the limit.
    assert status in (200, 413)
    wait_until(lambda: server.cut("body_too_large") == 1, timeout=2)


def test_a_slow_head_gets_a_408_at_the_deadline(server: Server) -> None:
    started = time.monotonic()
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        for byte in b"Host: x\r\n":
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
        assert "did not arrive within 1s" in str(_problem(sock, 408)["detail"])
    assert time.monotonic() - started < LIMITS.read_timeout + 1
    assert server.cut("head_timeout") == 1
    assert server.seen == []


def test_a_slow_body_is_cut_at_the_deadline(server: Server) -> None:
    started = time.monotonic()
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        sock.settimeout(LIMITS.read_timeout + 2)
        data = b""
        while chunk := sock.recv(65536):  # the app answers; the deadline closes
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data
    assert time.monotonic() - started < LIMITS.read_timeout + 1
    assert server.cut("body_timeout") == 1


def test_a_silent_connection_is_closed_at_the_deadline(server: Server) -> None:
    with server.connect() as sock:
        sock.settimeout(LIMITS.read_timeout + 2)
        assert sock.recv(100) == b""
    assert server.cut("head_timeout") == 1


def test_the_deadline_restarts_with_each_request_of_a_kept_connection(server: Server) -> None:
    with server.connect() as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"hello"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(0.6)  # idle within keep-alive; the three together exceed the deadline
    assert server.cut("head_timeout") == 0


def test_at_the_cap_the_connection_waiting_longest_makes_room(server: Server) -> None:
    """Refusing the new connection would let whoever holds the cap's worth of idle or slow
    connections lock every client out; the one that has waited longest for a head goes."""
    held = [server.connect() for _ in range(LIMITS.max_connections)]
    try:
        with server.connect() as extra:
            extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _answer(extra)[0] == 200
        held[0].settimeout(2)
        assert held[0].recv(100) == b""  # the first one, idle longest, was closed
        assert server.cut("evicted") == 1
        assert server.cut("too_many_connections") == 0
    finally:
        for sock in held:
            sock.close()


def test_a_malformed_request_is_a_400_problem(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        assert _problem(sock, 400)["detail"] == "malformed HTTP/1.1 request"
    assert server.cut("malformed") == 1
