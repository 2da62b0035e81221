"""The expiry and repair controller against the real control plane."""

from __future__ import annotations

import calendar
import re
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import (
    CONFIGMAP_GRANT,
    Cluster,
    token_kubeconfig,
)
from tests.integration.service import RunningService, running_service, start_service
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")
LEASE = "nsprov-test-controller"
RBAC_GROUP = "rbac.authorization.k8s.io"


@pytest.fixture(scope="module")
def service(cluster: Cluster, grants: None, tmp_path_factory) -> Iterator[RunningService]:
    args = [f"--cluster-role={CONFIGMAP_GRANT}", f"--leader-elect-lease-name={LEASE}"]
    with running_service(cluster.kubeconfig, tmp_path_factory.mktemp("nsprov"), args) as running:
        wait_until(lambda: _metric(running, "nsprov_leader") == 1, timeout=15, message="leader")
        yield running


def _create(service: RunningService, ttl: str) -> tuple[str, int]:
    with service.client() as http:
        response = http.post("/api/v1/namespaces", params={"ttl": ttl}, headers=service.auth())
    assert response.status_code == 201, response.text
    expires = calendar.timegm(time.strptime(response.headers["x-expires-at"], "%Y-%m-%dT%H:%M:%SZ"))
    return response.headers["x-namespace"], expires


def _metric(service: RunningService, name: str) -> float | None:
    try:
        text = httpx.get(f"{service.internal_url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    total = None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def _status(core: client.CoreV1Api, name: str) -> str:
    try:
        namespace = core.read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return "gone"
        raise
    return "deleting" if namespace.metadata.deletion_timestamp else "active"


def _expired_lines(service: RunningService, name: str) -> list[str]:
    return [
        line
        for line in service.log().splitlines()
        if f"deleted namespace={name} " in line and "reason=expired" in line
    ]


# ---- expiry -------------------------------------------------------------------------------


def test_namespace_expires_on_time(service: RunningService, core: client.CoreV1Api) -> None:
    name, expires_at = _create(service, "5s")
    assert _status(core, name) == "active"
    wait_until(lambda: _status(core, name) == "gone", timeout=5 + 60, interval=0.2,
               message=f"{name} gone")  # fmt: skip
    (line,) = _expired_lines(service, name)
    lag = float(re.search(r"lag_seconds=([0-9.]+)", line).group(1))  # type: ignore[union-attr]
    assert lag < 1.0, line
    assert f"expires_at={expires_at}" in line


def test_expiry_survives_a_restart(service: RunningService, core: client.CoreV1Api) -> None:
    name, expires_at = _create(service, "3s")
    service.stop()
    try:
        # Nobody else acts on this namespace: it outlives its expiry while nsprov is down.
        wait_until(lambda: time.time() > expires_at + 1, timeout=10, message="expiry passed")
        assert _status(core, name) == "active"
    finally:
        service.start_again()
    wait_until(lambda: _status(core, name) != "active", timeout=15, message="deleted after restart")
    assert len(_expired_lines(service, name)) == 1


def test_unlabelled_namespaces_are_never_deleted(
    service: RunningService, core: client.CoreV1Api, make_namespace
) -> None:
    foreign = make_namespace()
    core.patch_namespace(
        foreign,
        {
            "metadata": {
                "labels": {"nsprov.io/expires-at": "1", "controller.observatorium.io": "other"},
                "annotations": {"nsprov.io/owner": "alice"},
            }
        },
    )
    # A managed namespace that expires after the foreign one was labelled: once it is
    # gone, the controller has had every chance to act on the foreign one.
    barrier, _ = _create(service, "1s")
    wait_until(lambda: _status(core, barrier) != "active", timeout=15, message="barrier expired")
    assert _status(core, foreign) == "active"
    assert not [line for line in service.log().splitlines() if foreign in line]


# ---- repair -------------------------------------------------------------------------------


def _role_binding(rbac: client.RbacAuthorizationV1Api, namespace: str):
    try:
        return rbac.read_namespaced_role_binding("namespace-provisioner", namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_deleted_rolebinding_and_serviceaccount_come_back(
    service: RunningService, cluster: Cluster, core: client.CoreV1Api
) -> None:
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    name, _ = _create(service, "10m")
    rbac.delete_namespaced_role_binding("namespace-provisioner", name)
    wait_until(lambda: _role_binding(rbac, name), timeout=2, interval=0.05,
               message="RoleBinding recreated")  # fmt: skip

    old_uid = core.read_namespaced_service_account("namespace-provisioner", name).metadata.uid

    def sa_recreated() -> bool:
        try:
            sa = core.read_namespaced_service_account("namespace-provisioner", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return sa.metadata.uid != old_uid

    core.delete_namespaced_service_account("namespace-provisioner", name)
    wait_until(sa_recreated, timeout=2, interval=0.05, message="ServiceAccount recreated")
    assert _metric(service, "nsprov_repairs_total") >= 2


def test_rolebinding_with_changed_roleref_is_replaced(
    service: RunningService, cluster: Cluster
) -> None:
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    name, _ = _create(service, "10m")
    binding = rbac.read_namespaced_role_binding("namespace-provisioner", name)
    rbac.delete_namespaced_role_binding("namespace-provisioner", name)
    binding.metadata = client.V1ObjectMeta(
        name="namespace-provisioner", labels=binding.metadata.labels
    )
    binding.role_ref = client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole", name="admin")
    rbac.create_namespaced_role_binding(name, binding)

    def right_again() -> bool:
        current = _role_binding(rbac, name)
        return current is not None and current.role_ref.name == CONFIGMAP_GRANT

    wait_until(right_again, timeout=2, interval=0.05, message="roleRef restored")


# ---- readiness, API server restarts, leadership --------------------------------------------


def test_not_ready_until_caches_sync(
    cluster: Cluster, core: client.CoreV1Api, make_namespace, tmp_path: Path
) -> None:
    # The default ServiceAccount of a fresh namespace may read /version but list nothing:
    # the API server is reachable, the caches can never sync.
    namespace = make_namespace()
    wait_until(
        lambda: core.list_namespaced_service_account(namespace).items, timeout=30, message="SA"
    )
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    token = core.create_namespaced_service_account_token("default", namespace, request).status.token
    kubeconfig = token_kubeconfig(cluster, token, tmp_path / "kubeconfig")
    with pytest.raises(AssertionError, match="readyz"):
        start_service(kubeconfig, tmp_path / "svc", ready_timeout=10)
    log = next((tmp_path / "svc").glob("nsprov-*.log")).read_text()
    assert "forbidden" in log.lower()


def test_watch_survives_an_api_server_restart(
    service: RunningService, cluster: Cluster, core: client.CoreV1Api
) -> None:
    plane = cluster.require_local()
    restarts_before = _metric(service, "nsprov_watch_restarts_total") or 0
    plane.stop_component("kube-apiserver")
    plane.start_component("kube-apiserver")
    wait_until(lambda: (_metric(service, "nsprov_watch_restarts_total") or 0) > restarts_before,
               timeout=30, message="watches restarted")  # fmt: skip
    wait_until(lambda: httpx.get(f"{service.internal_url}/readyz").status_code == 200,
               timeout=60, message="ready again")  # fmt: skip
    name, _ = _create(service, "2s")
    wait_until(lambda: _status(core, name) != "active", timeout=15, message="expired after restart")


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
    ]
    with (
        running_service(cluster.kubeconfig, tmp_path / "a", args) as first,
        running_service(cluster.kubeconfig, tmp_path / "b", args) as second,
    ):
        replicas = (first, second)
        wait_until(lambda: sum(_metric(r, "nsprov_leader") or 0 for r in replicas) == 1,
                   timeout=15, message="one leader")  # fmt: skip
        leader = next(r for r in replicas if _metric(r, "nsprov_leader") == 1)
        follower = second if leader is first else first
        assert _lease_holder(cluster, lease)

        name, _ = _create(follower, "2s")  # every replica serves the API
        wait_until(lambda: _status(core, name) != "active", timeout=15, message="expired")
        assert len(_expired_lines(leader, name)) == 1
        assert _expired_lines(follower, name) == []

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
        wait_until(lambda: _metric(follower, "nsprov_leader") == 1, timeout=limit, interval=0.1,
                   message="follower took over")  # fmt: skip
        took = time.monotonic() - stopped_at
        assert _lease_holder(cluster, lease) not in ("", holder)
        assert took <= limit

        name, _ = _create(follower, "1s")
        wait_until(lambda: _status(core, name) != "active", timeout=15, message="new leader acts")
        assert len(_expired_lines(follower, name)) == 1
    client.CoordinationV1Api(cluster.api).delete_namespaced_lease(lease, "default")
