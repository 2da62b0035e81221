"""The HTTP contract of nsprov v1: routes, request parsing, responses and problem details.

Every error a client can see is an RFC 9457 problem (application/problem+json)
carrying the request id that the log lines of the same request carry, so an
admin can find the Kubernetes-side reason a client was only told about briefly.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nsprov.api import openapi
from nsprov.api.provisioner import Provisioned, Provisioner
from nsprov.core import paging, requestid
from nsprov.core.errors import BadRequest, ClusterUnavailable, NsprovError, Unauthorized
from nsprov.core.ttl import parse_ttl
from nsprov.identity.authenticator import Authenticator, Caller
from nsprov.provision import bundle, kubeconfig
from nsprov.provision.metrics import Metrics

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.api")
access_log = logging.getLogger("nsprov.access")

PROBLEM = "application/problem+json"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The methods that become a metric label as they are; any other is counted as "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class Api:
    """What the routes need, held on ``app.state.api``."""

    authenticator: Authenticator
    provisioner: Provisioner
    min_ttl: float = 0.0
    """--min-ttl; the default ttl and the maximum are the caller's tenant's (its Profile)."""


def _api(request: Request) -> Api:
    api: Api = request.app.state.api
    return api


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


def problem(
    status: int, title: str, detail: str, rid: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "requestId": rid,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


# ---- parsing ------------------------------------------------------------------------------


async def _caller(request: Request) -> Caller:
    caller = await _api(request).authenticator.authenticate(request.headers.get("authorization"))
    # For the access log line, which RequestContext writes once the answer is sent.
    request.state.owner, request.state.tenant = caller.owner, caller.tenant
    return caller


def _ttl(request: Request, caller: Caller) -> float:
    return parse_ttl(
        request.query_params.get("ttl"),
        default=caller.profile.ttl,
        maximum=caller.profile.max_ttl,
        minimum=_api(request).min_ttl,
    )


def _server(request: Request) -> str | None:
    raw = request.query_params.get("server")
    if raw is None or raw == "":
        return None
    if openapi.SERVER_PATTERN.fullmatch(raw):
        return raw
    if any(mark in raw for mark in "@?#"):
        raise BadRequest(f"server {raw!r} must not carry credentials, a query or a fragment")
    raise BadRequest(
        f"server {raw!r} must be an absolute http(s) URL: a host name or [IPv6 address], "
        "an optional port and path, no spaces"
    )


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    return _checked_idempotency_key("Idempotency-Key", key)


def _idempotency_key_query(request: Request) -> str:
    """``?idempotencyKey=``: the same rules as the header it looks up."""
    return _checked_idempotency_key("idempotencyKey", request.query_params["idempotencyKey"])


def _checked_idempotency_key(what: str, key: str) -> str:
    if len(key) > openapi.MAX_IDEMPOTENCY_KEY or not openapi.IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise BadRequest(
            f"{what} must be 1 to {openapi.MAX_IDEMPOTENCY_KEY} printable ASCII characters, "
            "not all of them spaces"
        )
    return key


def _key(request: Request) -> str | None:
    """``?key=``: a preview key, the name of a namespace that lives across requests."""
    key = request.query_params.get("key")
    if key is None:
        return None
    if not bundle.KEY_PATTERN.fullmatch(key):
        raise BadRequest(
            "key must be 1 to 63 letters, digits, '.', '_' or '-', beginning and ending "
            "with a letter or digit (e.g. pr-42)"
        )
    return key


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "yaml" not in accept


# ---- responses ----------------------------------------------------------------------------


_NAMESPACE_PATH = "/api/v1/namespaces/{name}"


def _location(request: Request, name: str) -> str:
    """What ``request.url_for("namespace", name=name).path`` says, without its three URL
    builds and parses (14 µs a POST): a namespace's name is a DNS label, as it is in a path,
    and nsprov mounts nothing (the app's root path is the server's, "" under uvicorn)."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/") + _NAMESPACE_PATH.format(name=name)


def _kubeconfig_response(request: Request, result: Provisioned, status: int) -> Response:
    headers = {
        "Location": _location(request, result.name),
        "X-Namespace": result.name,
        # When the kubeconfig stops working; the namespace may live longer (next header)
        # when the API server caps token lifetimes.
        "X-Expires-At": result.expires_at_iso,
        "X-Namespace-Expires-At": result.namespace_expires_at_iso,
        # A kubeconfig holds a credential.
        "Cache-Control": "no-store",
    }
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    if _wants_json(request):
        body = {
            "namespace": result.name,
            "expiresAt": result.expires_at_iso,
            "namespaceExpiresAt": result.namespace_expires_at_iso,
            "kubeconfig": kubeconfig.render(result.kubeconfig),
        }
        return JSONResponse(body, status_code=status, headers=headers)
    return Response(
        kubeconfig.render(result.kubeconfig),
        status_code=status,
        media_type="application/yaml",
        headers=headers,
    )


# ---- routes -------------------------------------------------------------------------------


async def create_namespace(request: Request) -> Response:
    caller = await _caller(request)
    ttl, server, key = _ttl(request, caller), _server(request), _idempotency_key(request)
    preview_key = _key(request)
    if preview_key is not None:
        if key is not None:
            raise BadRequest(
                "send either ?key= or Idempotency-Key: a keyed create may be repeated as it is"
            )
        result, new = await _api(request).provisioner.provision_keyed(
            caller.owner,
            preview_key,
            ttl,
            caller.profile,
            server=server,
            requested_by=caller.requested_by_json(),
        )
        return _kubeconfig_response(request, result, 201 if new else 200)
    result = await _api(request).provisioner.provision(
        caller.owner,
        ttl,
        caller.profile,
        server=server,
        idempotency_key=key,
        requested_by=caller.requested_by_json(),
    )
    return _kubeconfig_response(request, result, 201)


async def list_namespaces(request: Request) -> Response:
    if "idempotencyKey" in request.query_params:
        return await find_by_idempotency_key(request)
    caller = await _caller(request)
    limit = paging.parse_limit(request.query_params.get("limit"))
    after = paging.decode_continue(request.query_params.get("continue"))
    infos = await _api(request).provisioner.list(caller.owner, tenant=caller.tenant)
    page = paging.page(infos, lambda info: info.name, limit, after)
    metadata: dict[str, object] = {}
    if page.continue_token is not None:
        metadata = {"continue": page.continue_token, "remainingItemCount": page.remaining}
    return JSONResponse({"items": [info.to_json() for info in page.items], "metadata": metadata})


async def find_by_idempotency_key(request: Request) -> Response:
    """GET /api/v1/namespaces?idempotencyKey=: what a POST with that key made, if anything."""
    caller = await _caller(request)
    key = _idempotency_key_query(request)
    # The answer is one page of zero or one item, but a bad limit or continue is still
    # refused: the document declares them for the whole operation, and a client that sends
    # limit=true should hear that, whichever form of the list it asked for.
    paging.parse_limit(request.query_params.get("limit"))
    paging.decode_continue(request.query_params.get("continue"))
    infos = await _api(request).provisioner.find_by_idempotency_key(
        caller.owner, key, tenant=caller.tenant
    )
    # The key is echoed so a client can tell this answer from the plain list an
    # older nsprov (which ignores the parameter) would send: deleting items[0] of
    # that list would delete the wrong namespace.
    return JSONResponse({"idempotencyKey": key, "items": [info.to_json() for info in infos]})


async def get_namespace(request: Request) -> Response:
    caller = await _caller(request)
    info = await _api(request).provisioner.get(
        caller.owner, request.path_params["name"], tenant=caller.tenant
    )
    return JSONResponse(info.to_json())


async def extend_namespace(request: Request) -> Response:
    caller = await _caller(request)
    # Unlike POST, a missing ttl is no default: a PATCH meant to extend a 24h namespace
    # would silently cut it to --ttl.
    if not request.query_params.get("ttl"):
        raise BadRequest("PATCH needs a ttl, the new lifetime from now (e.g. ?ttl=1h)")
    ttl, server = _ttl(request, caller), _server(request)
    result = await _api(request).provisioner.extend(
        caller.owner, request.path_params["name"], ttl, caller.profile, server=server
    )
    return _kubeconfig_response(request, result, 200)


async def delete_keyed_namespace(request: Request) -> Response:
    """DELETE /api/v1/namespaces?key=: end the caller's namespace for a preview key."""
    caller = await _caller(request)
    key = _key(request)
    if key is None:  # a collection DELETE deletes one keyed namespace, never "all"
        raise BadRequest("DELETE /api/v1/namespaces needs ?key=, the preview key")
    name = await _api(request).provisioner.delete_keyed(caller.owner, key, tenant=caller.tenant)
    return JSONResponse({"name": name, "key": key, "state": "MARKED_FOR_DELETION"}, 202)


async def delete_namespace(request: Request) -> Response:
    caller = await _caller(request)
    name = request.path_params["name"]
    await _api(request).provisioner.delete(caller.owner, name, tenant=caller.tenant)
    return JSONResponse({"name": name, "state": "MARKED_FOR_DELETION"}, status_code=202)


async def openapi_document(request: Request) -> Response:
    return JSONResponse(openapi.DOCUMENT)


Endpoint = Callable[[Request], Awaitable[Response]]


def _path(path: str, handlers: dict[str, Endpoint], name: str | None = None) -> Route:
    """One route per path, so a 405 names every method the path has in ``Allow``."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, dispatch, methods=list(handlers), name=name)


routes = [
    _path(
        "/api/v1/namespaces",
        {"POST": create_namespace, "GET": list_namespaces, "DELETE": delete_keyed_namespace},
    ),
    _path(
        _NAMESPACE_PATH,
        {"GET": get_namespace, "PATCH": extend_namespace, "DELETE": delete_namespace},
        name="namespace",
    ),
    # Aliases: drop-in for clients of the original Go provisioner.
    _path("/api/v1/namespace", {"POST": create_namespace}),
    _path("/api/v1/namespace/{name}", {"DELETE": delete_namespace}),
    _path("/openapi.json", {"GET": openapi_document}),
]


# ---- errors -------------------------------------------------------------------------------


async def on_nsprov_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NsprovError)
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="nsprov"'
    if isinstance(exc, ClusterUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    rid = request_id(request)
    if exc.status >= 500:
        log.error(
            "%s %s -> %d: %s",
            request.method,
            request.url.path,
            exc.status,
            exc.detail,
        )
    return problem(exc.status, exc.title, exc.detail, rid, headers)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = {
        404: f"no route {request.url.path}",
        405: f"method {request.method} not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error")
    return problem(exc.status_code, title, detail, request_id(request), dict(exc.headers or {}))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    # Runs outside RequestContext (in Starlette's outermost middleware): name the id here.
    rid = request_id(request)
    log.exception("request_id=%s unexpected error", rid, exc_info=exc)
    return problem(500, "Internal Server Error", f"unexpected error (request id {rid})", rid)


exception_handlers = {
    NsprovError: on_nsprov_error,
    HTTPException: on_http_exception,
    Exception: on_unexpected,
}


# ---- middleware ---------------------------------------------------------------------------


class RequestContext:
    """Pure ASGI middleware: a request id on every request, HTTP metrics by route, and the
    access log.

    The id is the client's ``X-Request-Id`` when it is a sane token, else a new one;
    it is echoed in the response headers and in every problem body.

    The access log has one line per request: method, route template (never the raw
    path or query: a path may carry anything a client typed), status, duration, and
    the owner and tenant once the token named them. Its own logger (``nsprov.access``)
    rather than uvicorn's, which logs raw paths and which uvicorn turns off for every
    server in the process when one of them is configured without it.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        token = requestid.current.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            # The method is whatever the client sent; as a label it would let anyone,
            # without a token, create series without bound.
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(elapsed)
            if self.access_log:
                owner, tenant = state.get("owner"), state.get("tenant")
                access_log.info(
                    "%s %s %d %.1fms owner=%s tenant=%s",
                    method,
                    template,
                    status,
                    elapsed * 1000,
                    _log_value(owner),
                    _log_value(tenant),
                    # The same values as fields, for --log-format=json (JSON escapes them;
                    # None is null there, as '-' is in the text).
                    extra={
                        "method": method,
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 1),
                        "owner": owner,
                        "tenant": tenant,
                    },
                )
            requestid.current.reset(token)


_PLAIN = re.compile(r"[A-Za-z0-9._:/@{}+=*-]{1,200}")


def _log_value(value: object) -> str:
    """A value as one log word: as it is when plain, else quoted with escapes (an owner
    comes from a token's claims, and a newline there must not start a forged line)."""
    if value is None:
        return "-"
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text[:200])


class InFlightLimit:
    """Pure ASGI middleware: at most ``limit`` API requests handled at once.

    Past the limit a request is answered at once, 503 + Retry-After, instead of
    queueing behind the worker threads: a client is better told to come back than
    kept waiting, and a flood then costs a short answer each, not a growing queue
    of waiting requests. Inside RequestContext, so a refusal has a request id, a
    metric and an access-log line like any answer.
    """

    RETRY_AFTER = 1

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.requests_shed.inc()
            rid = str(scope.get("state", {}).get("request_id", "-"))
            detail = (
                f"nsprov is handling as many requests as it takes at once ({self.limit}); "
                f"retry after {self.RETRY_AFTER}s"
            )
            headers = {"Retry-After": str(self.RETRY_AFTER)}
            # Routing has not run: name the route here, for the metrics and the access log.
            scope["route"] = next(
                (route for route in routes if route.matches(scope)[0] == Match.FULL), None
            )
            await problem(503, "Service Unavailable", detail, rid, headers)(scope, receive, send)
            return
        self.in_flight += 1
        self.metrics.requests_in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.requests_in_flight.dec()
