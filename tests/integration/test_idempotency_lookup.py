"""GET /api/v1/namespaces?idempotencyKey=: finding what a POST made when its answer was lost.

The GitHub Action's post step relies on this when main was cancelled (or its
response lost) after the POST reached the service: all it knows is the key.
What a hostile caller must not get from it: another owner's namespace, or a
namespace nsprov did not make with that key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client

from nsprov.provision import bundle
from tests.integration.conftest import CONFIGMAP_GRANT, Cluster, delete_namespaces
from tests.integration.service import RunningService, problem, running_service

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

PREFIX = "np"  # the service's default --prefix


@pytest.fixture(scope="module")
def service(cluster: Cluster, grants: None, tmp_path_factory) -> Iterator[RunningService]:
    with running_service(
        cluster.kubeconfig, tmp_path_factory.mktemp("nsprov"), [f"--cluster-role={CONFIGMAP_GRANT}"]
    ) as running:
        yield running


def _create(service: RunningService, owner: str, key: str) -> str:
    with service.client() as http:
        response = http.post(
            "/api/v1/namespaces",
            params={"ttl": "10m"},
            headers={**service.auth(owner), "Idempotency-Key": key},
        )
    assert response.status_code == 201, response.text
    return response.headers["x-namespace"]


def _lookup(service: RunningService, owner: str, key: str) -> httpx.Response:
    with service.client() as http:
        return http.get(
            "/api/v1/namespaces", params={"idempotencyKey": key}, headers=service.auth(owner)
        )


def _found(service: RunningService, owner: str, key: str) -> list[dict[str, Any]]:
    response = _lookup(service, owner, key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["idempotencyKey"] == key, "echoed, so a client can tell it from the plain list"
    items: list[dict[str, Any]] = body["items"]
    return items


def test_the_owner_finds_its_namespace_by_key_and_no_one_else_does(
    service: RunningService,
) -> None:
    key = "run-4711-attempt-1"
    alices = _create(service, "alice", key)
    _create(service, "alice", "another-run")  # a second namespace of alice's, not this key

    [found] = _found(service, "alice", key)
    assert found["name"] == alices
    assert found["owner"] == "alice"
    assert found["state"] == "ACTIVE"
    assert found["expiresAt"]

    # Same key, other owner: nothing (and certainly not alice's namespace).
    assert _found(service, "bob", key) == []
    bobs = _create(service, "bob", key)
    assert bobs != alices
    assert [item["name"] for item in _found(service, "bob", key)] == [bobs]
    assert [item["name"] for item in _found(service, "alice", key)] == [alices]

    assert _found(service, "alice", "never-used") == []


def test_a_deleted_namespace_is_no_longer_found(service: RunningService) -> None:
    key = "run-deleted"
    name = _create(service, "alice", key)
    with service.client() as http:
        assert http.delete(f"/api/v1/namespaces/{name}", headers=service.auth()).status_code == 202
    assert _found(service, "alice", key) == []


def test_a_namespace_at_the_derived_name_that_nsprov_did_not_make_is_not_found(
    service: RunningService, core: client.CoreV1Api
) -> None:
    # Someone who can create namespaces squats the name alice's key would derive.
    key = "squatted"
    name, digest = bundle.idempotent_name(PREFIX, "alice", key)
    squatter = client.V1Namespace(
        metadata=client.V1ObjectMeta(name=name, labels={bundle.IDEMPOTENCY_LABEL: digest})
    )
    core.create_namespace(squatter)
    try:
        assert _found(service, "alice", key) == []
    finally:
        delete_namespaces(core, [name])


# Non-ASCII: the OpenAPI document's rule for the header it looks up (issue 24).
@pytest.mark.parametrize("key", ["", "   ", "k" * 256, "cl\u00e9"])
def test_a_bad_key_is_400(service: RunningService, key: str) -> None:
    assert (
        "idempotencyKey must be 1 to 255 printable ASCII characters, not all of them spaces"
        in problem(_lookup(service, "alice", key), 400)["detail"]
    )


def test_the_lookup_needs_credentials(service: RunningService) -> None:
    key = "run-anonymous"
    _create(service, "alice", key)
    with service.client() as http:
        response = http.get("/api/v1/namespaces", params={"idempotencyKey": key})
    problem(response, 401)
