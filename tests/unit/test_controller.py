"""The controller's worker discipline, without a cluster: nothing here talks to Kubernetes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest

from nsprov.control.controller import Controller
from nsprov.core.kube import Kube
from nsprov.provision import bundle
from nsprov.provision.metrics import Metrics
from tests.support import wait_until


@pytest.fixture
def controller() -> Iterator[Controller]:
    made = Controller(
        cast(Kube, None),  # the informers are never started: no call reaches Kubernetes
        selector=bundle.Selector.parse("a=b"),
        cluster_role="grant",
        metrics=Metrics(),
        resync_seconds=3600,
    )
    yield made
    for informer in made.informers:
        informer.synced.set()  # lets workers still waiting for the caches see the shutdown
    made.stop()


def _record_reconciles(
    controller: Controller, monkeypatch: pytest.MonkeyPatch, block: threading.Event | None = None
) -> list[str]:
    seen: list[str] = []

    def reconcile(name: str) -> None:
        seen.append(f"start {name}")
        if block is not None:
            block.wait(10)
        seen.append(f"done {name}")

    monkeypatch.setattr(controller, "reconcile", reconcile)
    return seen


def test_keys_queued_before_the_caches_sync_are_reconciled_after(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _record_reconciles(controller, monkeypatch)
    controller.start_reconciling()
    controller.queue.add("np-early")
    controller.namespaces.synced.set()  # one cache synced, the others not yet
    # A negative: give the workers a window in which, before the fix, they took the key.
    threading.Event().wait(0.3)
    assert seen == []
    assert len(controller.queue) == 1, "the key must wait in the queue, not be dropped"
    for informer in controller.informers:
        informer.synced.set()
    wait_until(lambda: seen == ["start np-early", "done np-early"], timeout=5,
               message="reconciled once synced")  # fmt: skip


def test_a_new_leader_works_off_overdue_expiries_longest_overdue_first(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = 1_800_000_000
    monkeypatch.setattr(controller, "clock", lambda: float(now))
    expiries = {"np-a": now + 60, "np-b": now - 2, "np-c": now - 9, "np-d": None, "np-e": now}
    for name, expires_at in expiries.items():
        labels = {"a": "b"} | ({} if expires_at is None else
                               {bundle.EXPIRES_AT_LABEL: str(expires_at)})  # fmt: skip
        controller.namespaces._store[("", name)] = {"metadata": {"name": name, "labels": labels}}
    seen = _record_reconciles(controller, monkeypatch)
    controller.workers = 1  # one worker: the order taken is the order queued
    controller.start_reconciling()
    for informer in controller.informers:
        informer.synced.set()
    wait_until(lambda: len(seen) == 10, timeout=5, message="every namespace reconciled")
    started = [line.split()[1] for line in seen if line.startswith("start")]
    assert started[:3] == ["np-c", "np-b", "np-e"], started
    assert sorted(started[3:]) == ["np-a", "np-d"]


def test_stepping_down_waits_for_reconciles_in_flight(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = threading.Event()
    seen = _record_reconciles(controller, monkeypatch, block)
    for informer in controller.informers:
        informer.synced.set()
    controller.start_reconciling()
    controller.queue.add("np-busy")
    wait_until(lambda: seen == ["start np-busy"], timeout=5, message="reconcile started")

    stepped_down = threading.Event()

    def step_down() -> None:
        controller.stop_reconciling()
        seen.append("stepped down")
        stepped_down.set()

    thread = threading.Thread(target=step_down)
    thread.start()
    assert not stepped_down.wait(0.3), "stepped down while a reconcile was still writing"
    controller.queue.add("np-later")  # arrives while stepping down: must not start
    block.set()
    thread.join(5)
    assert seen[:3] == ["start np-busy", "done np-busy", "stepped down"]
    wait_until(lambda: len(controller.queue) == 0, timeout=5, message="np-later taken")
    assert "start np-later" not in seen


def test_failed_reconciles_come_back_spread_out(controller: Controller) -> None:
    now = controller.clock()
    for i in range(300):
        controller._retry_later(f"np-{i}", RuntimeError("API server away"))
    deadlines = cast(dict[str, float], cast(Any, controller.queue)._deadline_of)
    delays = sorted(when - now for when in deadlines.values())
    assert len(delays) == 300
    assert len({round(d, 3) for d in delays[:100]}) > 50, "first retries in lock-step"
    # Beyond the burst of 100 the bucket lets 10 a second through: the 300th waits ~20s.
    assert delays[-1] >= 19


def test_the_namespaced_caches_keep_what_the_namespace_cache_holds(controller: Controller) -> None:
    namespace = {"metadata": {"name": "np-a", "uid": "u"}}
    assert not controller.scope.holds("np-a")
    controller._on_namespace("ADDED", namespace)
    assert controller.scope.holds("np-a")
    controller._on_namespace("DELETED", namespace)
    assert not controller.scope.holds("np-a")
    assert "roles" not in {informer.resource.name for informer in controller.informers}
    for informer in controller.informers[1:]:
        assert informer._scope is controller.scope
        assert informer._after is controller.namespaces.synced
