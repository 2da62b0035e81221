"""--log-format: text lines as they always were, or one JSON object per line (cli.log_formatter)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from nsprov import cli
from nsprov.control.controller import Controller
from nsprov.core.kube import Kube
from nsprov.core.requestid import RequestIdFilter
from nsprov.provision import bundle
from nsprov.provision.metrics import Metrics
from tests.unit.test_access_log import _app, _get

_TEXT_ACCESS_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO nsprov\.access \[(?P<rid>[0-9a-f]{16})\] "
    r"GET /api/v1/namespaces/\{name\} 404 \d+\.\dms owner=alice tenant=-"
)


@pytest.fixture
def logged(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """What the nsprov loggers write through a handler made as ``serve`` makes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(cli.log_formatter(request.param))
    logger = logging.getLogger("nsprov")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("logged", ["text"], indirect=True)
def test_text_access_line_is_unchanged(logged: io.StringIO) -> None:
    response = asyncio.run(_get(_app(), "/api/v1/namespaces/np-x?ttl=q"))
    [line] = _lines(logged)
    match = _TEXT_ACCESS_LINE.fullmatch(line)
    assert match, line
    assert match["rid"] == response.headers["x-request-id"]


@pytest.mark.parametrize("logged", ["json"], indirect=True)
def test_json_access_line_is_one_object_with_the_fields_of_the_line(logged: io.StringIO) -> None:
    response = asyncio.run(_get(_app(), "/api/v1/namespaces/np-x?ttl=q"))
    [line] = _lines(logged)
    entry: dict[str, Any] = json.loads(line)
    time = datetime.fromisoformat(entry.pop("time"))
    assert time.utcoffset() == timedelta(0)  # RFC 3339 in UTC
    assert abs(datetime.now(UTC) - time) < timedelta(minutes=1)
    duration = entry.pop("duration_ms")
    assert isinstance(duration, float)
    assert duration >= 0
    message = entry.pop("message")
    assert message == f"GET /api/v1/namespaces/{{name}} 404 {duration:.1f}ms owner=alice tenant=-"
    assert entry == {
        "level": "INFO",
        "logger": "nsprov.access",
        "request_id": response.headers["x-request-id"],
        "method": "GET",
        "route": "/api/v1/namespaces/{name}",
        "status": 404,
        "owner": "alice",
        "tenant": None,
    }


@pytest.mark.parametrize("logged", ["json"], indirect=True)
def test_json_owner_from_claims_stays_in_its_field(logged: io.StringIO) -> None:
    forged = 'x\n2026-01-01 INFO nsprov.access [0] GET / 200 owner=admin "'
    asyncio.run(_get(_app(owner=forged), "/api/v1/namespaces/np-x"))
    [line] = _lines(logged)  # the newline did not start a second line
    assert json.loads(line)["owner"] == forged


@pytest.mark.parametrize("logged", ["json"], indirect=True)
def test_json_line_outside_a_request_has_the_placeholder_id_and_the_traceback(
    logged: io.StringIO,
) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("nsprov.controller").exception("reconcile of %s failed", "np-y")
    [line] = _lines(logged)
    entry = json.loads(line)
    assert (entry["level"], entry["logger"]) == ("ERROR", "nsprov.controller")
    assert (entry["message"], entry["request_id"]) == ("reconcile of np-y failed", "-")
    assert "RuntimeError: boom" in entry["exc_info"]


def test_log_format_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("NSPROV_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NSPROV_TOKEN", "t" * 20)
    assert cli.settings_from_argv([]).log_format == "text"
    monkeypatch.setenv("NSPROV_LOG_FORMAT", "JSON")
    assert cli.settings_from_argv([]).log_format == "json"
    assert cli.settings_from_argv(["--log-format=text"]).log_format == "text"


def test_an_unknown_log_format_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in list(os.environ):
        if key.startswith("NSPROV_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NSPROV_TOKEN", "t" * 20)
    assert cli.main(["serve", "--log-format=xml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("nsprov: --log-format"), err


class _DeletingKube:
    """Accepts every delete: what the controller's expiry needs of Kubernetes."""

    def delete(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize("logged", ["json"], indirect=True)
def test_json_expiry_line_has_the_namespace_owner_and_lag_as_fields(logged: io.StringIO) -> None:
    now = 1_800_000_000.0
    controller = Controller(
        cast(Kube, _DeletingKube()),
        selector=bundle.Selector.parse("a=b"),
        cluster_role="grant",
        metrics=Metrics(),
        resync_seconds=3600,
        clock=lambda: now,
    )
    metadata = {
        "name": "np-old",
        "uid": "u-1",
        "resourceVersion": "7",
        "annotations": {bundle.OWNER_ANNOTATION: "alice"},
    }
    controller._expire({"metadata": metadata}, expires_at=int(now) - 2, now=now)
    [entry] = [json.loads(line) for line in _lines(logged)]
    assert entry["message"] == (
        "deleted namespace=np-old owner=alice reason=expired expires_at=1799999998 "
        "lag_seconds=2.000"
    )
    fields = {k: entry[k] for k in ("event", "namespace", "owner", "reason", "expires_at")}
    assert fields == {
        "event": "deleted",
        "namespace": "np-old",
        "owner": "alice",
        "reason": "expired",
        "expires_at": 1799999998,
    }
    assert entry["lag_seconds"] == 2.0
