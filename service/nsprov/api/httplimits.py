"""What one connection may cost nsprov, enforced in uvicorn's h11 protocol before the app runs.

uvicorn bounds the incomplete request head (h11's ``max_incomplete_event_size``)
and the idle time between requests, and nothing else: a connection that never
sends a byte, or sends one a second, or sends a head just under the limit and
then waits, is kept for good, and a complete head above the limit (one that
arrives in a single read) is handed to the app. Every such connection holds
memory, so a stranger could grow nsprov by opening many. uvicorn has no hook
for these, so ``LimitedH11Protocol`` subclasses its ``H11Protocol`` (the HTTP
parsing stays h11's) and adds:

- a read deadline: a request's head and body must arrive within
  ``read_timeout`` of its first byte (of the accept, for the first request);
  then the client gets a 408 and the connection is closed;
- a head limit on complete heads too, not only on incomplete ones (431);
- a body limit, by Content-Length and by the bytes that arrive (413);
- a cap on open connections per listener, which bounds what all of them together
  can hold (each at most one head). At the cap a new connection does not simply get
  refused, or whoever holds the cap's worth of slow connections locks every client
  (and the kubelet's probes) out: the connection that has waited longest for a
  request head (idle between requests, or sending one slowly) is closed to make
  room. A connection whose request the app is handling is never the one closed.
  A legitimate client sends its head at once, so it is the newest waiter, not the
  oldest; an attacker's connections evict each other.

These answers are written by the protocol, not the app: the request never
reaches a handler, so it has no request id and no access-log line (an attacker
would otherwise choose how much nsprov writes). Each is counted instead, by
reason, in ``nsprov_http_connections_cut_total``.

uvicorn chooses httptools over h11 when it is installed; cli.py names this
class as the protocol, so the limits hold whatever else is installed. It leans
on a few of H11Protocol's attributes (``conn``, ``cycle``, ``send_400_response``);
tests/unit/test_httplimits.py runs it against the installed uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import h11
from prometheus_client import Counter
from uvicorn.protocols.http.h11_impl import H11Protocol

PROBLEM = b"application/problem+json"

HEAD_TIMEOUT = "head_timeout"
"""The head did not arrive in time (or nothing did, after the accept)."""
BODY_TIMEOUT = "body_timeout"
HEAD_TOO_LARGE = "head_too_large"
BODY_TOO_LARGE = "body_too_large"
MALFORMED = "malformed"
TOO_MANY_CONNECTIONS = "too_many_connections"
"""At the cap with no connection waiting for a head: the new one is closed."""
EVICTED = "evicted"
"""At the cap: the connection that waited longest for a head was closed for a new one."""


@dataclass(frozen=True)
class HttpLimits:
    """The bounds on one listener's connections (settings.py declares their flags)."""

    max_head_bytes: int = 16 * 1024
    """Request line and header fields together; a bearer token above this gets a 431."""
    max_body_bytes: int = 64 * 1024
    """nsprov's routes read no body; a client that sends a large one is told so (413)."""
    read_timeout: float = 10.0
    """Seconds from a request's first byte until its head and body are all in."""
    max_connections: int = 1024
    """Open connections on the listener; above it the one longest waiting for a request
    head is closed (or, if none waits, the new one)."""


class _Refused(h11.RemoteProtocolError):
    """A request h11 parsed but nsprov will not take; carries the status that says why."""


class _LimitedConnection(h11.Connection):
    """h11's server side, also refusing what h11 accepts: a head that arrived whole but is
    above the limit, and a body above the limit. Remembers the last refusal, so that the
    answer can name it (uvicorn answers every parse error with the same 400): its status,
    not the exception, whose traceback would hold the refused bytes in a reference cycle
    until the garbage collector's next pass."""

    def __init__(self, limits: HttpLimits) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
        self.limits = limits
        self.refused_with: int | None = None
        """The status a refusal hinted at (431, 413, 400), once h11 or nsprov refused."""
        self._body_bytes = 0

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request):
                self._body_bytes = 0
                self._check_head(event)
            elif isinstance(event, h11.Data):
                self._body_bytes += len(event.data)
                if self._body_bytes > self.limits.max_body_bytes:
                    raise _Refused("body too large", error_status_hint=413)
        except h11.RemoteProtocolError as exc:
            self.refused_with = exc.error_status_hint
            raise
        return event

    def _check_head(self, request: h11.Request) -> None:
        # The bytes on the wire, up to h11's trimming of whitespace: method, target,
        # version, each "name: value" line and the CRLFs.
        size = len(request.method) + len(request.target) + 12
        size += sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items())
        if size > self.limits.max_head_bytes:
            raise _Refused("head too large", error_status_hint=431)
        # h11 has checked that Content-Length is digits, and one value.
        length = next((v for name, v in request.headers if name == b"content-length"), None)
        if length is not None and int(length) > self.limits.max_body_bytes:
            raise _Refused("body too large", error_status_hint=413)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a read deadline, head and body limits and a connection cap.

    ``limits`` and ``cuts`` are set on a subclass per listener (``protocol_for``):
    uvicorn makes the protocol itself, with arguments of its own.
    """

    limits: ClassVar[HttpLimits] = HttpLimits()
    cuts: ClassVar[Counter | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn: _LimitedConnection = _LimitedConnection(self.limits)
        self._deadline: asyncio.TimerHandle | None = None
        self._received = False
        """Bytes of a request have arrived since the last one was read whole."""
        self._waiting_since = time.monotonic()
        """Since when this connection waits for a request head (meaningful while idle)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._evict_one():
            self._count(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self._arm()

    def _evict_one(self) -> bool:
        """Close the other connection that has waited longest for a request head; False when
        every other one has a request in the app (then the cap holds against this one)."""
        waiting = [
            other
            for other in self.connections
            if other is not self and isinstance(other, LimitedH11Protocol) and other._idle()
        ]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda other: other._waiting_since)
        oldest._count(EVICTED)
        oldest._disarm()
        oldest.transport.close()
        # connection_lost (which leaves the set) runs on the loop's next turn: leave it
        # now, so a burst of new connections does not pick the same one again.
        self.connections.discard(oldest)
        return True

    def _idle(self) -> bool:
        """Waiting for a request head: none in the app, and this one not yet all in."""
        cycle = self.cycle
        in_app = cycle is not None and not cycle.response_complete
        return not in_app and self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._received = True
        self._arm()
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            # DONE (or closing): this request's head and body are all in; once answered,
            # the connection waits for the next head from now on.
            self._disarm()
            self._received = False
            self._waiting_since = time.monotonic()

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this for every RemoteProtocolError; answer with what it was."""
        status = self.conn.refused_with or 400
        if status == 431:
            self._count(HEAD_TOO_LARGE)
            detail = (
                f"the request head (request line and header fields) is larger than "
                f"{self.limits.max_head_bytes} bytes; a bearer token must be well below that"
            )
        elif status == 413:
            self._count(BODY_TOO_LARGE)
            detail = f"the request body is larger than {self.limits.max_body_bytes} bytes"
        else:
            status = 400
            self._count(MALFORMED)
            detail = "malformed HTTP/1.1 request"
        self._answer_and_close(status, detail)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.limits.read_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        reading_head = self.conn.their_state is h11.IDLE
        self._count(HEAD_TIMEOUT if reading_head else BODY_TIMEOUT)
        if not self._received:
            # Nothing of a request came: there is nobody to answer.
            self.transport.close()
            return
        what = "head" if reading_head else "body"
        self._answer_and_close(
            408,
            f"the request {what} did not arrive within {self.limits.read_timeout:g}s "
            "(head and body must arrive within that time of the request's first byte)",
        )

    def _answer_and_close(self, status: int, detail: str) -> None:
        """A problem+json answer (unless the app's has begun), then close the connection.

        A running handler's later answer is dropped (the cycle counts as disconnected),
        as it would be had the client gone.
        """
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            if cycle is not None and not cycle.response_started:
                cycle.disconnected = True
            body = _problem(status, detail)
            headers = [
                (b"content-type", PROBLEM),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            try:
                out = self.conn.send(
                    h11.Response(
                        status_code=status,
                        headers=headers,
                        reason=HTTPStatus(status).phrase.encode(),
                    )
                )
                out = (out or b"") + (self.conn.send(h11.Data(data=body)) or b"")
                out += self.conn.send(h11.EndOfMessage()) or b""
            except h11.LocalProtocolError:
                out = b""  # h11 cannot answer in this state: only close
            self.transport.write(out)
        self.transport.close()
        # Drop what h11 buffered (up to one whole read, 256 KiB) now: asyncio calls
        # connection_lost only on its next loop iteration, after every other socket
        # readable in this one, and 800 refused heads are then held at once (RSS peaked
        # 56 to 71 MiB higher without this, 4 MiB with it). uvicorn only sends
        # ConnectionClosed on the fresh connection from now on.
        self.conn = _LimitedConnection(self.limits)

    def _count(self, reason: str) -> None:
        if self.cuts is not None:
            self.cuts.labels(reason=reason).inc()


def _problem(status: int, detail: str) -> bytes:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return json.dumps(body).encode()


class _CountedInstead(logging.Filter):
    """Drops uvicorn's warning for each malformed or refused request: nsprov counts those
    (``cuts``), and a stranger must not choose how many lines nsprov writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Invalid HTTP request received."


_COUNTED_INSTEAD = _CountedInstead()


def protocol_for(limits: HttpLimits, cuts: Counter | None) -> type[LimitedH11Protocol]:
    """The protocol class uvicorn is given for one listener."""
    logging.getLogger("uvicorn.error").addFilter(_COUNTED_INSTEAD)

    class Configured(LimitedH11Protocol):
        pass

    Configured.limits = limits
    Configured.cuts = cuts
    return Configured
