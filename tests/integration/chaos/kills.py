"""Two replicas, and the kills: leaders, followers, kube-apiserver, replicas at random."""

from __future__ import annotations

import contextlib
import random
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.chaos.clients import (
    Driver,
)
from tests.integration.chaos.observe import LeaderTracker
from tests.integration.chaos.timing import (
    API_SERVER_KILLS,
    LEASE_SECONDS,
    RETRY_SECONDS,
    SHORT_TTL,
)
from tests.integration.conftest import NSPROV_NAMESPACE, Cluster
from tests.integration.service import RunningService, metric, start_service
from tests.support import wait_until

LEASE = "nsprov-controller"  # the one Lease k8s/ lets nsprov use


def _lease_holder(cluster: Cluster, lease: str) -> str:
    coordination = client.CoordinationV1Api(cluster.api)
    found = coordination.read_namespaced_lease(lease, NSPROV_NAMESPACE)
    return found.spec.holder_identity or ""


def wait_for_leader(cluster: Cluster, lease: str, replicas: dict[str, RunningService]) -> str:
    def holder() -> str | None:
        with contextlib.suppress(ApiException, OSError, urllib3.exceptions.HTTPError):
            found = _lease_holder(cluster, lease)
            if found in replicas and replicas[found].process.poll() is None:
                return found
        return None

    return wait_until(holder, timeout=30, interval=0.2, message="a live replica holds the lease")


def kill(replica: RunningService) -> None:
    replica.process.send_signal(signal.SIGKILL)
    replica.process.wait()


@dataclass
class Chaos:
    cluster: Cluster
    lease: str
    replicas: dict[str, RunningService]
    tracker: LeaderTracker
    rng: random.Random
    done: list[str] = field(default_factory=list)
    takeovers: list[float] = field(default_factory=list)
    own_lease_back: list[float] = field(default_factory=list)
    driver: Driver | None = None  # counts the creates that measure recovery
    # Each kube-apiserver kill: from the kill to /readyz (wall clock); from /readyz to
    # nsprov's first 201.
    api_server_outages: list[tuple[float, float]] = field(default_factory=list)
    recoveries: list[float] = field(default_factory=list)

    def kill_leader_and_restart_now(self) -> None:
        """The same pod's container restarts: its own identity takes the Lease back."""
        leader = wait_for_leader(self.cluster, self.lease, self.replicas)
        kill(self.replicas[leader])
        killed = time.monotonic()
        self.replicas[leader].start_again()
        # A replica that starts within the lease finds the Lease held by its own identity.
        holder = wait_for_leader(self.cluster, self.lease, self.replicas)
        if holder == leader:
            self.own_lease_back.append(time.monotonic() - killed)
        self.done.append(f"leader {leader} killed, restarted at once ({holder} leads)")

    def kill_leader_and_restart_later(self) -> None:
        """The other replica takes over once the dead leader's lease has run out."""
        leader = wait_for_leader(self.cluster, self.lease, self.replicas)
        other = next(name for name in self.replicas if name != leader)
        kill(self.replicas[leader])
        killed = time.monotonic()
        wait_until(lambda: metric(self.replicas[other], "nsprov_leader") == 1,
                   timeout=LEASE_SECONDS * 4, interval=0.1,
                   message=f"{other} took over from {leader}")  # fmt: skip
        self.takeovers.append(time.monotonic() - killed)
        time.sleep(self.rng.uniform(0, 2))  # down a little longer, for a random moment
        self.replicas[leader].start_again()
        self.done.append(f"leader {leader} killed, {other} took over, {leader} restarted")

    def kill_follower(self) -> None:
        leader = wait_for_leader(self.cluster, self.lease, self.replicas)
        follower = next(name for name in self.replicas if name != leader)
        kill(self.replicas[follower])
        self.replicas[follower].start_again()
        self.done.append(f"follower {follower} killed and restarted")

    def restart_api_server(self) -> None:
        plane = self.cluster.require_local()
        self.tracker.api_server_up = False
        started, down_at = time.monotonic(), time.time()
        try:
            plane.stop_component("kube-apiserver", kill=True)
            time.sleep(self.rng.uniform(0.5, 2.0))  # down for a random moment
        finally:
            plane.start_component("kube-apiserver")  # returns once /readyz answers 200
            self.tracker.api_server_ready_at = time.monotonic()
            self.tracker.api_server_up = True
            self.api_server_outages.append((down_at, time.time()))
        back = time.monotonic() - started
        recovery = self._first_create_after(self.tracker.api_server_ready_at)
        self.done.append(f"kube-apiserver killed and back after {back:.1f}s, "
                         f"a create succeeded {recovery:.1f}s after its /readyz")  # fmt: skip

    def _first_create_after(self, ready_at: float) -> float:
        """Seconds from ``ready_at`` to nsprov's first 201 (POSTs every 0.1 s, one key)."""
        key = f"recovery-{secrets.token_hex(6)}"
        ttl = max(SHORT_TTL)
        with httpx.Client(timeout=10) as http:
            while time.monotonic() - ready_at < RETRY_SECONDS:
                alive = [r for r in self.replicas.values() if r.process.poll() is None]
                replica = self.rng.choice(alive or list(self.replicas.values()))
                headers = {**replica.auth(), "Accept": "application/json",
                           "Idempotency-Key": key}  # fmt: skip
                with contextlib.suppress(httpx.TransportError):
                    response = http.post(f"{replica.url}/api/v1/namespaces",
                                         params={"ttl": f"{ttl}s"}, headers=headers)  # fmt: skip
                    if response.status_code == 201:
                        recovery = time.monotonic() - ready_at
                        self.recoveries.append(recovery)
                        if self.driver is not None:
                            self.driver._count("201")
                            self.driver._created(response, key, ttl)
                        return recovery
                    if response.status_code != 503 or not response.headers.get("retry-after"):
                        raise AssertionError(f"POST after the API server's return: "
                                             f"{response.status_code} {response.text}")  # fmt: skip
                time.sleep(0.1)
        raise AssertionError(f"no create succeeded within {RETRY_SECONDS}s of /readyz")

    def run(self, until: float) -> None:
        """Every kind at least once (in a seeded order), then mostly leader kills.

        kube-apiserver is killed ``API_SERVER_KILLS`` times at least, spread over the run.
        """
        began = time.time()
        leader_kills = [self.kill_leader_and_restart_now, self.kill_leader_and_restart_later]
        every = [*leader_kills, self.kill_follower, self.restart_api_server]
        kinds = self.rng.sample(every, len(every))
        while time.time() < until:
            time.sleep(self.rng.uniform(1.0, 4.0))
            elapsed = (time.time() - began) / (until - began)
            due = int(elapsed * (API_SERVER_KILLS + 1))
            if len(self.api_server_outages) < min(due, API_SERVER_KILLS):
                self.restart_api_server()
                continue
            if not kinds:
                kinds = [self.rng.choice(leader_kills if self.rng.random() < 0.8 else every)]
            kinds.pop(0)()


# ---- the test -------------------------------------------------------------------------------


@contextlib.contextmanager
def start_replicas(
    kubeconfig: Path, tmp_path: Path, lease: str
) -> Iterator[dict[str, RunningService]]:
    """Two replicas with exactly the permissions k8s/ gives nsprov (RBAC applies to them)."""
    args = [
        f"--leader-elect-namespace={NSPROV_NAMESPACE}",
        f"--leader-elect-lease-name={lease}",
        f"--leader-elect-lease-duration={LEASE_SECONDS:.0f}s",
        "--min-ttl=1s",
    ]
    replicas: dict[str, RunningService] = {}
    try:
        first = replicas["chaos-a"] = start_service(
            kubeconfig, tmp_path / "chaos-a", args, {"POD_NAME": "chaos-a"}
        )
        # The same token file, so a client may send its retry to either replica.
        env = {"POD_NAME": "chaos-b", "NSPROV_TOKEN_FILE": str(first.token_file)}
        second = replicas["chaos-b"] = start_service(kubeconfig, tmp_path / "chaos-b", args, env)
        second.tokens = first.tokens
        yield replicas
    finally:
        for replica in replicas.values():
            replica.stop()


class Killer:
    """SIGKILLs a random live replica at random moments, restarting it each time."""

    def __init__(self, replicas: dict[str, RunningService], rng: random.Random) -> None:
        self.replicas = replicas
        self.rng = rng
        self.kills: list[str] = []
        self.failure: BaseException | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="killer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the killer did not stop"
        if self.failure is not None:
            raise self.failure

    def _run(self) -> None:
        # Any moment: a replica may be killed again while it is still starting (a crash
        # loop), but only while the other one serves, so a client always has somewhere
        # to retry (as a Deployment's PodDisruptionBudget would keep one up).
        try:
            while not self._stopping.wait(self.rng.uniform(0.2, 1.5)):
                name = self.rng.choice(sorted(self.replicas))
                other = next(r for n, r in self.replicas.items() if n != name)
                wait_until(other.ready, timeout=30, interval=0.1, message="the other replica")
                kill(self.replicas[name])
                self.kills.append(name)
                self.replicas[name].start_again(wait_ready=False)
        except BaseException as exc:  # reported by stop()
            self.failure = exc
