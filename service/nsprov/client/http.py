"""One HTTP exchange of the client, and the urllib Transport that makes it.

The client's retry loop (client.py) sees only this small contract: an
HttpResponse for any status, NotSent when the request never reached the
service, AnswerLost when it went out and no answer came back. The difference
decides what the log says (an answer lost may have done something; the client
names the request id it sent) and what may be retried.

urllib rather than httpx: ``nsprov run`` is on the critical path of a CI job,
and importing httpx (and building its TLS context even for a plain-http URL)
cost about 130 ms of CPU of a command that should start CMD within 200 ms,
against about 35 ms for urllib, which honours the same proxy variables
(``HTTPS_PROXY``, ``NO_PROXY``). TLS trusts the system's CAs; ``SSL_CERT_FILE``
or ``SSL_CERT_DIR`` replace them.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any

MAX_BODY_BYTES = 16 * 2**20
"""A list page of 500 namespaces is well under 1 MiB; more is not an nsprov answer."""


@dataclass(frozen=True)
class HttpRequest:
    """What one attempt sends: the whole URL (query included) and every header."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    timeout: float


@dataclass(frozen=True)
class HttpResponse:
    """A complete answer, whatever its status; header names in lower case."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class NotSent(Exception):
    """The request never reached the service: DNS, connect or the TLS handshake failed."""

    def __init__(self, reason: BaseException) -> None:
        super().__init__(str(reason))
        self.reason = reason


class AnswerLost(Exception):
    """The request went out but no complete answer came back (a timeout, a reset)."""

    def __init__(self, reason: BaseException) -> None:
        super().__init__(str(reason))
        self.reason = reason


Transport = Callable[[HttpRequest], HttpResponse]
"""One exchange: an HttpResponse for any status, NotSent or AnswerLost for no answer."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would mean a misconfigured URL: never replay the token elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def tls_context() -> ssl.SSLContext:
    """The system's trust store; SSL_CERT_FILE and SSL_CERT_DIR replace it (OpenSSL reads them),
    which is how a CI job trusts a private CA in front of nsprov."""
    return ssl.create_default_context()


class UrllibTransport:
    """The Transport of a real command: urllib with the environment's proxies, no redirects.

    The TLS context is built on the first https request only: loading a CA bundle
    costs a plain-http (loopback) call 20 ms for nothing.
    """

    def __init__(self) -> None:
        self._opener: urllib.request.OpenerDirector | None = None

    def _opener_for(self, url: str) -> urllib.request.OpenerDirector:
        if self._opener is None:
            handlers: list[urllib.request.BaseHandler] = [
                urllib.request.ProxyHandler(),
                _NoRedirects(),
            ]
            if url.startswith("https:"):
                handlers.append(urllib.request.HTTPSHandler(context=tls_context()))
            self._opener = urllib.request.build_opener(*handlers)
        return self._opener

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # service_url() admitted http(s) URLs only, so no file: or custom scheme gets here.
        outgoing = urllib.request.Request(  # noqa: S310
            request.url, method=request.method, headers=dict(request.headers)
        )
        try:
            answer = self._opener_for(request.url).open(outgoing, timeout=request.timeout)
        except urllib.error.HTTPError as exc:  # a status urllib does not call success
            answer = exc
        except urllib.error.URLError as exc:  # raised while connecting or sending
            reason = exc.reason
            raise NotSent(
                reason if isinstance(reason, BaseException) else OSError(reason)
            ) from None
        except (OSError, HTTPException) as exc:  # raised while waiting for the answer
            raise AnswerLost(exc) from None
        try:
            with answer:
                body = answer.read(MAX_BODY_BYTES)
        except (OSError, HTTPException) as exc:
            raise AnswerLost(exc) from None
        headers = {name.lower(): value for name, value in answer.headers.items()}
        return HttpResponse(int(answer.status), str(answer.reason or ""), headers, body)
