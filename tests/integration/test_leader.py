"""Leader election: with two replicas one controller acts, and the other takes over.

A module of its own so that no other nsprov (with another Lease) runs meanwhile:
"exactly one replica deleted it" only means something when these two are all.
"""

from __future__ import annotations

import secrets
import signal
import time
from pathlib import Path

import pytest
from kubernetes import client

from tests.integration.conftest import CONFIGMAP_GRANT, Cluster
from tests.integration.service import (
    expired_lines,
    metric,
    namespace_status,
    provision,
    running_service,
    wait_expired_line,
)
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")


def _lease_holder(cluster: Cluster, lease: str) -> str:
    coordination = client.CoordinationV1Api(cluster.api)
    return coordination.read_namespaced_lease(lease, "default").spec.holder_identity or ""


@pytest.mark.parametrize("how", ["graceful", "killed"])
def test_two_replicas_one_leader_and_takeover(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path, how: str
) -> None:
    lease = f"nsprov-test-{secrets.token_hex(3)}"
    duration = 4.0
    args = [
        f"--cluster-role={CONFIGMAP_GRANT}",
        f"--leader-elect-lease-name={lease}",
        f"--leader-elect-lease-duration={duration:.0f}s",
        "--min-ttl=1s",
    ]
    with (
        running_service(cluster.kubeconfig, tmp_path / "a", args) as first,
        running_service(cluster.kubeconfig, tmp_path / "b", args) as second,
    ):
        replicas = (first, second)
        wait_until(lambda: sum(metric(r, "nsprov_leader") or 0 for r in replicas) == 1,
                   timeout=15, message="one leader")  # fmt: skip
        leader = next(r for r in replicas if metric(r, "nsprov_leader") == 1)
        follower = second if leader is first else first
        assert _lease_holder(cluster, lease)

        name, _ = provision(follower, "2s")  # every replica serves the API
        wait_until(lambda: namespace_status(core, name) != "active", timeout=15, message="expired")
        wait_expired_line(leader, name)
        assert expired_lines(follower, name) == []

        holder = _lease_holder(cluster, lease)
        stopped_at = time.monotonic()
        if how == "graceful":
            leader.stop()
            limit = duration
        else:
            leader.process.send_signal(signal.SIGKILL)
            leader.process.wait()
            # Unreleased: the follower must see the record unchanged for a whole lease duration.
            limit = duration * 1.5
        wait_until(lambda: metric(follower, "nsprov_leader") == 1, timeout=limit, interval=0.1,
                   message="follower took over")  # fmt: skip
        took = time.monotonic() - stopped_at
        assert _lease_holder(cluster, lease) not in ("", holder)
        assert took <= limit

        name, _ = provision(follower, "1s")
        wait_until(
            lambda: namespace_status(core, name) != "active", timeout=15, message="new leader acts"
        )
        wait_expired_line(follower, name)
    client.CoordinationV1Api(cluster.api).delete_namespaced_lease(lease, "default")
