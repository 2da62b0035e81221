"""A lease problem is said when it starts, once a minute while it lasts, and when it ends."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from nsprov.control import leader
from nsprov.control.leader import LeaderElector, error_reason
from nsprov.core.errors import ClusterUnavailable
from nsprov.core.kube import KubeError


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


class _LeaseServer:
    """A Lease held in memory, with the get/post/request calls the elector makes."""

    def __init__(self, spec: dict[str, Any] | None) -> None:
        self.lease = None if spec is None else {"metadata": {"resourceVersion": "1"}, "spec": spec}
        self.writes = 0

    def get(self, path: str, **kw: Any) -> dict[str, Any]:
        if self.lease is None:
            raise KubeError(404, "NotFound", "no lease")
        return {**self.lease, "spec": dict(self.lease["spec"])}

    def post(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.lease = body
        self.writes += 1
        return body

    def request(self, method: str, path: str, *, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        assert method == "PUT"
        self.lease = body
        self.writes += 1
        return body


def _candidate(server: _LeaseServer, identity: str) -> LeaderElector:
    return LeaderElector(
        kube=server,  # type: ignore[arg-type] # the three calls the elector makes
        namespace="default",
        name="nsprov-controller",
        identity=identity,
        on_started_leading=lambda: None,
        on_stopped_leading=lambda: None,
    )


def _fresh_lease(holder: str) -> dict[str, Any]:
    return {
        "holderIdentity": holder,
        "renewTime": leader._now_micro(),
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-01-01T00:00:00.000000Z",
        "leaseTransitions": 3,
    }


def test_a_lease_held_by_our_own_identity_is_taken_at_once() -> None:
    # A restarted container of the same pod: its predecessor (dead) renewed a moment ago.
    server = _LeaseServer(_fresh_lease("nsprov-7d9f-abcde"))
    assert _candidate(server, "nsprov-7d9f-abcde")._try_acquire_or_renew() is True
    assert server.writes == 1
    assert server.lease is not None
    spec = server.lease["spec"]
    assert spec["holderIdentity"] == "nsprov-7d9f-abcde"
    # Not a transition: the same holder renews.
    assert spec["leaseTransitions"] == 3
    assert spec["acquireTime"] == "2026-01-01T00:00:00.000000Z"


def test_a_lease_held_by_another_identity_is_waited_out(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(leader.time, "monotonic", clock)
    server = _LeaseServer(_fresh_lease("nsprov-7d9f-other"))
    candidate = _candidate(server, "nsprov-7d9f-abcde")
    assert candidate._try_acquire_or_renew() is False
    clock.now += 14.9  # the record has not changed, but the lease is not over yet
    assert candidate._try_acquire_or_renew() is False
    assert server.writes == 0
    clock.now += 0.2
    assert candidate._try_acquire_or_renew() is True
    assert server.lease is not None
    assert server.lease["spec"]["holderIdentity"] == "nsprov-7d9f-abcde"
    assert server.lease["spec"]["leaseTransitions"] == 4


def test_identity_is_the_pod_name_when_known() -> None:
    assert leader.identity_for("nsprov-7d9f-abcde") == "nsprov-7d9f-abcde"


@pytest.mark.parametrize("pod_name", [None, ""])
def test_identity_without_a_pod_name_is_unique_per_process(pod_name: str | None) -> None:
    first, second = leader.identity_for(pod_name), leader.identity_for(pod_name)
    assert first != second
    assert first.startswith(f"{leader.socket.gethostname()}_")
