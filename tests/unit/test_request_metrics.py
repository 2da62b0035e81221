"""HTTP metrics stay bounded whatever an unauthenticated client sends."""

from __future__ import annotations

import asyncio
import random
import string

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware

from nsprov.api import routes as api
from nsprov.provision.metrics import Metrics


def _series(metrics: Metrics, name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in metrics.registry.collect()
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}_total"
    ]


def test_random_methods_do_not_create_series() -> None:
    metrics = Metrics()
    app = Starlette(
        routes=api.routes,
        exception_handlers=api.exception_handlers,
        middleware=[Middleware(api.RequestContext, metrics=metrics)],
    )
    rng = random.Random(13)  # noqa: S311 - reproducible test input, not crypto
    methods: set[str] = set()
    while len(methods) < 100:
        method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
        if method not in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}:
            methods.add(method)

    async def send_all() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://nsprov") as http:
            return [
                (await http.request(method, path)).status_code
                for method in methods
                for path in ("/api/v1/namespaces", f"/{method.lower()}")
            ]

    assert set(asyncio.run(send_all())) == {404, 405}
    series = _series(metrics, "nsprov_http_requests")
    assert {labels["method"] for labels in series} == {"other"}
    # One route, "unmatched", each with the status it answered: not one series per method.
    assert len(series) == 2, series
