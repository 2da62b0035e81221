"""The chaos tests' shared setup, as fixtures.

Each test gets a seed (``NSPROV_CHAOS_SEED`` repeats one), an observer watching the
managed namespaces from before the replicas start until after they stop, two replicas
with exactly the RBAC k8s/ gives nsprov, and a tracker of whether some replica leads,
started once one does. The test stops the tracker itself when its measurements end
(stopping twice is harmless); the replicas stop and the Lease is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.chaos.kills import LEASE, start_replicas, wait_for_leader
from tests.integration.chaos.observe import LeaderTracker, Observer
from tests.integration.conftest import NSPROV_NAMESPACE, Cluster
from tests.integration.service import RunningService


@pytest.fixture(autouse=True)
def _setting(cluster: Cluster, grants: None, clean_namespaces: None, configmap_grant: None) -> None:
    """k8s/'s grants, no managed namespace of an earlier test's, and a local control plane
    (the kills need its processes)."""
    cluster.require_local()


@pytest.fixture
def seed() -> int:
    chosen = int(os.environ.get("NSPROV_CHAOS_SEED") or secrets.randbits(31))
    print(f"chaos seed {chosen} (NSPROV_CHAOS_SEED={chosen} repeats its choices)")
    return chosen


@pytest.fixture
def rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - seeded chaos, not crypto


@pytest.fixture
def observer(cluster: Cluster) -> Iterator[Observer]:
    watching = Observer(cluster.kubeconfig)
    watching.start()
    try:
        yield watching
    finally:
        watching.stop()


@pytest.fixture
def replicas(
    cluster: Cluster, observer: Observer, manifest_kubeconfig: Path, tmp_path: Path
) -> Iterator[dict[str, RunningService]]:
    """Two replicas sharing the Lease k8s/ lets nsprov use (deleted afterwards)."""
    try:
        with start_replicas(manifest_kubeconfig, tmp_path, LEASE) as started:
            yield started
    finally:
        with contextlib.suppress(ApiException):
            client.CoordinationV1Api(cluster.api).delete_namespaced_lease(LEASE, NSPROV_NAMESPACE)


@pytest.fixture
def tracker(cluster: Cluster, replicas: dict[str, RunningService]) -> Iterator[LeaderTracker]:
    """Whether some replica leads, sampled from the start; yielded once one does."""
    tracking = LeaderTracker(replicas)
    tracking.start()
    try:
        wait_for_leader(cluster, LEASE, replicas)
        yield tracking
    finally:
        tracking.stop()
