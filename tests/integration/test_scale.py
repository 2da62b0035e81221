"""Scale and faults: probes that never queue behind the API, readiness through outages.

Each test runs its own nsprov with the flags it needs, against the session's control
plane, and several of them pause or stop the API server: they restore it in
``finally`` so the tests after them find it serving.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import secrets
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from tests.cluster.controlplane import ControlPlane
from tests.integration.conftest import Cluster, live_managed_namespaces
from tests.integration.service import RunningService, problem, running_service, start_service
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")


@contextlib.contextmanager
def _api_server_paused(plane: ControlPlane) -> Iterator[None]:
    """SIGSTOP the API server: connections stay open and every call to it hangs."""
    pid = plane.components["kube-apiserver"].pid
    assert pid is not None
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


def _probes_answer(service: RunningService) -> None:
    with httpx.Client(base_url=service.internal_url, timeout=5) as http:
        assert http.get("/healthz").text == "ok"
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True}
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        assert "nsprov_http_requests_total" in metrics.text


def test_probes_answer_while_every_worker_thread_waits_on_the_api(
    cluster: Cluster, tmp_path: Path
) -> None:
    plane = cluster.require_local()
    args = ["--concurrency=4", "--request-timeout=15s"]
    with running_service(cluster.kubeconfig, tmp_path, args) as service:

        def create(_: int) -> int:
            with httpx.Client(base_url=service.url, timeout=60) as http:
                response = http.post("/api/v1/namespaces", headers=service.auth())
                return response.status_code

        with (
            concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool,
            _api_server_paused(plane),
        ):
            posts = [pool.submit(create, i) for i in range(64)]
            # 64 POSTs on 4 worker threads, each call hanging on the paused API server:
            # the API's threads are all taken for as long as the pause lasts.
            for _ in range(3):
                _probes_answer(service)
            assert not any(post.done() for post in posts), "the API was not saturated"
        statuses = {post.result() for post in posts}
    assert statuses <= {201, 503}, statuses


def test_api_server_outage_keeps_ready_and_answers_503(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    plane = cluster.require_local()
    with running_service(cluster.kubeconfig, tmp_path) as service:
        plane.stop_component("kube-apiserver", kill=True)
        try:
            # Synced once, the replica stays in the Service: failing readiness now would
            # take every replica out at once, and clients would get connection errors
            # instead of a 503 that tells them when to come back.
            _probes_answer(service)
            with service.client() as http:
                response = http.post("/api/v1/namespaces", headers=service.auth())
            problem(response, 503)
            assert int(response.headers["retry-after"]) > 0
            _probes_answer(service)
        finally:
            plane.start_component("kube-apiserver")

        def created() -> bool:
            with service.client() as http:
                return http.post("/api/v1/namespaces", headers=service.auth()).status_code == 201

        wait_until(created, timeout=30, message="POST works again")
    assert len(live_managed_namespaces(core)) == 1


def test_not_ready_before_the_caches_have_synced(cluster: Cluster, tmp_path: Path) -> None:
    plane = cluster.require_local()
    plane.stop_component("kube-apiserver", kill=True)
    try:
        service = start_service(cluster.kubeconfig, tmp_path, wait_ready=False)
        try:

            def readyz() -> tuple[httpx.Response] | None:
                with contextlib.suppress(httpx.HTTPError):
                    return (httpx.get(f"{service.internal_url}/readyz", timeout=2),)
                return None

            (first,) = wait_until(readyz, timeout=30, message="/readyz answers")
            # Nothing seen yet: answering from empty caches would hide every namespace.
            assert first.status_code == 503
            body = first.json()
            assert (body["ready"], body["reason"]) == (False, "caches not synced")
            plane.start_component("kube-apiserver")
            wait_until(
                lambda: (readyz() or (first,))[0].status_code == 200,
                timeout=60,
                message="ready once the API server is back and the caches synced",
            )
        finally:
            service.stop()
    finally:
        if not plane.components["kube-apiserver"].running():
            plane.start_component("kube-apiserver")


# ---- reads from the cache, pagination -------------------------------------------------------


def _names(service: RunningService, owner: str = "alice", **params: str) -> list[str]:
    """The owner's live namespaces (the list also shows those being deleted, until gone)."""
    with service.client() as http:
        response = http.get("/api/v1/namespaces", params=params, headers=service.auth(owner))
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"] if item["state"] == "ACTIVE"]


def _post(service: RunningService, owner: str = "alice", key: str | None = None) -> str:
    headers = service.auth(owner)
    if key is not None:
        headers["Idempotency-Key"] = key
    with service.client() as http:
        response = http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=headers)
    assert response.status_code == 201, response.text
    return response.headers["x-namespace"]


def test_reads_come_from_the_cache_and_see_this_replicas_writes(
    cluster: Cluster, tmp_path: Path
) -> None:
    plane = cluster.require_local()
    with running_service(cluster.kubeconfig, tmp_path) as service:
        mine = []
        for _ in range(5):
            # Read your writes: each create is in the very next list, before any watch event
            # could be relied on.
            mine.append(_post(service))
            assert mine[-1] in _names(service)
        theirs = _post(service, "bob")
        gone = mine.pop()
        with service.client() as http:
            assert http.delete(f"/api/v1/namespaces/{gone}", headers=service.auth()).status_code
            assert gone not in _names(service)  # MARKED_FOR_DELETION at once

            plane.stop_component("kube-apiserver", kill=True)
            try:
                # Nothing of this reaches the API server: it is all in the cache.
                assert _names(service) == sorted(mine)
                assert _names(service, "bob") == [theirs]
                one = http.get(f"/api/v1/namespaces/{mine[0]}", headers=service.auth())
                assert one.json()["name"] == mine[0]
                # Another owner's namespace is as unknown from the cache as from the API.
                foreign = http.get(f"/api/v1/namespaces/{theirs}", headers=service.auth())
                problem(foreign, 404)
            finally:
                plane.start_component("kube-apiserver")


@pytest.mark.usefixtures("no_managed_namespaces")  # exact pages: none being deleted
@pytest.mark.parametrize("controller", ["true", "false"])
def test_the_list_is_paginated_by_name(cluster: Cluster, tmp_path: Path, controller: str) -> None:
    with running_service(cluster.kubeconfig, tmp_path, [f"--controller={controller}"]) as service:
        mine = sorted(_post(service) for _ in range(4))
        key = f"job-{secrets.token_hex(4)}"
        mine = sorted([*mine, _post(service, key=key)])
        _post(service, "bob")
        with service.client() as http:
            pages, token = [], None
            while True:
                params = {"limit": "2", **({"continue": token} if token else {})}
                answer = http.get("/api/v1/namespaces", params=params, headers=service.auth())
                assert answer.status_code == 200, answer.text
                body = answer.json()
                pages.append([item["name"] for item in body["items"]])
                token = body["metadata"].get("continue")
                if token is None:
                    assert "remainingItemCount" not in body["metadata"]
                    break
                assert body["metadata"]["remainingItemCount"] == 5 - sum(map(len, pages))
            assert pages == [mine[0:2], mine[2:4], mine[4:5]]
            # A token is a position, not a capability: alice's token shows bob only his own.
            first = http.get("/api/v1/namespaces", params={"limit": "1"}, headers=service.auth())
            token = first.json()["metadata"]["continue"]
            bobs = http.get(
                "/api/v1/namespaces", params={"continue": token}, headers=service.auth("bob")
            ).json()["items"]
            assert all(item["owner"] == "bob" for item in bobs)
            assert not {item["name"] for item in bobs} & set(mine)
            assert _names(service) == mine  # the default limit holds them all

            for name, value in (("limit", "0"), ("limit", "501"), ("limit", "x"),
                                ("continue", "%%"), ("continue", "eyJ2IjoyfQ")):  # fmt: skip
                bad = http.get("/api/v1/namespaces", params={name: value}, headers=service.auth())
                assert name in problem(bad, 400)["detail"]
            found = http.get(
                "/api/v1/namespaces", params={"idempotencyKey": key}, headers=service.auth()
            ).json()
            assert found["idempotencyKey"] == key
            assert len(found["items"]) == 1
            assert found["items"][0]["name"] in mine


# ---- caps across replicas -------------------------------------------------------------------


@pytest.mark.usefixtures("no_managed_namespaces")
def test_per_owner_cap_holds_across_two_replicas_under_a_burst(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    lease = f"nsprov-test-{secrets.token_hex(3)}"
    args = ["--max-namespaces-per-owner=5", f"--leader-elect-lease-name={lease}"]
    with running_service(cluster.kubeconfig, tmp_path / "a", args) as first:
        # Both replicas serve the same token file, as two pods of one Deployment do.
        shared = {"NSPROV_TOKEN_FILE": str(first.token_file)}
        with running_service(cluster.kubeconfig, tmp_path / "b", args, shared) as second:
            second.tokens = first.tokens

            def create(i: int) -> httpx.Response:
                replica = (first, second)[i % 2]
                with httpx.Client(base_url=replica.url, timeout=120) as http:
                    return http.post("/api/v1/namespaces", headers=replica.auth())

            with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
                responses = list(pool.map(create, range(64)))
    statuses = [r.status_code for r in responses]
    handed_out = {r.headers["x-namespace"] for r in responses if r.status_code == 201}
    assert set(statuses) <= {201, 429}, [r.text for r in responses if r.status_code >= 500]
    # Overshoot 0, and no starvation: the first five creates win, whoever served them.
    assert len(handed_out) == 5, statuses
    for refused in (r for r in responses if r.status_code == 429):
        assert "per owner" in problem(refused, 429)["detail"]
    # The losers were rolled back before their callers heard 429.
    assert set(live_managed_namespaces(core)) == handed_out
    client.CoordinationV1Api(cluster.api).delete_namespaced_lease(lease, "default")


# ---- the internal listener's own thread ------------------------------------------------------


def test_sigterm_stops_both_listeners(cluster: Cluster, tmp_path: Path) -> None:
    service = start_service(cluster.kubeconfig, tmp_path)
    try:
        service.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal it handled once it has shut down cleanly.
        assert service.process.wait(timeout=10) in (0, -signal.SIGTERM), service.log()
        assert "Application shutdown complete" in service.log()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{service.internal_url}/healthz", timeout=2)
    finally:
        service.stop()


def test_a_taken_internal_port_stops_the_process(cluster: Cluster, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = start_service(
            cluster.kubeconfig,
            tmp_path,
            [f"--listen-internal=127.0.0.1:{port}"],
            wait_ready=False,
        )
        try:
            # A replica without probes would look dead to the kubelet; it must not run on.
            assert service.process.wait(timeout=20) != 0, service.log()
        finally:
            service.stop()
