"""A tenant's namespace as GET and /metrics show it: tenant, quota hard and used, by tenant.

nsprov runs as a real process with a policy file; the quota's status is filled in
by the real resourcequota controller of the test control plane's
kube-controller-manager, and the configmaps are created with the kubeconfig
nsprov handed out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, config

from tests.integration.conftest import CONFIGMAP_GRANT, Cluster
from tests.integration.service import RunningService, kubeconfig_from, running_service
from tests.support import wait_until

POLICY = f"""
tenants:
  - name: team-a
    match: {{token: alice}}
    clusterRole: {CONFIGMAP_GRANT}
    template:
      resourceQuota: {{hard: {{pods: "3", configmaps: "10"}}}}
  - name: plain
    match: {{token: bob}}
"""


@pytest.fixture
def service(
    cluster: Cluster, grants: None, clean_namespaces: None, tmp_path: Path
) -> Iterator[RunningService]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with running_service(cluster.kubeconfig, tmp_path, [f"--policy-file={policy}"]) as running:
        yield running


def _provision(service: RunningService, owner: str) -> httpx.Response:
    with service.client() as http:
        response = http.post(
            "/api/v1/namespaces",
            params={"ttl": "10m"},
            headers={**service.auth(owner), "Accept": "application/json"},
        )
    assert response.status_code == 201, response.text
    return response


def _get(service: RunningService, owner: str, name: str) -> dict[str, Any]:
    with service.client() as http:
        response = http.get(f"/api/v1/namespaces/{name}", headers=service.auth(owner))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _samples(service: RunningService) -> dict[str, float]:
    """Every sample of /metrics, by its name and labels as the exposition writes them."""
    text = httpx.get(f"{service.internal_url}/metrics", timeout=5).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def _samples_once(
    service: RunningService, key: str, wanted: Callable[[float], bool]
) -> dict[str, float] | None:
    """All samples, once the sample ``key`` is there and ``wanted``; else None."""
    samples = _samples(service)
    return samples if key in samples and wanted(samples[key]) else None


def _create_configmap(core: client.CoreV1Api, namespace: str, name: str) -> None:
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"k": "v"})
    core.create_namespaced_config_map(namespace, body)


def test_get_and_metrics_show_the_tenant_and_its_quota(
    service: RunningService, tmp_path: Path
) -> None:
    created = _provision(service, "alice")
    name = created.headers["x-namespace"]
    body = _get(service, "alice", name)
    assert body["tenant"] == "team-a"
    assert body["quota"]["hard"] == {"pods": "3", "configmaps": "10"}

    kubeconfig = kubeconfig_from(created, tmp_path / "kubeconfig")
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        tenant = client.CoreV1Api(api)
        # At once: nsprov hands the kubeconfig out only once kube-controller-manager has
        # counted the new quota (until then the API server refuses what it covers with
        # "status unknown for quota", and a job's first apply would fail).
        for i in range(2):
            _create_configmap(tenant, name, f"made-{i}")
    finally:
        api.close()

    def counted_configmaps() -> dict[str, Any] | None:
        # The quota controller recounts on every change; kube-root-ca.crt counts too.
        quota: dict[str, Any] = _get(service, "alice", name)["quota"]
        return quota if int(quota["used"].get("configmaps", "0")) >= 2 else None

    counted = wait_until(counted_configmaps, timeout=30, message="quota.used.configmaps >= 2")
    assert counted["hard"] == {"pods": "3", "configmaps": "10"}
    assert counted["used"]["pods"] == "0"

    with service.client() as http:
        listed = http.get("/api/v1/namespaces", headers=service.auth("alice")).json()["items"]
    assert [(item["name"], item["tenant"]) for item in listed] == [(name, "team-a")]
    assert "quota" not in listed[0]

    used = 'nsprov_tenant_quota_used{resource="configmaps",tenant="team-a"}'
    samples = wait_until(lambda: _samples_once(service, used, lambda v: v >= 2), timeout=30,
                         message=f"{used} >= 2")  # fmt: skip
    assert samples['nsprov_live_namespaces{tenant="team-a"}'] == 1
    assert samples['nsprov_tenant_quota_hard{resource="pods",tenant="team-a"}'] == 3
    assert samples['nsprov_tenant_quota_hard{resource="configmaps",tenant="team-a"}'] == 10
    assert samples['nsprov_tenant_quota_used{resource="pods",tenant="team-a"}'] == 0
    # Owners are never a label.
    text = httpx.get(f"{service.internal_url}/metrics", timeout=5).text
    assert not re.search(r"^nsprov_\w+\{[^}]*owner=", text, re.MULTILINE)


def test_a_tenant_without_a_quota_shows_null_and_no_quota_series(service: RunningService) -> None:
    name = _provision(service, "bob").headers["x-namespace"]
    body = _get(service, "bob", name)
    assert body["tenant"] == "plain"
    assert body["quota"] is None
    live = 'nsprov_live_namespaces{tenant="plain"}'
    samples = wait_until(lambda: _samples_once(service, live, lambda v: v == 1), timeout=10,
                         message=f"{live} == 1")  # fmt: skip
    assert samples['nsprov_live_namespaces{tenant=""}'] == 0
    assert not [key for key in samples if "tenant_quota" in key and 'tenant="plain"' in key]
    # Deleted: no longer live, and its tenant's series goes (tenants come from live namespaces).
    with service.client() as http:
        assert http.delete(f"/api/v1/namespaces/{name}", headers=service.auth("bob")).is_success
    wait_until(
        lambda: 'nsprov_live_namespaces{tenant="plain"}' not in _samples(service),
        timeout=10, message="tenant plain's live series gone",
    )  # fmt: skip
