"""Strangers pushing on nsprov's HTTP port (issue 19): each attack bounded, nsprov stays up.

nsprov runs as a real process (``nsprov serve``) on the test control plane, with a
short read deadline so each attack is over in seconds. For each: the attack's
connections are cut (with a clear status where one can be sent), a legitimate
client keeps being answered meanwhile, nsprov's RSS grows by less than 30 MiB
(read from /proc), and nothing changes in the cluster.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from tests import hostile
from tests.cluster.controlplane import ControlPlane
from tests.integration.conftest import Cluster, live_managed_namespaces
from tests.integration.service import RunningService, metric, problem, running_service
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

READ_TIMEOUT = 2.0
RSS_BOUND_MIB = 30
# Generous against the 250 ms target (the bench reports the figure): this machine's two
# cores are shared with other work, which alone can add hundreds of milliseconds.
LEGIT_P95_BOUND = 2.0


@pytest.fixture
def service(cluster: Cluster, tmp_path: Path) -> Iterator[RunningService]:
    hostile.raise_fd_limit()  # before the start: nsprov inherits it
    with running_service(
        cluster.kubeconfig, tmp_path, [f"--request-read-timeout={READ_TIMEOUT:g}s"]
    ) as running:
        with running.client() as http:  # loads what a first request loads, before measuring
            http.get("/api/v1/namespaces", headers=running.auth()).raise_for_status()
        yield running


def _under_attack(
    service: RunningService, core: client.CoreV1Api, attack: hostile.Attack
) -> tuple[hostile.AttackResult, hostile.PeakRss, hostile.Legitimate]:
    before = live_managed_namespaces(core)
    with (
        hostile.PeakRss(service.process.pid) as rss,
        hostile.Legitimate(service.url, service.auth()) as legit,
    ):
        result = attack()
    # Shown with -s: how far from the bounds this run was.
    print(
        f"\n{result.summary()}; RSS {rss.before:.1f} -> peak {rss.peak:.1f} MiB; "
        f"legitimate GET p95 {legit.p95() * 1000:.0f} ms over {len(legit.latencies)}"
    )
    assert service.process.poll() is None, service.log()
    assert rss.growth < RSS_BOUND_MIB, f"RSS {rss.before:.1f} -> peak {rss.peak:.1f} MiB"
    assert legit.statuses.keys() == {200}, legit.statuses
    assert len(legit.latencies) >= 5
    assert legit.p95() < LEGIT_P95_BOUND, sorted(legit.latencies)[-5:]
    assert live_managed_namespaces(core) == before
    assert not metric(service, "nsprov_namespaces_provisioned_total")
    return result, rss, legit


def test_unfinished_heads_are_cut_at_the_head_limit(
    service: RunningService, core: client.CoreV1Api
) -> None:
    """800 connections each sending 250 KiB of header lines and never the blank line: before,
    309 MiB of RSS and every connection still open 75 s later. Here each cut one is
    replaced at once, for 3 s."""
    head = hostile.unfinished_head(250 * 1024)
    result, _, _ = _under_attack(
        service,
        core,
        lambda: hostile.push(service.url, head, connections=800, timeout=30, sustain=3),
    )
    assert len(result.outcomes) > 800
    assert result.still_open() == 0, result.summary()
    # Cut as the head passes 16 KiB, not at the deadline.
    assert result.latest_cut() < READ_TIMEOUT, result.summary()
    assert set(result.statuses()) <= {431, None}, result.summary()
    assert result.statuses()[431] > 0, result.summary()
    cut = metric(service, 'nsprov_http_connections_cut_total{reason="head_too_large"}')
    assert cut == len(result.outcomes)


def test_heads_just_under_the_limit_held_by_every_connection_cost_under_30_mib(
    service: RunningService, core: client.CoreV1Api
) -> None:
    """The most the limits let a stranger hold: --max-connections (1,024) heads of 15 KiB,
    each kept until the read deadline."""
    head = hostile.unfinished_head(15 * 1024)
    result, _, _ = _under_attack(
        service, core, lambda: hostile.push(service.url, head, connections=1000, timeout=15)
    )
    assert result.still_open() == 0, result.summary()
    assert result.statuses() == {408: 1000}, result.summary()
    assert result.latest_cut() < READ_TIMEOUT + 1.5, result.summary()


def test_a_byte_a_second_is_cut_at_the_read_deadline(
    service: RunningService, core: client.CoreV1Api
) -> None:
    result, _, _ = _under_attack(
        service,
        core,
        lambda: hostile.push(
            service.url, hostile.slow_head(), connections=1000, timeout=15, bytes_per_second=1
        ),
    )
    assert result.still_open() == 0, result.summary()
    assert result.latest_cut() < READ_TIMEOUT + 1.5, result.summary()
    assert result.statuses() == {408: 1000}, result.summary()
    assert metric(service, 'nsprov_http_connections_cut_total{reason="head_timeout"}') == 1000


def test_big_tokens_are_431_before_anything_parses_them(
    service: RunningService, core: client.CoreV1Api
) -> None:
    result, _, _ = _under_attack(
        service,
        core,
        lambda: hostile.big_tokens(service.url, requests=2000, token_bytes=64 * 1024),
    )
    assert set(result.statuses()) <= {431, None}, result.summary()
    assert result.statuses()[431] > 1000, result.summary()
    assert result.still_open() == 0


def test_an_oversized_token_or_body_gets_a_clear_problem(service: RunningService) -> None:
    with service.client() as http:
        over = http.get("/api/v1/namespaces", headers={"Authorization": "Bearer " + "t" * 17000})
        assert over.status_code == 431, over.text
        assert over.headers["content-type"] == "application/problem+json"
        assert "16384 bytes" in over.json()["detail"]
        # Within the head limit, a token that is not one is the API's 401.
        junk = http.get("/api/v1/namespaces", headers={"Authorization": "Bearer " + "t" * 8000})
        problem(junk, 401)
        body = http.post("/api/v1/namespaces", headers=service.auth(), content=b"x" * 70000)
        assert body.status_code == 413, body.text
        assert "65536 bytes" in body.json()["detail"]
        # The connection pool notices the closed connections; the next request is served.
        assert http.get("/api/v1/namespaces", headers=service.auth()).status_code == 200
    with httpx.Client(base_url=service.url) as http:
        assert http.get("/api/v1/namespaces", headers=service.auth()).status_code == 200


def test_every_api_request_has_one_access_line_without_secrets(service: RunningService) -> None:
    """Before, not one: the internal server's access_log=False silenced uvicorn's logger."""
    token = service.tokens["alice"]
    with service.client() as http:
        http.get("/api/v1/namespaces/np-secret-name", params={"ttl": "q-secret"},
                 headers=service.auth())  # fmt: skip
        http.delete("/api/v1/namespaces/np-secret-name", headers={"Authorization": "Bearer x"})

    def access_lines() -> list[str]:
        return [line for line in service.log().splitlines() if " nsprov.access " in line]

    # Written once the answer is sent: the client may read it a moment before.
    wait_until(lambda: " DELETE " in access_lines()[-1], timeout=5, message="access line")
    lines = access_lines()
    assert re.search(r"\] GET /api/v1/namespaces/\{name\} 404 [0-9.]+ms owner=alice tenant=-$",
                     lines[-2])  # fmt: skip
    assert " DELETE /api/v1/namespaces/{name} 401 " in lines[-1]
    assert lines[-1].endswith(" owner=- tenant=-")
    for secret in (token, "np-secret-name", "q-secret"):
        assert secret not in service.log()


@contextlib.contextmanager
def _api_server_paused(plane: ControlPlane) -> Iterator[None]:
    """SIGSTOP the API server: every call to it hangs until SIGCONT."""
    pid = plane.components["kube-apiserver"].pid
    assert pid is not None
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


def test_requests_above_the_in_flight_limit_get_503_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    plane = cluster.require_local()
    args = ["--max-requests-in-flight=2", "--request-timeout=20s"]
    with running_service(cluster.kubeconfig, tmp_path, args) as service:

        def create(_: int) -> int:
            with httpx.Client(base_url=service.url, timeout=60) as http:
                return http.post("/api/v1/namespaces", headers=service.auth()).status_code

        with concurrent.futures.ThreadPoolExecutor(2) as pool, _api_server_paused(plane):
            posts = [pool.submit(create, i) for i in range(2)]
            # Both POSTs hang on the paused API server, in flight: the next request is shed.
            wait_until(lambda: metric(service, "nsprov_http_requests_in_flight") == 2, timeout=10)
            with service.client() as http:
                started = time.monotonic()
                shed = http.get("/api/v1/namespaces", headers=service.auth())
                waited = time.monotonic() - started
            body = problem(shed, 503)
            assert shed.headers["retry-after"] == "1"
            assert "(2)" in body["detail"]
            assert waited < 1
        assert {post.result() for post in posts} <= {201, 503}
        assert metric(service, "nsprov_http_requests_shed_total") == 1
        with service.client() as http:
            assert http.get("/api/v1/namespaces", headers=service.auth()).status_code == 200


# ---- review: the connection cap as the attack ----------------------------------------------


def test_connections_above_the_cap_do_not_lock_out_legitimate_clients(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """Review finding: the cap on open connections (--max-connections, 1,024 by default) turns
    a memory attack into a lock-out. A stranger that keeps one connection more than the cap
    open (each sending a byte a second, replaced when cut at the read deadline) holds every
    slot: each legitimate client's connection is closed at once, without an answer, for as
    long as the attack lasts. The earlier tests stop at 1,000 connections, just under the
    cap. Scaled down here (cap 100, 150 attackers) to spare the shared cores; the mechanism is
    the same at 1,024/1,100."""
    hostile.raise_fd_limit()
    args = [f"--request-read-timeout={READ_TIMEOUT:g}s", "--max-connections=100"]
    with running_service(cluster.kubeconfig, tmp_path, args) as service:
        with service.client() as http:
            http.get("/api/v1/namespaces", headers=service.auth()).raise_for_status()
        with hostile.Legitimate(service.url, service.auth(), interval=0.1) as legit:
            hostile.push(service.url, hostile.slow_head(), connections=150, timeout=6,
                         bytes_per_second=1, sustain=6)  # fmt: skip
        print(f"\nlegitimate statuses under attack: {dict(legit.statuses)}")
        assert legit.statuses.keys() == {200}, legit.statuses


def test_connections_above_the_cap_on_the_metrics_port_do_not_fail_the_probes(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Review finding: the internal listener (/healthz, /readyz: k8s/deployment.yaml's liveness
    and readiness probes, 1 s timeout, liveness failureThreshold 3 every 10 s) has the same
    cap. Whoever reaches port 9090 (the NetworkPolicy admits monitoring namespaces; without an
    enforcing CNI, everyone) and keeps more connections than the cap open makes every probe
    fail: the kubelet takes the replica out of its Service and restarts it every 30 s, and a
    replica that keeps restarting expires nothing. Scaled down (cap 100, 150 attackers)."""
    hostile.raise_fd_limit()
    args = [f"--request-read-timeout={READ_TIMEOUT:g}s", "--max-connections=100"]
    with running_service(cluster.kubeconfig, tmp_path, args) as service:
        probes: list[int | str] = []

        def probe_loop(stop: threading.Event) -> None:
            while not stop.wait(0.5):
                try:
                    probes.append(
                        httpx.get(f"{service.internal_url}/healthz", timeout=1).status_code
                    )
                except httpx.HTTPError as exc:
                    probes.append(type(exc).__name__)

        stop = threading.Event()
        prober = threading.Thread(target=probe_loop, args=(stop,), daemon=True)
        prober.start()
        try:
            hostile.push(service.internal_url, hostile.slow_head(), connections=150, timeout=6,
                         bytes_per_second=1, sustain=6)  # fmt: skip
        finally:
            stop.set()
            prober.join(timeout=5)
        print(f"\nprobes of /healthz under attack: {probes}")
        assert probes, "no probe ran"
        assert set(probes) == {200}, probes
