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
from kubernetes.client.exceptions import ApiException

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


def _holder_if_any(cluster: Cluster, lease: str) -> str | None:
    try:
        return _lease_holder(cluster, lease)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


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


def test_a_killed_leader_restarted_with_its_identity_leads_again_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A pod's restarted container (same POD_NAME) takes its own Lease back, unwaited."""
    lease = f"nsprov-test-{secrets.token_hex(3)}"
    # Long enough that a loaded machine restarts the process well within half of it.
    duration = 30.0
    args = [
        f"--leader-elect-lease-name={lease}",
        f"--leader-elect-lease-duration={duration:.0f}s",
    ]
    with (
        running_service(cluster.kubeconfig, tmp_path / "a", args, {"POD_NAME": "pod-a"}) as first,
        running_service(cluster.kubeconfig, tmp_path / "b", args, {"POD_NAME": "pod-b"}) as second,
    ):
        replicas = {"pod-a": first, "pod-b": second}
        holder = wait_until(lambda: _holder_if_any(cluster, lease), timeout=15, message="a leader")
        assert holder in replicas, f"the Lease holder {holder!r} is not the pod's name"
        leader, follower = replicas[holder], second if replicas[holder] is first else first
        wait_until(lambda: metric(leader, "nsprov_leader") == 1, timeout=15, message="it leads")
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait()
        killed = time.monotonic()
        leader.start_again()
        wait_until(lambda: metric(leader, "nsprov_leader") == 1, timeout=duration / 2,
                   interval=0.1, message=f"{holder} leads again")  # fmt: skip
        took = time.monotonic() - killed
        assert _lease_holder(cluster, lease) == holder
        assert metric(follower, "nsprov_leader") == 0
        # Well before the lease ran out: nobody waited for it.
        assert took < duration / 2, took
    client.CoordinationV1Api(cluster.api).delete_namespaced_lease(lease, "default")
