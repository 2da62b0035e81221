"""A lease problem is said when it starts, once a minute while it lasts, and when it ends."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from nsprov import leader
from nsprov.errors import ClusterUnavailable
from nsprov.kube import KubeError
from nsprov.leader import LeaderElector, error_reason


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _elector(errors: list[str]) -> LeaderElector:
    return LeaderElector(
        kube=None,  # type: ignore[arg-type] # the calls under test make no API call
        namespace="default",
        name="nsprov-controller",
        identity="me",
        on_started_leading=lambda: None,
        on_stopped_leading=lambda: None,
        on_error=errors.append,
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (KubeError(403, "Forbidden", "no"), "forbidden"),
        (KubeError(401, "Unauthorized", "no"), "unauthorized"),
        (KubeError(404, "NotFound", "no namespace"), "not_found"),
        (KubeError(422, "Invalid", "bad"), "rejected"),
        (ClusterUnavailable("Kubernetes API unreachable"), "unavailable"),
        (RuntimeError("bug"), "unexpected"),
    ],
)
def test_error_reasons_are_a_bounded_set(error: Exception, reason: str) -> None:
    assert error_reason(error) == reason


def test_forbidden_lease_is_logged_once_a_minute_and_named(
    monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    clock = _Clock()
    monkeypatch.setattr(leader.time, "monotonic", clock)
    errors: list[str] = []
    elector = _elector(errors)
    assert elector.problem is None
    forbidden = KubeError(403, "Forbidden", 'cannot get resource "leases" in "default"')
    with caplog.at_level(logging.INFO, logger="nsprov.leader"):
        for _ in range(30):  # a minute of retries, every 2 s
            elector._failed(forbidden)
            clock.now += 2
        assert len(caplog.records) == 1
        problem = elector.problem
        assert problem is not None
        assert "lease default/nsprov-controller: forbidden for 60s" in problem
        assert "--leader-elect-namespace" in problem
        elector._failed(forbidden)
        assert len(caplog.records) == 2
        assert "(still)" in caplog.records[1].getMessage()
        elector._worked()
        assert elector.problem is None
        assert "calls work again" in caplog.records[2].getMessage()
    assert errors == ["forbidden"] * 31


def test_a_new_reason_is_said_at_once(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    monkeypatch.setattr(leader.time, "monotonic", _Clock())
    elector = _elector([])
    with caplog.at_level(logging.WARNING, logger="nsprov.leader"):
        elector._failed(KubeError(403, "Forbidden", "no"))
        elector._failed(KubeError(404, "NotFound", 'namespaces "nope" not found'))
    assert len(caplog.records) == 2
    assert "not_found" in (elector.problem or "")
