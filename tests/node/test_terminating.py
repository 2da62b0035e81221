"""Issue 18 on a real node: a Terminating namespace holds its cap slot, a stuck one is reported.

The deployed nsprov (k8s/ + the overlay, its own RBAC and admission policies) gets a
per-owner cap of 1 and ``--stuck-after=20s`` for this module, then its settings back.
Tenants cannot add finalizers to their objects (issue 18's admission side), so the
finalizer that keeps a namespace is put there the way docs/operator/controller.md tells an
operator to act in a managed namespace: break glass. Every namespace held here is released before
its test ends.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.node.conftest import Deployed, NodeCluster, internal_get, pod_ip
from tests.support import wait_until

pytestmark = pytest.mark.timeout(1200)

STUCK_AFTER = 20
NEVER = "example.com/never"
HOLDER = "held"
# The break-glass recipe (docs/operator/break-glass.md): the operator, their admin group,
# and the exempt group.
BREAK_GLASS = ("--as=operator", "--as-group=system:masters", "--as-group=nsprov:break-glass")
SETTINGS = {"NSPROV_MAX_NAMESPACES_PER_OWNER": "1", "NSPROV_STUCK_AFTER": f"{STUCK_AFTER}s"}


def _rolled_out(node: NodeCluster) -> None:
    node.kubectl("-n", "nsprov", "rollout", "status", "deployment/nsprov", "--timeout=180s",
                 timeout=200)  # fmt: skip


def _managed(node: NodeCluster) -> list[str]:
    """The managed namespaces of this module's owner (the deployed token's, node-test):
    the cap is per owner, so other tests' tenants (their own tokens) do not matter."""
    listed = node.json("get", "namespaces", "-l",
                       "controller.observatorium.io=namespace-provisioner")  # fmt: skip
    return [
        ns["metadata"]["name"]
        for ns in listed["items"]
        if (ns["metadata"].get("annotations") or {}).get("nsprov.io/owner") == "node-test"
    ]


@pytest.fixture(scope="module")
def capped(node: NodeCluster, deployed: Deployed) -> Iterator[Deployed]:
    """The deployed nsprov with this module's settings, and no managed namespace left over
    (one still being deleted would hold the owner's one slot)."""
    env = [f"{key}={value}" for key, value in SETTINGS.items()]
    node.kubectl("-n", "nsprov", "set", "env", "deployment/nsprov", *env)
    try:
        _rolled_out(node)
        wait_until(lambda: not _managed(node), timeout=180, interval=1,
                   message="no namespace of node-test left from earlier tests")  # fmt: skip
        yield deployed
    finally:
        node.kubectl("-n", "nsprov", "set", "env", "deployment/nsprov",
                     *(f"{key}-" for key in SETTINGS))  # fmt: skip
        _rolled_out(node)


def _pods(node: NodeCluster) -> list[Any]:
    listed = node.json("-n", "nsprov", "get", "pods", "-l", "app.kubernetes.io/name=nsprov")
    return [
        pod
        for pod in listed["items"]
        if not pod["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions") or []
        )
    ]


def _api(node: NodeCluster) -> str:
    ready = _pods(node)
    assert ready, "no Ready nsprov pod"
    return f"http://{pod_ip(ready[0])}:8080"


def _auth(deployed: Deployed) -> dict[str, str]:
    return {"Authorization": f"Bearer {deployed.token}"}


def _create(node: NodeCluster, deployed: Deployed) -> httpx.Response:
    return httpx.post(f"{_api(node)}/api/v1/namespaces", params={"ttl": "10m"},
                      headers=_auth(deployed), timeout=60)  # fmt: skip


def _delete(node: NodeCluster, deployed: Deployed, name: str) -> None:
    deleted = httpx.delete(f"{_api(node)}/api/v1/namespaces/{name}", headers=_auth(deployed),
                           timeout=60)  # fmt: skip
    assert deleted.status_code == 202, deleted.text


def _gone(node: NodeCluster, name: str) -> bool:
    return node.kubectl("get", "namespace", name, "--ignore-not-found", "-o", "name") == ""


@contextlib.contextmanager
def _held(node: NodeCluster, name: str, tmp_path: Path) -> Iterator[None]:
    """A ConfigMap with a finalizer nobody removes in ``name``, put there (and taken away at
    the end) by break glass."""
    manifest = tmp_path / f"{name}-held.json"
    manifest.write_text(json.dumps({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": HOLDER, "namespace": name, "finalizers": [NEVER]},
        "data": {"k": "v"},
    }))  # fmt: skip
    node.kubectl(*BREAK_GLASS, "create", "-f", str(manifest))
    try:
        yield
    finally:
        node.kubectl(*BREAK_GLASS, "-n", name, "patch", "configmap", HOLDER, "--type=merge",
                     "-p", '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip
        wait_until(lambda: _gone(node, name), timeout=120, interval=0.5,
                   message=f"{name} gone once released")  # fmt: skip


def test_a_terminating_namespace_holds_its_cap_until_it_is_gone(
    node: NodeCluster, capped: Deployed, tmp_path: Path
) -> None:
    created = _create(node, capped)
    assert created.status_code == 201, created.text
    name = created.headers["x-namespace"]
    with _held(node, name, tmp_path):
        _delete(node, capped, name)
        refused = _create(node, capped)
        assert refused.status_code == 429, refused.text
        assert "1 of them is being deleted" in refused.json()["detail"]
        # Still Terminating a while later, and still holding the slot: 429 until it is gone.
        wait_until(lambda: "NamespaceFinalizersRemaining" in node.kubectl(
            "get", "namespace", name, "-o", "jsonpath={.status.conditions[*].type}"),
            timeout=60, message="the namespace controller found the finalizer")  # fmt: skip
        assert _create(node, capped).status_code == 429
    # Released and gone: the slot is free (once the replica's watch has seen it go).
    again = wait_until(lambda: (r := _create(node, capped)).status_code == 201 and r,
                       timeout=10, interval=0.5, message="a create once it is gone")  # fmt: skip
    _delete(node, capped, again.headers["x-namespace"])
    wait_until(lambda: _gone(node, again.headers["x-namespace"]), timeout=120, interval=0.5,
               message="cleanup")  # fmt: skip


def _unix(timestamp: str) -> float:
    return float(calendar.timegm(time.strptime(timestamp[:19], "%Y-%m-%dT%H:%M:%S")))


def _stuck_events(node: NodeCluster, name: str) -> list[Any]:
    selector = f"reason=NamespaceStuck,involvedObject.name={name}"
    return list(node.json("-n", "default", "get", "events", "--field-selector", selector)["items"])


def _stuck_lines(node: NodeCluster, name: str) -> list[str]:
    lines = []
    for pod in _pods(node):
        log = node.kubectl("-n", "nsprov", "logs", pod["metadata"]["name"], check=False)
        lines += [line for line in log.splitlines() if f"stuck namespace={name} " in line]
    return lines


def _gauge(node: NodeCluster, stuck: str) -> float:
    pod = _pods(node)[0]
    text = internal_get(node, pod["metadata"]["name"], "/metrics")
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith("nsprov_namespaces_terminating{") and f'stuck="{stuck}"' in head:
            total += float(value)
    return total


def test_a_stuck_namespace_is_reported_within_a_minute_of_the_threshold(
    node: NodeCluster, capped: Deployed, tmp_path: Path
) -> None:
    created = _create(node, capped)
    assert created.status_code == 201, created.text
    name = created.headers["x-namespace"]
    with _held(node, name, tmp_path):
        _delete(node, capped, name)
        started = _unix(node.kubectl(
            "get", "namespace", name, "-o", "jsonpath={.metadata.deletionTimestamp}"))  # fmt: skip
        (event,) = wait_until(lambda: _stuck_events(node, name), timeout=STUCK_AFTER + 60,
                              interval=1, message="the stuck Event")  # fmt: skip
        reported = _unix(event.get("eventTime") or event["firstTimestamp"])
        assert STUCK_AFTER <= reported - started <= STUCK_AFTER + 60, (started, reported)
        assert event["type"] == "Warning"
        assert event["involvedObject"]["kind"] == "Namespace"
        assert NEVER in event["message"], event["message"]
        (line,) = wait_until(lambda: _stuck_lines(node, name), timeout=30,
                             message="the stuck log line")  # fmt: skip
        assert NEVER in line, line
        assert _gauge(node, "true") >= 1
        # nsprov removed nothing: the finalizer is still there.
        finalizers = node.kubectl("-n", name, "get", "configmap", HOLDER,
                                  "-o", "jsonpath={.metadata.finalizers}")  # fmt: skip
        assert NEVER in finalizers
    wait_until(lambda: _gauge(node, "true") == 0, timeout=30, message="no longer stuck")
