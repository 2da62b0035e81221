"""Strangers cannot grow nsprov through its caches (issue 19), on the real control plane.

The attack as measured: ServiceAccounts carrying nsprov's selector label, each
of about 2.5 MB (180,000 imagePullSecrets), in a namespace nsprov does not
manage. nsprov kept every labelled object of the kinds it watches, whole: its
RSS grew 46 MiB per object, and every replica crash-looped at its 256 Mi limit.

The admission policy now refuses such objects to everyone but nsprov and break
glass; these tests make them as the admin (system:masters, exempt), so what is
tested is the caches: objects outside managed namespaces are dropped on arrival
and counted, ServiceAccounts arrive as metadata only, and lists are streamed,
so the bound holds whatever got past admission.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from nsprov.core.kube import Kube
from tests.integration.conftest import (
    EMPTY_GRANT,
    NSPROV_NAMESPACE,
    SELECTOR,
    Cluster,
)
from tests.integration.service import (
    RunningService,
    metric,
    namespace_status,
    provision,
    running_service,
    wait_expired_line,
)
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

SELECTOR_KEY, SELECTOR_VALUE = SELECTOR.split("=")
RBAC_GROUP = "rbac.authorization.k8s.io"
BUNDLE = "namespace-provisioner"
FOREIGN = "nsprov_foreign_objects_ignored_total"
MIB = 1024 * 1024
# The issue's target: an attack costs nsprov less than this much memory.
RSS_BOUND_MIB = 30
ACCOUNTS, BINDINGS = 25, 2


@pytest.fixture(scope="module")
def service(manifest_kubeconfig: Path, tmp_path_factory) -> Iterator[RunningService]:
    """nsprov with exactly the identity k8s/ gives it (no Role rights any more)."""
    args = [
        f"--leader-elect-namespace={NSPROV_NAMESPACE}",
        "--min-ttl=1s",
    ]
    workdir = tmp_path_factory.mktemp("nsprov")
    with running_service(manifest_kubeconfig, workdir, args) as running:
        wait_until(lambda: metric(running, "nsprov_leader") == 1, timeout=15, message="leader")
        yield running


@pytest.fixture
def admin(cluster: Cluster) -> Kube:
    """The admin identity through nsprov's plain-JSON client: megabyte bodies without models."""
    return Kube(cluster.api, timeout=60)


def _rss_mib(service: RunningService) -> float:
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _settled_rss_mib(service: RunningService) -> float:
    """RSS once nsprov has done ordinary work: one namespace provisioned and read back."""
    name, _ = provision(service, "1h")
    with service.client() as http:
        assert http.get(f"/api/v1/namespaces/{name}", headers=service.auth()).status_code == 200
    return _rss_mib(service)


def _heavy_service_account(name: str) -> dict[str, Any]:
    """About 1 MB of JSON, labelled as nsprov's: 36,000 imagePullSecrets."""
    pulls = [{"name": f"pull-secret-{i:06d}"} for i in range(36_000)]
    return {
        "metadata": {"name": name, "labels": {SELECTOR_KEY: SELECTOR_VALUE}},
        "imagePullSecrets": pulls,
    }


def _heavy_role_binding(name: str) -> dict[str, Any]:
    """About 1 MB of JSON, labelled as nsprov's: 14,000 subjects."""
    subjects = [{"kind": "User", "apiGroup": RBAC_GROUP, "name": f"user-{i:06d}"}
                for i in range(14_000)]  # fmt: skip
    return {
        "metadata": {"name": name, "labels": {SELECTOR_KEY: SELECTOR_VALUE}},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": EMPTY_GRANT},
        "subjects": subjects,
    }


def test_labelled_megabytes_in_an_unrelated_namespace_cost_nsprov_no_memory(
    service: RunningService, admin: Kube, core: client.CoreV1Api, make_namespace
) -> None:
    before = _settled_rss_mib(service)
    foreign_before = metric(service, FOREIGN) or 0
    unrelated = make_namespace()
    for i in range(ACCOUNTS):
        admin.post(f"/api/v1/namespaces/{unrelated}/serviceaccounts",
                   _heavy_service_account(f"heavy-{i}"))  # fmt: skip
    for i in range(BINDINGS):
        admin.post(f"/apis/{RBAC_GROUP}/v1/namespaces/{unrelated}/rolebindings",
                   _heavy_role_binding(f"heavy-{i}"))  # fmt: skip
    arrived = ACCOUNTS + BINDINGS
    wait_until(lambda: (metric(service, FOREIGN) or 0) - foreign_before >= arrived, timeout=60,
               message="every labelled object dropped and counted")  # fmt: skip

    # Ordinary work goes on: a namespace is provisioned and expires on time.
    expiring, _ = provision(service, "3s")
    wait_until(lambda: namespace_status(core, expiring) != "active", timeout=20,
               message=f"{expiring} expired")  # fmt: skip
    wait_expired_line(service, expiring)
    during = _settled_rss_mib(service)
    assert during - before < RSS_BOUND_MIB, (before, during)

    # A replica started with them there: its first lists bring every one of them.
    service.stop()
    service.start_again()
    wait_until(lambda: metric(service, "nsprov_leader") == 1, timeout=15, message="leader")
    wait_until(lambda: (metric(service, FOREIGN) or 0) >= arrived, timeout=30,
               message="dropped and counted again after a restart")  # fmt: skip
    restarted = _settled_rss_mib(service)
    print(f"RSS MiB: before {before:.1f}, with {arrived} labelled ~1 MB objects {during:.1f}, "
          f"restarted with them {restarted:.1f}")  # fmt: skip
    assert restarted - before < RSS_BOUND_MIB, (before, restarted)
    expiring, _ = provision(service, "2s")
    wait_until(lambda: namespace_status(core, expiring) != "active", timeout=20,
               message=f"{expiring} expired after the restart")  # fmt: skip


def test_an_object_that_arrived_before_its_namespace_was_nsprovs_is_not_lost(
    service: RunningService, admin: Kube, cluster: Cluster, core: client.CoreV1Api,
    make_namespace,
) -> None:  # fmt: skip
    """The namespaced caches keep only objects in managed namespaces; two watches keep no
    order, so an object can arrive first. Here the object comes long before: a labelled
    RoleBinding with a subject too many, in a namespace an admin then makes nsprov's (as
    a break-glass adoption would). Dropped on arrival, it is fetched again when the
    namespace appears, and the controller repairs it; lost, the controller would try to
    create a binding that exists (409) and leave the extra subject in place.
    """
    name = make_namespace()
    subject = {"kind": "ServiceAccount", "name": BUNDLE, "namespace": name}
    intruder = {"kind": "ServiceAccount", "name": "default", "namespace": name}
    labelled = {"name": BUNDLE, "labels": {SELECTOR_KEY: SELECTOR_VALUE}}
    admin.post(f"/api/v1/namespaces/{name}/serviceaccounts", {"metadata": labelled})
    foreign_before = metric(service, FOREIGN) or 0
    admin.post(f"/apis/{RBAC_GROUP}/v1/namespaces/{name}/rolebindings", {
        "metadata": labelled,
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": EMPTY_GRANT},
        "subjects": [subject, intruder],
    })  # fmt: skip
    wait_until(lambda: (metric(service, FOREIGN) or 0) > foreign_before, timeout=10,
               message="the binding dropped on arrival")  # fmt: skip

    expires_at = int(time.time()) + 3600
    core.patch_namespace(name, {"metadata": {
        "labels": {SELECTOR_KEY: SELECTOR_VALUE, "nsprov.io/expires-at": str(expires_at)},
        "annotations": {"nsprov.io/owner": "alice"},
    }})  # fmt: skip
    rbac = client.RbacAuthorizationV1Api(cluster.api)

    def repaired() -> bool:
        binding = rbac.read_namespaced_role_binding(BUNDLE, name)
        return [s.name for s in binding.subjects or ()] == [BUNDLE]

    wait_until(repaired, timeout=20, interval=0.2, message="the extra subject removed by nsprov")
    assert f"repaired namespace={name} kind=rolebinding" in service.log()
    # The namespace is nsprov's now, and it can see it like any other.
    with service.client() as http:
        assert http.get(f"/api/v1/namespaces/{name}", headers=service.auth()).status_code == 200
