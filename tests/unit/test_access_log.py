"""The public app's access log (api.RequestContext) and in-flight limit (api.InFlightLimit)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware

from nsprov.api import routes as api
from nsprov.core.errors import NotFound
from nsprov.identity.auth import TokenStore
from nsprov.identity.authenticator import Authenticator, Caller
from nsprov.provision.metrics import Metrics

TOKEN = "s3cret-token-value"


class _Provisioner:
    """Answers GET of one namespace: not found, or after ``release`` when one is given."""

    def __init__(self, release: asyncio.Event | None = None) -> None:
        self.release = release

    async def get(self, owner: str, name: str, tenant: str | None = None) -> Any:
        if self.release is not None:
            await self.release.wait()
        raise NotFound(f"no namespace {name}")


def _app(
    *, access_log: bool = True, limit: int = 10, provisioner: Any = None, owner: str | None = None
) -> Starlette:
    metrics = Metrics()
    app = Starlette(
        routes=api.routes,
        exception_handlers=api.exception_handlers,
        middleware=[
            Middleware(api.RequestContext, metrics=metrics, access_log=access_log),
            Middleware(api.InFlightLimit, limit=limit, metrics=metrics),
        ],
    )
    authenticator = Authenticator(TokenStore({"alice": TOKEN}))
    if owner is not None:

        async def authenticate(header: str | None) -> Caller:
            return Caller(owner, "web")

        authenticator.authenticate = authenticate  # type: ignore[method-assign]
    app.state.api = api.Api(authenticator=authenticator, provisioner=provisioner or _Provisioner())
    return app


async def _get(app: Starlette, path: str, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://nsprov") as http:
        return await http.get(path, headers=headers)


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nsprov.access"]


def test_one_line_per_request_with_the_route_template_never_the_path_or_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nsprov.access")
    response = asyncio.run(_get(_app(), "/api/v1/namespaces/np-private?ttl=secret-query"))
    assert response.status_code == 404
    [line] = _lines(caplog)
    method, route, status, duration, owner, tenant = line.split(" ")
    assert (method, route, status) == ("GET", "/api/v1/namespaces/{name}", "404")
    assert duration.endswith("ms")
    assert float(duration[:-2]) >= 0
    assert (owner, tenant) == ("owner=alice", "tenant=-")
    for secret in (TOKEN, "np-private", "secret-query"):
        assert secret not in caplog.text


def test_the_line_carries_the_request_id_of_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    from nsprov.core.requestid import RequestIdFilter

    caplog.set_level(logging.INFO, logger="nsprov.access")
    caplog.handler.addFilter(RequestIdFilter())
    response = asyncio.run(_get(_app(), "/api/v1/namespaces/x"))
    [record] = [r for r in caplog.records if r.name == "nsprov.access"]
    assert record.request_id == response.headers["x-request-id"]  # type: ignore[attr-defined]


def test_a_refused_token_is_logged_without_an_owner(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nsprov.access")
    assert asyncio.run(_get(_app(), "/api/v1/namespaces", token="wrong")).status_code == 401
    assert asyncio.run(_get(_app(), "/no/such/route/with-secret")).status_code == 404
    assert _lines(caplog)[0].startswith("GET /api/v1/namespaces 401 ")
    assert _lines(caplog)[0].endswith(" owner=- tenant=-")
    assert _lines(caplog)[1].startswith("GET unmatched 404 ")


def test_an_owner_from_claims_cannot_forge_a_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nsprov.access")
    forged = "x\nGET /api/v1/namespaces 201 1.0ms owner=admin"
    asyncio.run(_get(_app(owner=forged), "/api/v1/namespaces/x"))
    [line] = _lines(caplog)
    assert "\n" not in line
    assert 'owner="x\\nGET' in line
    assert line.endswith(" tenant=web")


def test_access_log_false_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nsprov.access")
    asyncio.run(_get(_app(access_log=False), "/api/v1/namespaces/x"))
    assert _lines(caplog) == []


def test_requests_above_the_in_flight_limit_get_503_with_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nsprov.access")

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        release = asyncio.Event()
        app = _app(limit=2, provisioner=_Provisioner(release))
        held = [asyncio.create_task(_get(app, f"/api/v1/namespaces/n{i}")) for i in range(2)]
        await asyncio.sleep(0.1)  # both are inside the handler, waiting for release
        refused = await _get(app, "/api/v1/namespaces/n3")
        release.set()
        return list(await asyncio.gather(*held)), refused

    held, refused = asyncio.run(scenario())
    assert [r.status_code for r in held] == [404, 404]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    body = refused.json()
    assert body["status"] == 503
    assert "(2)" in body["detail"]
    assert body["requestId"] == refused.headers["x-request-id"]
    assert any(line.startswith("GET /api/v1/namespaces/{name} 503 ") for line in _lines(caplog))
