"""Hostile HTTP clients for the tests and the bench: bounded in count and time, loopback only.

What a stranger who can reach nsprov's port sends when it wants to grow nsprov or
hold it: heads that never end, a byte a second, tokens far above any real one.
Each attack runs many raw sockets from one thread (``selectors``), so a thousand
connections cost the attacker a thousand file descriptors, not a thousand threads,
and stops by itself at its ``timeout``. Every connection's fate is recorded: the
status nsprov answered (None: closed or reset without one) and when it was cut.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import resource
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx


@dataclass
class Outcome:
    """One attacking connection: what nsprov answered and when it cut the connection."""

    status: int | None = None
    """The status line nsprov sent, or None (closed or reset without an answer)."""
    cut_after: float | None = None
    """Seconds from connect to nsprov closing it; None: still open at the attack's end."""


@dataclass
class AttackResult:
    outcomes: list[Outcome]
    seconds: float

    def statuses(self) -> Counter[int | None]:
        return Counter(o.status for o in self.outcomes)

    def still_open(self) -> int:
        return sum(1 for o in self.outcomes if o.cut_after is None)

    def latest_cut(self) -> float:
        return max((o.cut_after for o in self.outcomes if o.cut_after is not None), default=0.0)

    def summary(self) -> str:
        shown = ", ".join(
            f"{status or 'no answer'}: {n}"
            for status, n in sorted(self.statuses().items(), key=lambda kv: str(kv[0]))
        )
        return (
            f"{len(self.outcomes)} connections ({shown}); last cut after "
            f"{self.latest_cut():.1f}s, {self.still_open()} still open after {self.seconds:.1f}s"
        )


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host.startswith("127."):
        raise ValueError(f"hostile clients talk to loopback only, not {host!r}")
    return host, parts.port or 80


def raise_fd_limit(wanted: int = 8192) -> int:
    """Raise this process's open-file limit (and its children's) towards ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


@dataclass
class _Conn:
    sock: socket.socket
    payload: bytes
    opened: float
    sent: int = 0
    received: bytes = b""
    outcome: Outcome = field(default_factory=Outcome)
    closed: bool = False


def _status(received: bytes) -> int | None:
    if not received.startswith(b"HTTP/1.1 "):
        return None
    with contextlib.suppress(ValueError):
        return int(received[9:12])
    return None


def push(
    url: str,
    payload: bytes,
    *,
    connections: int,
    timeout: float,
    bytes_per_second: float | None = None,
    sustain: float = 0.0,
    max_connections_total: int = 100_000,
) -> AttackResult:
    """``connections`` sockets each send ``payload`` (at ``bytes_per_second`` each, or as
    fast as nsprov reads), then hold the connection without sending more, until nsprov
    closes it or ``timeout`` seconds after the start.

    With ``sustain``, a connection nsprov cuts is replaced by a new one until that many
    seconds have passed (at most ``max_connections_total`` in all): an attacker whose
    connections are cut comes back.
    """
    host, port = _address(url)
    selector = selectors.DefaultSelector()
    started = time.monotonic()
    conns: list[_Conn] = []

    def connect() -> None:
        sock = socket.create_connection((host, port), timeout=5)
        sock.setblocking(False)
        conn = _Conn(sock, payload, time.monotonic())
        conns.append(conn)
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    try:
        for _ in range(connections):
            connect()
        deadline = started + timeout
        open_ = connections
        while open_ and time.monotonic() < deadline:
            now = time.monotonic()
            for key, events in selector.select(timeout=0.1):
                conn = key.data
                if events & selectors.EVENT_READ:
                    _read(conn, now, selector)
                if not conn.closed and events & selectors.EVENT_WRITE:
                    _write(conn, now, selector, bytes_per_second)
            open_ = sum(1 for c in conns if not c.closed)
            while (
                open_ < connections
                and now < started + sustain
                and len(conns) < max_connections_total
            ):
                connect()
                open_ += 1
            if bytes_per_second is not None:
                time.sleep(min(0.05, 1 / bytes_per_second))
    finally:
        for conn in conns:
            if not conn.closed:
                selector.unregister(conn.sock)
            conn.sock.close()
        selector.close()
    return AttackResult([c.outcome for c in conns], time.monotonic() - started)


def _read(conn: _Conn, now: float, selector: selectors.BaseSelector) -> None:
    try:
        data = conn.sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        data = b""
    if data:
        conn.received += data
        conn.outcome.status = _status(conn.received)
        return
    _closed(conn, now, selector)


def _write(conn: _Conn, now: float, selector: selectors.BaseSelector, rate: float | None) -> None:
    if conn.sent >= len(conn.payload):
        selector.modify(conn.sock, selectors.EVENT_READ, conn)
        return
    allowed = len(conn.payload) if rate is None else int((now - conn.opened) * rate) + 1
    chunk = conn.payload[conn.sent : min(allowed, len(conn.payload))]
    if not chunk:
        return
    try:
        conn.sent += conn.sock.send(chunk)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        _closed(conn, now, selector)


def _closed(conn: _Conn, now: float, selector: selectors.BaseSelector) -> None:
    # What nsprov wrote before closing may still be readable after a failed send.
    with contextlib.suppress(OSError):
        conn.sock.setblocking(False)
        conn.received += conn.sock.recv(65536)
        conn.outcome.status = _status(conn.received)
    conn.outcome.cut_after = now - conn.opened
    conn.closed = True
    selector.unregister(conn.sock)


def unfinished_head(size: int) -> bytes:
    """A request head of about ``size`` bytes of header lines, without the blank line
    that would end it."""
    line = b"X-Fill: " + b"a" * 1014 + b"\r\n"
    return b"GET /api/v1/namespaces HTTP/1.1\r\nHost: nsprov\r\n" + line * (size // len(line))


def slow_head() -> bytes:
    """A plausible head, for sending one byte a second."""
    return b"GET /api/v1/namespaces HTTP/1.1\r\nHost: nsprov\r\nUser-Agent: slow\r\n" + (
        b"X-Slow: " + b"s" * 200 + b"\r\n"
    )


def big_tokens(
    url: str, *, requests: int, token_bytes: int, concurrency: int = 16, timeout: float = 120
) -> AttackResult:
    """``requests`` complete GETs whose bearer token is ``token_bytes`` long, ``concurrency``
    at a time, each on its own connection (a refused one is closed by nsprov)."""
    host, port = _address(url)
    token = "e" * token_bytes
    request = (
        f"GET /api/v1/namespaces HTTP/1.1\r\nHost: nsprov\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    started = time.monotonic()
    deadline = started + timeout

    def one(_: int) -> Outcome:
        outcome = Outcome()
        if time.monotonic() > deadline:
            return outcome
        opened = time.monotonic()
        received = b""
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=10) as s:
            with contextlib.suppress(OSError):
                s.sendall(request)
            while chunk := s.recv(65536):
                received += chunk
        outcome.status = _status(received)
        outcome.cut_after = time.monotonic() - opened
        return outcome

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(one, range(requests)))
    return AttackResult(outcomes, time.monotonic() - started)


class Legitimate:
    """A client that keeps asking ``GET /api/v1/namespaces`` (with a valid token) on a fresh
    connection each time, recording latency and status, until stopped.

    In a process of its own: in the attacker's, it would wait for the interpreter lock
    behind the attack's loop at every step of a request, and report the attacker's
    contention as nsprov's latency.
    """

    def __init__(self, url: str, headers: dict[str, str], interval: float = 0.05) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results: multiprocessing.Queue[Any] = context.Queue()
        self._process = context.Process(
            target=_legitimate_loop,
            args=(url, headers, interval, self._stop, self._results),
            daemon=True,
        )
        self.latencies: list[float] = []
        self.statuses: Counter[int | str] = Counter()

    def __enter__(self) -> Legitimate:
        self._process.start()
        assert self._results.get(timeout=60) == "ready"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        latencies, statuses = self._results.get(timeout=60)
        self._process.join(timeout=30)
        self.latencies = latencies
        self.statuses = Counter(statuses)

    def p95(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else 0


def _legitimate_loop(
    url: str, headers: dict[str, str], interval: float, stop: Any, results: Any
) -> None:
    latencies: list[float] = []
    statuses: Counter[int | str] = Counter()
    results.put("ready")
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with httpx.Client(base_url=url, timeout=10) as http:
                status: int | str = http.get("/api/v1/namespaces", headers=headers).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        latencies.append(time.perf_counter() - started)
        statuses[status] += 1
        stop.wait(interval)
    results.put((latencies, dict(statuses)))


class PeakRss:
    """The highest RSS of a process, sampled every ``interval`` seconds while in use."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.before = rss_mib(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.after = rss_mib(self.pid)
        self.peak = max(self.peak, self.after)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, rss_mib(self.pid))

    @property
    def growth(self) -> float:
        return self.peak - self.before


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


Attack = Callable[[], AttackResult]
