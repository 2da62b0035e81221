"""Scale and faults: probes that never queue behind the API, readiness through outages.

Each test runs its own nsprov with the flags it needs, against the session's control
plane, and several of them pause or stop the API server: they restore it in
``finally`` so the tests after them find it serving.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from tests.cluster.controlplane import ControlPlane
from tests.integration.conftest import Cluster, live_managed_namespaces
from tests.integration.service import RunningService, problem, running_service
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
