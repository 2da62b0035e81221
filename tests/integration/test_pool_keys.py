"""Keys with a warm pool, against a real API server: what a repeated POST answers when
the key's namespace was claimed from the pool (its name is the pool's, not the key's).

Each answer is compared with the same request without a pool: a preview key (``?key=``)
is one namespace per key, extended on the next push; an Idempotency-Key whose namespace
is being deleted is a 409, never a second namespace.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from kubernetes import client

from tests.integration.conftest import Cluster
from tests.integration.service import RunningService
from tests.integration.test_pool import _service, _wait_full

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

SELECTOR = "controller.observatorium.io=namespace-provisioner"


def _post(service: RunningService, owner: str, **params: str) -> httpx.Response:
    headers = {**service.auth(owner), "Accept": "application/json"}
    key = params.pop("idempotency", None)
    if key:
        headers["Idempotency-Key"] = key
    with service.client() as http:
        return http.post("/api/v1/namespaces", params={"ttl": "10m", **params}, headers=headers)


def _live_of(core: client.CoreV1Api, owner: str) -> list[str]:
    return sorted(
        ns.metadata.name
        for ns in core.list_namespace(label_selector=SELECTOR).items
        if (ns.metadata.annotations or {}).get("nsprov.io/owner") == owner
        and not ns.metadata.deletion_timestamp
    )


def test_a_preview_key_is_one_namespace_with_a_pool_too(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    with _service(cluster.kubeconfig, tmp_path) as (service, tenant, owner, _):
        _wait_full(core, tenant, 3)
        first = _post(service, owner, key="pr-7")
        assert first.status_code == 201, first.text
        name = first.json()["namespace"]
        # The pull request's next push: the same namespace, extended.
        again = _post(service, owner, key="pr-7")
        assert again.status_code == 200, again.text
        assert again.json()["namespace"] == name
        assert _live_of(core, owner) == [name]
        with service.client() as http:
            deleted = http.delete(
                "/api/v1/namespaces", params={"key": "pr-7"}, headers=service.auth(owner)
            )
        assert deleted.status_code == 202, deleted.text
        assert deleted.json()["name"] == name
