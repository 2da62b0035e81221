"""Keys with a warm pool, against a real API server: what a repeated POST answers when
the key's namespace was claimed from the pool (its name is the pool's, not the key's).

Each answer is compared with the same request without a pool: a preview key (``?key=``)
is one namespace per key, extended on the next push; an Idempotency-Key whose namespace
is being deleted is a 409, never a second namespace.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import Cluster
from tests.integration.service import RunningService, problem
from tests.integration.test_pool import _service, _wait_full
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

NEVER = "example.com/never"
HOLDER = "held"
SELECTOR = "controller.observatorium.io=namespace-provisioner"


@pytest.fixture
def held(core: client.CoreV1Api) -> Iterator[list[str]]:
    """Namespaces a test keeps Terminating with a finalizer'd ConfigMap; released at the end."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(ApiException):
            core.patch_namespaced_config_map(HOLDER, name, {"metadata": {"finalizers": None}})


def _post(service: RunningService, owner: str, **params: str) -> httpx.Response:
    headers = {**service.auth(owner), "Accept": "application/json"}
    key = params.pop("idempotency", None)
    if key:
        headers["Idempotency-Key"] = key
    with service.client() as http:
        return http.post("/api/v1/namespaces", params={"ttl": "10m", **params}, headers=headers)


@contextlib.contextmanager
def _racing_at_cap_one(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path, keys: list[str]
) -> Iterator[tuple[RunningService, str, list[httpx.Response]]]:
    """nsprov with a full pool of 3 and an owner allowed one namespace, and one POST per
    entry of ``keys`` (its Idempotency-Key), all at once: the service, the owner, the answers."""
    caps = "    maxNamespacesPerOwner: 1\n"
    with _service(cluster.kubeconfig, tmp_path, caps) as (service, tenant, owner, _):
        _wait_full(core, tenant, 3)
        with concurrent.futures.ThreadPoolExecutor(len(keys)) as pool:
            responses = list(pool.map(lambda k: _post(service, owner, idempotency=k), keys))
        yield service, owner, responses


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


def test_a_replay_while_the_claimed_namespace_is_deleted_is_409_not_a_second_one(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path, held: list[str]
) -> None:
    with _service(cluster.kubeconfig, tmp_path) as (service, tenant, owner, _):
        ready = _wait_full(core, tenant, 3)
        first = _post(service, owner, idempotency="job-9")
        assert first.status_code == 201, first.text
        name = first.json()["namespace"]
        assert name in ready, "claimed from the pool"
        # The job ends it (or its TTL does); something in it keeps it Terminating a while.
        held.append(name)
        core.create_namespaced_config_map(
            name,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=HOLDER, finalizers=[NEVER]), data={"k": "v"}
            ),
        )
        with service.client() as http:
            gone = http.delete(f"/api/v1/namespaces/{name}", headers=service.auth(owner))
        assert gone.status_code == 202, gone.text
        wait_until(
            lambda: core.read_namespace(name).metadata.deletion_timestamp,
            timeout=10,
            message="the namespace Terminating",
        )
        # A retry of the POST with its key: as without a pool, 409 while it is going.
        replay = _post(service, owner, idempotency="job-9")
        assert "being deleted" in problem(replay, 409)["detail"]
        assert _live_of(core, owner) == []


def test_racing_keys_at_the_cap_never_hold_more_than_it(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    # Two keys' retries racing at cap 1: at most one namespace stays, and each answer is
    # 201 (that one), 429, or 409 (a replay of one its first request rolled back).
    keys = ["a", "b"] * 4
    with _racing_at_cap_one(cluster, core, tmp_path, keys) as (service, owner, responses):
        odd = [r.text for r in responses if r.status_code not in (201, 409, 429)]
        assert not odd, service.log()[-6000:] + "\n".join(odd)
        names = {r.json()["namespace"] for r in responses if r.status_code == 201}
        seen = [
            (k, r.status_code, r.json().get("namespace"), r.headers.get("idempotent-replayed"))
            for k, r in zip(keys, responses, strict=True)
        ]
        logged = [line for line in service.log().splitlines() if "namespace=" in line]
        why = f"{seen}\nlive={_live_of(core, owner)}\n" + "\n".join(logged[-40:])
        assert len(names) <= 1, why
        assert _live_of(core, owner) == sorted(names), why


def test_concurrent_posts_with_one_key_at_the_cap_all_get_its_one_namespace(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    # An owner allowed one namespace, a job's retries with one key racing: some claim,
    # some create under the key's name. They are one request: one namespace, never a 429.
    with _racing_at_cap_one(cluster, core, tmp_path, ["j"] * 8) as (service, owner, responses):
        odd = [r.text for r in responses if r.status_code != 201]
        assert not odd, "\n".join(odd) + service.log()[-4000:]
        names = {r.json()["namespace"] for r in responses}
        assert len(names) == 1
        assert _live_of(core, owner) == sorted(names)
