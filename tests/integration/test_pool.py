"""Issue 21: warm pools, and a kubeconfig that works on its first call.

Each test runs nsprov with a tenant and an owner of its own (so leftovers of other
tests never fill its pool, its caps or its metrics), with a pool on the tenant, and
plays what an attacker or an unlucky job would: replicas claiming at once, a policy
edited while namespaces wait in the pool, a caller looking for pooled namespaces, a
job using its kubeconfig the instant it has it.
"""

from __future__ import annotations

import base64
import calendar
import concurrent.futures
import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import CONFIGMAP_GRANT, Cluster
from tests.integration.service import (
    RunningService,
    kubeconfig_from,
    metric,
    problem,
    running_service,
    start_service,
)
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

POOL = "nsprov.io/pool"
READY = "nsprov.io/pool-ready"
SELECTOR = "controller.observatorium.io=namespace-provisioner"


def _policy(path: Path, tenant: str, owner: str, extra: str = "", size: int = 3) -> Path:
    path.write_text(
        f"tenants:\n  - name: {tenant}\n    match: {{token: [{owner}]}}\n"
        f"    clusterRole: {CONFIGMAP_GRANT}\n    pool: {{size: {size}, maxAge: 10m}}\n{extra}"
    )
    return path


def _names() -> tuple[str, str]:
    suffix = secrets.token_hex(3)
    return f"pool-{suffix}", f"pool-owner-{suffix}"


@contextlib.contextmanager
def _service(
    kubeconfig: Path, tmp_path: Path, extra: str = "", size: int = 3
) -> Iterator[tuple[RunningService, str, str, Path]]:
    tenant, owner = _names()
    policy = _policy(tmp_path / "policy.yaml", tenant, owner, extra, size)
    argv = [f"--policy-file={policy}", "--leader-elect=false"]
    with running_service(kubeconfig, tmp_path / "nsprov", argv, owners=(owner,)) as service:
        yield service, tenant, owner, policy


def _pooled(core: client.CoreV1Api, tenant: str, *, ready_only: bool = True) -> set[str]:
    """Pooled namespaces waiting for ``tenant``, as the API server has them."""
    selector = f"{SELECTOR},{POOL}" + (f",{READY}=true" if ready_only else "")
    return {
        ns.metadata.name
        for ns in core.list_namespace(label_selector=selector).items
        if (ns.metadata.annotations or {}).get("nsprov.io/pool-tenant") == tenant
        and not ns.metadata.deletion_timestamp
    }


def _wait_full(core: client.CoreV1Api, tenant: str, size: int, timeout: float = 30) -> set[str]:
    def full() -> set[str] | None:
        found = _pooled(core, tenant)
        return found if len(found) == size else None

    return wait_until(full, timeout=timeout, message=f"{size} ready pooled namespaces of {tenant}")


def _post(service: RunningService, owner: str, key: str | None = None) -> httpx.Response:
    headers = {**service.auth(owner), "Accept": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    with service.client() as http:
        return http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=headers)


def _metric(service: RunningService, name: str, *labels: str) -> float:
    """A metric's sum over the samples with ``labels``; 0 when it has none yet."""
    return metric(service, name, *labels) or 0.0


def _unix(timestamp: str) -> int:
    return calendar.timegm(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ"))


def _token_exp(response: httpx.Response) -> int:
    """The ``exp`` claim of the token in a create's kubeconfig."""
    config = yaml.safe_load(response.json()["kubeconfig"])
    payload = config["users"][0]["user"]["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["exp"])


def _first_call(response: httpx.Response, path: Path) -> int:
    """The status of the kubeconfig's first call: list ConfigMaps in its namespace."""
    api = kube_config.new_client_from_config(str(kubeconfig_from(response, path)))
    try:
        client.CoreV1Api(api).list_namespaced_config_map(response.json()["namespace"])
    except ApiException as exc:
        return int(exc.status)
    finally:
        api.close()
    return 200


def test_a_pooled_post_claims_a_ready_namespace_whose_kubeconfig_works_at_once(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    with _service(cluster.kubeconfig, tmp_path) as (service, tenant, owner, _):
        ready = _wait_full(core, tenant, 3)
        assert _metric(service, "nsprov_pool_ready", f'tenant="{tenant}"') == 3
        # Made whole in advance: its ServiceAccount and RoleBinding exist, but no token.
        some = next(iter(ready))
        assert core.read_namespaced_service_account("namespace-provisioner", some)
        rbac = client.RbacAuthorizationV1Api(cluster.api)
        assert rbac.read_namespaced_role_binding("namespace-provisioner", some).role_ref.name == (
            CONFIGMAP_GRANT
        )
        response = _post(service, owner)
        assert response.status_code == 201, response.text
        name = response.json()["namespace"]
        assert name in ready
        assert _first_call(response, tmp_path / "kubeconfig") == 200
        claimed = core.read_namespace(name).metadata
        assert claimed.annotations["nsprov.io/owner"] == owner
        assert claimed.labels["nsprov.io/tenant"] == tenant
        assert POOL not in claimed.labels
        assert READY not in claimed.labels
        assert _metric(service, "nsprov_pool_claims_total", 'result="hit"') == 1
        # The pool refills in the background.
        refilled = _wait_full(core, tenant, 3)
        assert name not in refilled
        # The caller sees its namespace and nothing of the pool.
        with service.client() as http:
            listed = http.get("/api/v1/namespaces", headers=service.auth(owner)).json()["items"]
            assert [item["name"] for item in listed] == [name]
            for pooled in refilled:
                problem(http.get(f"/api/v1/namespaces/{pooled}", headers=service.auth(owner)), 404)
                problem(
                    http.delete(f"/api/v1/namespaces/{pooled}", headers=service.auth(owner)), 404
                )
        assert _pooled(core, tenant) == refilled


def test_pooled_namespaces_count_in_no_callers_caps(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path, no_managed_namespaces: None
) -> None:
    caps = "    maxNamespaces: 1\n    maxNamespacesPerOwner: 1\n"
    with _service(cluster.kubeconfig, tmp_path, caps) as (service, tenant, owner, _):
        _wait_full(core, tenant, 3)
        first = _post(service, owner)
        assert first.status_code == 201, first.text
        problem(_post(service, owner), 429)
        _wait_full(core, tenant, 3)


def test_two_replicas_claiming_at_once_never_hand_out_the_same_namespace(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    tenant, owner = _names()
    policy = _policy(tmp_path / "policy.yaml", tenant, owner, size=12)
    lease = f"--leader-elect-lease-name=pool-{secrets.token_hex(3)}"
    argv = [f"--policy-file={policy}", lease]
    replicas = [
        start_service(cluster.kubeconfig, tmp_path / f"r{i}", argv, owners=(owner,))
        for i in range(2)
    ]
    try:
        for replica in replicas[1:]:
            # The same token on both, so either may answer the same caller.
            replica.tokens[owner] = replicas[0].tokens[owner]
            replica.token_file.write_text(f"{owner}: {replicas[0].tokens[owner]}\n")
            wait_until(
                lambda r=replica: (
                    httpx.get(f"{r.url}/api/v1/namespaces", headers=r.auth(owner)).status_code
                    == 200
                ),
                timeout=10,
                message="the second replica reads the shared token",
            )
        ready = _wait_full(core, tenant, 12, timeout=60)
        wait_until(
            lambda: all(
                _metric(r, "nsprov_pool_ready", f'tenant="{tenant}"') == 12 for r in replicas
            ),
            timeout=10,
            message="both replicas' caches see the full pool",
        )
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda i: _post(replicas[i % 2], owner), range(24)))
        assert [r.status_code for r in responses] == [201] * 24, [r.text for r in responses]
        names = [r.json()["namespace"] for r in responses]
        assert len(set(names)) == 24
        hits = sum(_metric(r, "nsprov_pool_claims_total", 'result="hit"') for r in replicas)
        # Every claim a hit; of the 12 ready before the burst, most were claimed (a request
        # that lost a few races to other claimers makes its namespace instead).
        assert hits >= len(set(names) & ready) >= 6
        for name in names:
            assert core.read_namespace(name).metadata.annotations["nsprov.io/owner"] == owner
    finally:
        for replica in replicas:
            replica.stop()


def test_a_stale_profiles_pooled_namespaces_are_deleted_never_handed_out(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    with _service(cluster.kubeconfig, tmp_path, size=2) as (service, tenant, owner, policy):
        old = _wait_full(core, tenant, 2)
        # The template changes: a label every namespace of the tenant gets from now on.
        _policy(policy, tenant, owner, "    labels: {cost-centre: cc-42}\n", size=2)
        wait_until(
            lambda: _metric(service, "nsprov_policy_reloads_total", 'result="success"') >= 2,
            timeout=10,
            message="policy reloaded",
        )
        response = _post(service, owner)
        assert response.status_code == 201, response.text
        name = response.json()["namespace"]
        assert name not in old
        assert core.read_namespace(name).metadata.labels["cost-centre"] == "cc-42"
        wait_until(
            lambda: not _pooled(core, tenant, ready_only=False) & old,
            timeout=10,
            message="stale pooled namespaces deleted",
        )
        new = _wait_full(core, tenant, 2)
        assert not new & old
        assert _metric(service, "nsprov_pool_discarded_total", 'reason="stale"') >= 2


def test_a_pooled_namespace_is_repaired_not_adopted(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    with _service(cluster.kubeconfig, tmp_path, size=1) as (service, tenant, _, _):
        (name,) = _wait_full(core, tenant, 1)
        rbac = client.RbacAuthorizationV1Api(cluster.api)
        rbac.delete_namespaced_role_binding("namespace-provisioner", name)

        def repaired() -> bool:
            try:
                rbac.read_namespaced_role_binding("namespace-provisioner", name)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        wait_until(repaired, timeout=15, message="pooled namespace's RoleBinding repaired")
        assert "adopted namespace" not in service.log()


def test_a_keyed_post_claims_once_and_replays_the_same_namespace(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    with _service(cluster.kubeconfig, tmp_path) as (service, tenant, owner, _):
        _wait_full(core, tenant, 3)
        # More POSTs with the key than ready namespaces: some claim, some make one under the
        # key's name; one namespace stays, every POST answers it.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: _post(service, owner, key="job-1"), range(8)))
        assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
        assert _metric(service, "nsprov_pool_claims_total", 'result="hit"') >= 1
        fresh = [r for r in responses if "idempotent-replayed" not in r.headers]
        assert len(fresh) == 1
        names = {r.json()["namespace"] for r in responses}
        assert len(names) == 1
        (name,) = names
        with service.client() as http:
            listed = http.get("/api/v1/namespaces", headers=service.auth(owner)).json()["items"]
            # The losers of the race rolled back what they claimed: at most being deleted.
            live = [item["name"] for item in listed if item["state"] == "ACTIVE"]
            assert live == [name]
            # What the Action's post step asks when main's answer was lost.
            found = http.get(
                "/api/v1/namespaces",
                params={"idempotencyKey": "job-1"},
                headers=service.auth(owner),
            ).json()["items"]
        assert [item["name"] for item in found] == [name]
        again = _post(service, owner, key="job-1")
        assert again.status_code == 201
        assert again.json()["namespace"] == name
        assert again.headers["idempotent-replayed"] == "true"


def test_every_kubeconfig_works_on_its_first_call_without_a_pool(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    with _service(cluster.kubeconfig, tmp_path, size=0) as (service, _, owner, _):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:

            def one(i: int) -> int:
                response = _post(service, owner)
                assert response.status_code == 201, response.text
                return _first_call(response, tmp_path / f"kubeconfig-{i}")

            statuses = list(pool.map(one, range(40)))
        assert statuses == [200] * 40
        assert _metric(service, "nsprov_first_call_unready_total") == 0
        assert _metric(service, "nsprov_first_call_wait_seconds_count") == 40


def test_tokens_minted_ahead_work_at_once_and_leave_with_their_namespace(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """--pool-tokens-ahead on two replicas: each holds a token for every ready pooled
    namespace, minted for the tenant's default ttl; a claim of that ttl hands out its own
    replica's, which works on the first call and ends within 60 s of the namespace's
    expiry, as a token minted at the claim would; a claim of another ttl mints its own; a
    token whose namespace the other replica claimed is dropped (each replica's count of
    held tokens is the ready pool's size again once it is refilled, never more)."""
    tenant, owner = _names()
    size = 6
    # The tenant's default ttl is what _post asks (10m).
    policy = _policy(tmp_path / "policy.yaml", tenant, owner, "    ttl: 10m\n", size=size)
    lease = f"--leader-elect-lease-name=pool-{secrets.token_hex(3)}"
    argv = [f"--policy-file={policy}", lease, "--pool-tokens-ahead=true"]
    replicas = [
        start_service(cluster.kubeconfig, tmp_path / f"r{i}", argv, owners=(owner,))
        for i in range(2)
    ]
    try:
        replicas[1].tokens[owner] = replicas[0].tokens[owner]
        replicas[1].token_file.write_text(f"{owner}: {replicas[0].tokens[owner]}\n")
        wait_until(
            lambda: httpx.get(f"{replicas[1].url}/api/v1/namespaces",
                              headers=replicas[1].auth(owner)).status_code == 200,
            timeout=10, message="the second replica reads the shared token",
        )  # fmt: skip

        def all_held() -> bool:
            _wait_full(core, tenant, size, timeout=60)
            return all(_metric(r, "nsprov_pool_tokens_held") == size for r in replicas)

        wait_until(all_held, timeout=60, message="both replicas hold a token per ready one")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda i: _post(replicas[i % 2], owner), range(4)))
        assert [r.status_code for r in responses] == [201] * 4, [r.text for r in responses]
        names = {r.json()["namespace"] for r in responses}
        assert len(names) == 4
        for i, response in enumerate(responses):
            assert _first_call(response, tmp_path / f"kubeconfig-{i}") == 200
            expires_at = _unix(response.json()["namespaceExpiresAt"])
            assert expires_at <= _token_exp(response) <= expires_at + 61
        ahead = sum(_metric(r, "nsprov_pool_tokens_total", 'minted="ahead"') for r in replicas)
        assert ahead == 4
        # Another ttl than the one the tokens were minted for: minted alongside the claim.
        with replicas[0].client() as http:
            other = http.post(
                "/api/v1/namespaces",
                params={"ttl": "20m"},
                headers={**replicas[0].auth(owner), "Accept": "application/json"},
            )
        assert other.status_code == 201, other.text
        alongside = _metric(replicas[0], "nsprov_pool_tokens_total", 'minted="alongside"')
        assert alongside == 1
        expires_at = _unix(other.json()["namespaceExpiresAt"])
        assert expires_at <= _token_exp(other) <= expires_at + 61
        names.add(other.json()["namespace"])
        wait_until(all_held, timeout=60, message="the claimed ones' tokens dropped, refilled")
        held_names = _pooled(core, tenant)
        assert not names & held_names
        # Deleting a claimed namespace ends its kubeconfig before the token's own expiry.
        gone = responses[0]
        with replicas[0].client() as http:
            name = gone.json()["namespace"]
            deleted = http.delete(f"/api/v1/namespaces/{name}", headers=replicas[0].auth(owner))
            assert deleted.status_code == 202
        wait_until(lambda: _first_call(gone, tmp_path / "kubeconfig-gone") == 401,
                   timeout=60, message="the deleted namespace's token refused")  # fmt: skip
    finally:
        for replica in replicas:
            replica.stop()
