"""The clients: threads that create namespaces through whichever replica is alive."""

from __future__ import annotations

import itertools
import random
import secrets
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml

from nsprov.provision import bundle
from tests.integration.chaos.observe import LeaderTracker
from tests.integration.chaos.timing import (
    DRIVERS,
    LONG_TTL,
    RBAC_LAG_SECONDS,
    RETRY_SECONDS,
    SHORT_TTL,
)
from tests.integration.service import RunningService


@dataclass
class Created:
    """A 201 a client received."""

    name: str
    key: str | None
    ttl: int
    received_at: float


@dataclass
class Outcomes:
    created: list[Created] = field(default_factory=list)
    names_by_key: dict[str, set[str]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    unknown: int = 0  # connection lost on an unkeyed create: a namespace may exist
    problems: list[str] = field(default_factory=list)
    kubeconfigs_checked: int = 0
    # 403 at first, then 200: seconds from the 201 (or the API server's return) to the 200
    rbac_lags: list[float] = field(default_factory=list)
    rbac_lags_after_restart: int = 0  # of those, refused first after the API server returned
    lock: threading.Lock = field(default_factory=threading.Lock)


class Driver:
    """Threads that create namespaces through whichever replica is alive."""

    def __init__(
        self,
        replicas: dict[str, RunningService],
        tracker: LeaderTracker,
        seed: int,
        ca_file: str,
        until: float,
    ) -> None:
        self.replicas = replicas
        self.tracker = tracker
        self.seed = seed
        self.until = until
        self.outcomes = Outcomes()
        self._tls = ssl.create_default_context(cafile=ca_file)
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"driver-{i}", daemon=True)
            for i in range(DRIVERS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=RETRY_SECONDS + 30)
            assert not thread.is_alive(), f"{thread.name} did not finish"

    def _problem(self, text: str) -> None:
        with self.outcomes.lock:
            self.outcomes.problems.append(text)

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 100 + index)  # noqa: S311 - seeded chaos, not crypto
        with httpx.Client(timeout=15) as http:
            while time.time() < self.until:
                ttl = rng.randint(*(SHORT_TTL if rng.random() < 0.7 else LONG_TTL))
                key = f"chaos-{secrets.token_hex(6)}" if rng.random() < 0.5 else None
                try:
                    self._create(http, rng, ttl, key)
                except Exception as exc:  # reported with the rest
                    self._problem(f"driver crashed: {exc!r}")
                time.sleep(rng.uniform(0.05, 0.3))

    def _live(self, rng: random.Random) -> RunningService:
        alive = [r for r in self.replicas.values() if r.process.poll() is None]
        return rng.choice(alive or list(self.replicas.values()))

    def _create(self, http: httpx.Client, rng: random.Random, ttl: int, key: str | None) -> None:
        deadline = time.time() + RETRY_SECONDS
        while True:
            replica = self._live(rng)
            headers = {**replica.auth(), "Accept": "application/json"}
            if key:
                headers["Idempotency-Key"] = key
            try:
                response = http.post(f"{replica.url}/api/v1/namespaces",
                                     params={"ttl": f"{ttl}s"}, headers=headers)  # fmt: skip
            except httpx.TransportError as exc:
                self._count(f"lost:{type(exc).__name__}")
                if key is None:
                    with self.outcomes.lock:
                        self.outcomes.unknown += 1
                    return
            else:
                self._count(str(response.status_code))
                if response.status_code == 201:
                    self._created(response, key, ttl)
                    return
                if response.status_code == 503:
                    if not response.headers.get("retry-after"):
                        self._problem(f"503 without Retry-After: {response.text}")
                    if key is None:
                        return
                elif response.status_code == 409 and key is not None:
                    return  # the key's namespace expired or is going: a new key is needed
                else:
                    self._problem(f"POST answered {response.status_code}: {response.text}")
                    return
            if time.time() >= deadline:
                self._problem(f"keyed create {key} unanswered for {RETRY_SECONDS:.0f}s")
                return
            time.sleep(rng.uniform(0.2, 0.5))

    def _count(self, status: str) -> None:
        with self.outcomes.lock:
            self.outcomes.statuses[status] += 1

    def _created(self, response: httpx.Response, key: str | None, ttl: int) -> None:
        body = response.json()
        name = body["namespace"]
        with self.outcomes.lock:
            self.outcomes.created.append(Created(name, key, ttl, time.time()))
            if key:
                self.outcomes.names_by_key.setdefault(key, set()).add(name)
        expires_at = bundle.unix_time(body["expiresAt"])
        assert expires_at is not None, body
        self._check_kubeconfig(name, yaml.safe_load(body["kubeconfig"]), expires_at)

    def _check_kubeconfig(self, name: str, kubeconfig: dict[str, Any], expires_at: int) -> None:
        """The kubeconfig's token may list configmaps in its namespace (the grant's rule).

        The API server authorizes from an informer cache of RoleBindings, so a binding
        created a moment ago may not count yet (Kubernetes' RBAC is eventually
        consistent), nor any binding while a restarted API server has not synced that
        cache (it serves before /readyz says so): a 403 that turns into a 200 within
        ``RBAC_LAG_SECONDS`` of the 201 or of the API server's return is counted (and
        reported), one that lasts is a kubeconfig that did not work.
        """
        server = kubeconfig["clusters"][0]["cluster"]["server"]
        token = kubeconfig["users"][0]["user"]["token"]
        received = time.monotonic()
        forbidden_since: float | None = None
        # Before the namespace expires, with time to spare for the answer.
        deadline = expires_at - 1.5
        with httpx.Client(verify=self._tls, timeout=5) as api:
            while time.time() < deadline:
                try:
                    answer = api.get(f"{server}/api/v1/namespaces/{name}/configmaps",
                                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
                except httpx.TransportError:
                    time.sleep(0.3)  # the API server is being restarted
                    continue
                if answer.status_code == 200:
                    with self.outcomes.lock:
                        self.outcomes.kubeconfigs_checked += 1
                        if forbidden_since is not None:
                            since = max(received, self.tracker.api_server_ready_at)
                            self.outcomes.rbac_lags.append(time.monotonic() - since)
                            self.outcomes.rbac_lags_after_restart += since > received
                    return
                if answer.status_code >= 500 or time.time() >= deadline:
                    time.sleep(0.3)
                    continue
                now = time.monotonic()
                since = max(received, self.tracker.api_server_ready_at)
                settling = not self.tracker.api_server_up or now - since < RBAC_LAG_SECONDS
                if answer.status_code == 403 and settling:
                    forbidden_since = forbidden_since or now
                    time.sleep(0.05)
                    continue
                after = now - received
                self._problem(f"kubeconfig for {name} answered {answer.status_code} {after:.1f}s "
                              f"after the 201: {answer.text[:200]}")  # fmt: skip
                return


# ---- the kills ------------------------------------------------------------------------------


def create_until_answered(
    replicas: dict[str, RunningService],
    turn: RoundRobin,
    http: httpx.Client,
    ttl: str,
    key: str,
    outcomes: Outcomes,
) -> httpx.Response | None:
    """POST with an Idempotency-Key round-robin over the replicas until answered (None: never).

    A lost connection or a 503 is retried with the same key on the next replica.
    """
    deadline = time.time() + RETRY_SECONDS
    while time.time() < deadline:
        replica = replicas[turn()]
        headers = {**replica.auth(), "Accept": "application/json", "Idempotency-Key": key}
        try:
            response = http.post(f"{replica.url}/api/v1/namespaces",
                                 params={"ttl": ttl}, headers=headers)  # fmt: skip
        except httpx.TransportError as exc:
            with outcomes.lock:
                outcomes.statuses[f"lost:{type(exc).__name__}"] += 1
            time.sleep(0.1)
            continue
        with outcomes.lock:
            outcomes.statuses[str(response.status_code)] += 1
        if response.status_code != 503:
            return response
        if not response.headers.get("retry-after"):
            with outcomes.lock:
                outcomes.problems.append(f"503 without Retry-After: {response.text}")
        time.sleep(0.2)
    return None


class RoundRobin:
    """A tiny client-side balancer: each call names the next replica (thread-safe)."""

    def __init__(self, names: list[str]) -> None:
        self._cycle = itertools.cycle(names)
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            return next(self._cycle)
