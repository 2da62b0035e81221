"""The expiry and repair controller against the real control plane."""

from __future__ import annotations

import calendar
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import (
    CONFIGMAP_GRANT,
    SELECTOR,
    Cluster,
    delete_namespaces,
    token_kubeconfig,
)
from tests.integration.service import (
    RunningService,
    metric,
    namespace_status,
    provision,
    running_service,
    start_service,
    wait_expired_line,
)
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")
LEASE = "nsprov-test-controller"
RBAC_GROUP = "rbac.authorization.k8s.io"


@pytest.fixture(scope="module")
def service(cluster: Cluster, grants: None, tmp_path_factory) -> Iterator[RunningService]:
    args = [
        f"--cluster-role={CONFIGMAP_GRANT}",
        f"--leader-elect-lease-name={LEASE}",
        "--min-ttl=1s",  # expiry tests use ttls of seconds
    ]
    with running_service(cluster.kubeconfig, tmp_path_factory.mktemp("nsprov"), args) as running:
        wait_until(lambda: metric(running, "nsprov_leader") == 1, timeout=15, message="leader")
        yield running


# ---- expiry -------------------------------------------------------------------------------


def test_namespace_expires_on_time(service: RunningService, core: client.CoreV1Api) -> None:
    name, expires_at = provision(service, "5s")
    assert namespace_status(core, name) == "active"
    wait_until(lambda: namespace_status(core, name) == "gone", timeout=5 + 60, interval=0.2,
               message=f"{name} gone")  # fmt: skip
    line = wait_expired_line(service, name)
    lag = float(re.search(r"lag_seconds=([0-9.]+)", line).group(1))  # type: ignore[union-attr]
    assert lag < 1.0, line
    assert f"expires_at={expires_at}" in line


def test_expiry_survives_a_restart(service: RunningService, core: client.CoreV1Api) -> None:
    name, expires_at = provision(service, "3s")
    service.stop()
    try:
        # Nobody else acts on this namespace: it outlives its expiry while nsprov is down.
        wait_until(lambda: time.time() > expires_at + 1, timeout=10, message="expiry passed")
        assert namespace_status(core, name) == "active"
    finally:
        service.start_again()
    wait_until(
        lambda: namespace_status(core, name) != "active",
        timeout=15,
        message="deleted after restart",
    )
    wait_expired_line(service, name)


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
    barrier, _ = provision(service, "1s")
    wait_until(
        lambda: namespace_status(core, barrier) != "active", timeout=15, message="barrier expired"
    )
    assert namespace_status(core, foreign) == "active"
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
    name, _ = provision(service, "10m")
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
    assert metric(service, "nsprov_repairs_total") >= 2


def test_rolebinding_with_changed_roleref_is_replaced(
    service: RunningService, cluster: Cluster
) -> None:
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    name, _ = provision(service, "10m")
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


# ---- adoption of namespaces the original Go tool made ---------------------------------------


def _go_tool_namespace(core: client.CoreV1Api, label: str) -> client.V1Namespace:
    """A namespace as the original Go tool made it, the selector label and nothing else, but
    under ``label`` (its own default selector, and its objects: test_migration.py)."""
    key, value = label.split("=")
    name = f"np-gotool{secrets.token_hex(3)}"
    return core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={key: value}))
    )


def test_a_go_tool_namespace_is_adopted_but_stays_hidden_from_callers(
    service: RunningService, core: client.CoreV1Api
) -> None:
    created = _go_tool_namespace(core, SELECTOR)
    name = created.metadata.name

    def expiry_label() -> str | None:
        return (core.read_namespace(name).metadata.labels or {}).get("nsprov.io/expires-at")

    label = wait_until(expiry_label, timeout=10, message="adopted")
    # The default --adopt-ttl: 24h from creation.
    assert int(label) == calendar.timegm(created.metadata.creation_timestamp.timetuple()) + 86400
    # The log line follows the patch: the label can be seen a moment before it is written.
    wait_until(
        lambda: f"adopted namespace={name} reason=no-expiry-label" in service.log(),
        timeout=5,
        message="the adoption logged",
    )
    assert namespace_status(core, name) == "active"
    # No owner: every caller gets 404 and nothing changes.
    with service.client() as http:
        for owner in ("alice", "bob"):
            listing = http.get("/api/v1/namespaces", headers=service.auth(owner)).json()
            assert name not in [item["name"] for item in listing["items"]]
            path = f"/api/v1/namespaces/{name}"
            assert http.get(path, headers=service.auth(owner)).status_code == 404
            patched = http.patch(path, params={"ttl": "1h"}, headers=service.auth(owner))
            assert patched.status_code == 404
            assert http.delete(path, headers=service.auth(owner)).status_code == 404
    assert expiry_label() == label
    assert namespace_status(core, name) == "active"
    # Nothing inside it is "repaired": the Go tool's objects are not nsprov's.
    assert core.list_namespaced_service_account(name, label_selector=SELECTOR).items == []


def test_an_adopted_namespace_expires_after_the_adopt_ttl(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    label = "nsprov-test=adopt"
    args = [f"--selector={label}", "--adopt-ttl=5s", "--leader-elect-lease-name=nsprov-test-adopt"]
    with running_service(cluster.kubeconfig, tmp_path, args) as adopting:
        name = _go_tool_namespace(core, label).metadata.name
        try:
            wait_until(lambda: namespace_status(core, name) != "active", timeout=20,
                       message=f"{name} expired")  # fmt: skip
            wait_expired_line(adopting, name)
            assert f"adopted namespace={name} " in adopting.log()
        finally:
            delete_namespaces(core, [name])


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
    restarts_before = metric(service, "nsprov_watch_restarts_total") or 0
    plane.stop_component("kube-apiserver")
    plane.start_component("kube-apiserver")
    wait_until(lambda: (metric(service, "nsprov_watch_restarts_total") or 0) > restarts_before,
               timeout=30, message="watches restarted")  # fmt: skip
    wait_until(lambda: httpx.get(f"{service.internal_url}/readyz").status_code == 200,
               timeout=60, message="ready again")  # fmt: skip
    name, _ = provision(service, "2s")
    wait_until(
        lambda: namespace_status(core, name) != "active",
        timeout=15,
        message="expired after restart",
    )
