"""A grant that turns unsafe is not bound again by the controller's repairs.

Provisioning refuses (503) a grant ClusterRole that has become unsafe; the
controller must not hand it out either, by re-creating a RoleBinding to it that an
admin deleted (to cut the tenant off, say). It binds it again once it is safe.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import Cluster
from tests.integration.service import RunningService, kubeconfig_from, running_service
from tests.support import wait_until

ROLE = "nsprov-test-turning-grant"
SAFE = [client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get"])]
UNSAFE = [
    *SAFE,
    client.V1PolicyRule(api_groups=[""], resources=["resourcequotas"], verbs=["update"]),
]
BINDING = "namespace-provisioner"
POLICY = f"""
tenants:
  - name: team
    match: {{token: alice}}
    clusterRole: {ROLE}
"""


def _set_rules(rbac: client.RbacAuthorizationV1Api, rules: list[client.V1PolicyRule]) -> None:
    rbac.replace_cluster_role(
        ROLE, client.V1ClusterRole(metadata=client.V1ObjectMeta(name=ROLE), rules=rules)
    )


@pytest.fixture
def rbac(cluster: Cluster) -> Iterator[client.RbacAuthorizationV1Api]:
    api = client.RbacAuthorizationV1Api(cluster.api)
    with contextlib.suppress(ApiException):
        api.delete_cluster_role(ROLE)
    api.create_cluster_role(
        client.V1ClusterRole(metadata=client.V1ObjectMeta(name=ROLE), rules=SAFE)
    )
    yield api
    api.delete_cluster_role(ROLE)


@pytest.fixture
def service(
    cluster: Cluster, rbac: client.RbacAuthorizationV1Api, clean_namespaces: None, tmp_path: Path
) -> Iterator[RunningService]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with running_service(cluster.kubeconfig, tmp_path, [f"--policy-file={policy}"]) as running:
        yield running


def _post(service: RunningService) -> httpx.Response:
    with service.client() as http:
        return http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=service.auth())


def _binding(rbac: client.RbacAuthorizationV1Api, namespace: str) -> client.V1RoleBinding | None:
    try:
        return rbac.read_namespaced_role_binding(BINDING, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_the_controller_does_not_bind_a_grant_that_turned_unsafe(
    service: RunningService, rbac: client.RbacAuthorizationV1Api
) -> None:
    created = _post(service)
    assert created.status_code == 201, created.text
    name = created.headers["x-namespace"]
    assert _binding(rbac, name) is not None

    _set_rules(rbac, UNSAFE)
    wait_until(lambda: _post(service).status_code == 503, timeout=10,
               message="provisioning with the unsafe grant refused")  # fmt: skip
    # An admin cuts the tenant off: nsprov must not hand the unsafe grant back.
    rbac.delete_namespaced_role_binding(BINDING, name)
    deadline = time.monotonic() + 4.0  # the controller repairs within about a second
    while time.monotonic() < deadline:
        assert _binding(rbac, name) is None, "the unsafe grant was bound again"
        time.sleep(0.2)

    # Safe again: bound again.
    _set_rules(rbac, SAFE)
    binding = wait_until(lambda: _binding(rbac, name), timeout=45,
                         message="RoleBinding re-created once the grant is safe")  # fmt: skip
    assert binding.role_ref.name == ROLE


def test_the_built_in_view_role_is_a_usable_grant(
    cluster: Cluster, rbac: client.RbacAuthorizationV1Api, clean_namespaces: None, tmp_path: Path
) -> None:
    """DESIGN's example, `clusterRole: [ci-deployer, view]`: view aggregates other roles, and
    is judged by the read-only rules aggregated into it, so a tenant may have it."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"tenants:\n  - name: team\n    match: {{token: alice}}\n    clusterRole: [{ROLE}, view]\n"
    )
    with running_service(
        cluster.kubeconfig, tmp_path, [f"--policy-file={policy}"], owners=["alice"]
    ) as service:
        with service.client() as http:
            created = http.post("/api/v1/namespaces", headers=service.auth("alice"))
        assert created.status_code == 201, created.text
        name = created.headers["x-namespace"]
        binding = rbac.read_namespaced_role_binding("namespace-provisioner-2", name)
        assert binding.role_ref.name == "view"
        api = config.new_client_from_config(
            config_file=str(kubeconfig_from(created, tmp_path / "kubeconfig"))
        )
        try:
            # view's aggregated rules: the tenant reads pods (wait for RBAC to see the binding).
            tenant = client.CoreV1Api(api)
            wait_until(
                lambda: tenant.list_namespaced_pod(name).items == [],
                timeout=10, message="the tenant may list pods through view",
            )  # fmt: skip
        finally:
            api.close()
