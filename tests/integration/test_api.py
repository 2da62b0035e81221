"""The nsprov API against the real control plane, used the way CI jobs use it."""

from __future__ import annotations

import base64
import calendar
import concurrent.futures
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import (
    CONFIGMAP_GRANT,
    NSPROV_NAMESPACE,
    SELECTOR,
    Cluster,
    live_managed_namespaces,
)
from tests.integration.service import (
    RunningService,
    kubeconfig_from,
    metric,
    problem,
    running_service,
)
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")


@pytest.fixture(scope="module")
def service(cluster: Cluster, grants: None, tmp_path_factory) -> Iterator[RunningService]:
    """A provisioner whose grant allows configmaps, with a short max TTL."""
    workdir = tmp_path_factory.mktemp("nsprov")
    with running_service(
        cluster.kubeconfig, workdir, [f"--cluster-role={CONFIGMAP_GRANT}", "--max-ttl=2h"]
    ) as running:
        yield running


def _create(service: RunningService, owner: str = "alice", **params: str) -> httpx.Response:
    with service.client() as http:
        return http.post("/api/v1/namespaces", params=params, headers=service.auth(owner))


def _kubectl(cluster: Cluster, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        [cluster.kubectl, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _tenant_core(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))


def _configmap(name: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"k": "v"})


# ---- what the kubeconfig can and cannot do ------------------------------------------------


def test_kubeconfig_is_scoped_to_its_namespace(
    service: RunningService, cluster: Cluster, tmp_path: Path
) -> None:
    response = _create(service, ttl="10m")
    assert response.status_code == 201, response.text
    name = response.headers["x-namespace"]
    assert response.headers["location"] == f"/api/v1/namespaces/{name}"
    assert response.headers["content-type"].startswith("application/yaml")
    kubeconfig = kubeconfig_from(response, tmp_path / "kubeconfig")
    parsed = yaml.safe_load(kubeconfig.read_text())
    assert parsed["contexts"][0]["context"]["namespace"] == name

    # kubectl: allowed in its namespace, Forbidden in default and cluster-wide.
    created = _kubectl(
        cluster, kubeconfig, "create", "configmap", "from-kubectl", "--from-literal=a=b"
    )
    assert created.returncode == 0, created.stderr
    listed = _kubectl(cluster, kubeconfig, "get", "configmap", "from-kubectl", "-o", "name")
    assert listed.stdout.strip() == "configmap/from-kubectl"
    elsewhere = _kubectl(cluster, kubeconfig, "get", "configmaps", "-n", "default")
    assert elsewhere.returncode != 0
    assert "Forbidden" in elsewhere.stderr
    everywhere = _kubectl(cluster, kubeconfig, "get", "configmaps", "--all-namespaces")
    assert everywhere.returncode != 0
    assert "Forbidden" in everywhere.stderr
    secrets = _kubectl(cluster, kubeconfig, "get", "secrets")
    assert secrets.returncode != 0
    assert "Forbidden" in secrets.stderr

    # The official Python client with the same kubeconfig (its CA verifies the server).
    tenant = _tenant_core(kubeconfig)
    try:
        tenant.create_namespaced_config_map(name, _configmap("from-python"))
        assert tenant.read_namespaced_config_map("from-python", name).data == {"k": "v"}
        with pytest.raises(ApiException) as forbidden:
            tenant.create_namespaced_config_map("default", _configmap("nope"))
        assert forbidden.value.status == 403
        with pytest.raises(ApiException) as cluster_wide:
            tenant.list_config_map_for_all_namespaces()
        assert cluster_wide.value.status == 403
        with pytest.raises(ApiException) as own_namespace:
            tenant.patch_namespace(name, {"metadata": {"labels": {"nsprov.io/expires-at": "1"}}})
        assert own_namespace.value.status == 403
    finally:
        tenant.api_client.close()


def test_default_empty_grant_allows_nothing(cluster: Cluster, tmp_path: Path) -> None:
    with running_service(cluster.kubeconfig, tmp_path) as service:
        response = _create(service)
        assert response.status_code == 201, response.text
        kubeconfig = kubeconfig_from(response, tmp_path / "kubeconfig")
    for verb, resource in [("get", "configmaps"), ("create", "configmaps"), ("list", "pods")]:
        answer = _kubectl(cluster, kubeconfig, "auth", "can-i", verb, resource)
        assert answer.stdout.strip() == "no", (verb, resource, answer.stdout)
    listing = _kubectl(cluster, kubeconfig, "get", "configmaps")
    assert listing.returncode != 0
    assert "Forbidden" in listing.stderr


def test_server_parameter_is_written_into_the_kubeconfig(service: RunningService) -> None:
    response = _create(service, server="https://k8s.example.com:6443")
    assert response.status_code == 201, response.text
    cluster_entry = yaml.safe_load(response.text)["clusters"][0]["cluster"]
    assert cluster_entry["server"] == "https://k8s.example.com:6443"
    assert cluster_entry["certificate-authority-data"]


def test_json_response_and_expiry(service: RunningService) -> None:
    before = time.time()
    with service.client() as http:
        response = http.post(
            "/api/v1/namespaces",
            params={"ttl": "90m"},
            headers={**service.auth(), "Accept": "application/json"},
        )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"namespace", "expiresAt", "namespaceExpiresAt", "kubeconfig"}
    assert body["namespace"] == response.headers["x-namespace"]
    assert body["expiresAt"] == response.headers["x-expires-at"]
    assert body["namespaceExpiresAt"] == response.headers["x-namespace-expires-at"]
    assert body["namespaceExpiresAt"] == body["expiresAt"]  # the token outlives the namespace
    expires = time.mktime(time.strptime(body["expiresAt"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before + 90 * 60 - 2 <= expires <= time.time() + 90 * 60 + 2
    assert yaml.safe_load(body["kubeconfig"])["current-context"] == body["namespace"]


def test_the_namespace_carries_labels_owner_and_bundle(
    service: RunningService, core: client.CoreV1Api, cluster: Cluster
) -> None:
    response = _create(service, ttl="5m")
    name = response.headers["x-namespace"]
    namespace = core.read_namespace(name)
    labels = namespace.metadata.labels
    assert labels["controller.observatorium.io"] == "namespace-provisioner"
    assert abs(int(labels["nsprov.io/expires-at"]) - (time.time() + 300)) < 5
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert namespace.metadata.annotations["nsprov.io/owner"] == "alice"
    assert service.tokens["alice"] not in json.dumps(namespace.to_dict(), default=str)
    sa = core.read_namespaced_service_account("namespace-provisioner", name)
    assert sa.metadata.labels["controller.observatorium.io"] == "namespace-provisioner"
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    binding = rbac.read_namespaced_role_binding("namespace-provisioner", name)
    assert binding.role_ref.name == CONFIGMAP_GRANT
    assert binding.subjects[0].name == "namespace-provisioner"
    assert not core.list_namespaced_secret(name).items, "no legacy token Secrets"


# ---- list, get, extend, delete --------------------------------------------------------------


def test_list_get_extend_delete(
    service: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    name = _create(service, ttl="10m").headers["x-namespace"]
    _create(service, owner="bob")
    with service.client() as http:
        listing = http.get("/api/v1/namespaces", headers=service.auth())
        assert listing.status_code == 200
        # Namespaces of the tests before may still be being deleted: listed, but not ACTIVE.
        items = listing.json()["items"]
        assert [item["name"] for item in items if item["state"] == "ACTIVE"] == [name]
        one = http.get(f"/api/v1/namespaces/{name}", headers=service.auth())
        assert one.status_code == 200
        assert one.json()["state"] == "ACTIVE"
        assert one.json()["owner"] == "alice"

        extended = http.patch(
            f"/api/v1/namespaces/{name}", params={"ttl": "2h"}, headers=service.auth()
        )
        assert extended.status_code == 200, extended.text
        label = core.read_namespace(name).metadata.labels["nsprov.io/expires-at"]
        assert abs(int(label) - (time.time() + 7200)) < 5
        kubeconfig = kubeconfig_from(extended, tmp_path / "extended")
        tenant = _tenant_core(kubeconfig)
        try:
            tenant.create_namespaced_config_map(name, _configmap("after-extend"))
        finally:
            tenant.api_client.close()
        too_long = http.patch(
            f"/api/v1/namespaces/{name}", params={"ttl": "3h"}, headers=service.auth()
        )
        assert "exceeds" in problem(too_long, 400)["detail"]
        # Without a ttl a PATCH used to reset the expiry to --ttl (1h): now it changes nothing.
        for params in ({}, {"ttl": ""}):
            no_ttl = http.patch(f"/api/v1/namespaces/{name}", params=params,
                                headers=service.auth())  # fmt: skip
            assert "needs a ttl" in problem(no_ttl, 400)["detail"]
        assert core.read_namespace(name).metadata.labels["nsprov.io/expires-at"] == label

        deleted = http.delete(f"/api/v1/namespaces/{name}", headers=service.auth())
        assert deleted.status_code == 202
        assert deleted.json() == {"name": name, "state": "MARKED_FOR_DELETION"}
    assert core.read_namespace(name).metadata.deletion_timestamp is not None


def test_alias_routes_of_the_original_provisioner(
    service: RunningService, core: client.CoreV1Api
) -> None:
    with service.client() as http:
        created = http.post("/api/v1/namespace", headers=service.auth())
        assert created.status_code == 201, created.text
        name = created.headers["x-namespace"]
        deleted = http.delete(f"/api/v1/namespace/{name}", headers=service.auth())
        assert deleted.status_code == 202
    assert core.read_namespace(name).metadata.deletion_timestamp is not None


def test_idempotency_key_returns_the_same_namespace(service: RunningService) -> None:
    key = {"Idempotency-Key": "job-1234-attempt"}
    with service.client() as http:
        first = http.post("/api/v1/namespaces", headers={**service.auth(), **key})
        again = http.post("/api/v1/namespaces", headers={**service.auth(), **key})
        other_owner = http.post("/api/v1/namespaces", headers={**service.auth("bob"), **key})
        fresh = http.post("/api/v1/namespaces", headers=service.auth())
    assert first.status_code == again.status_code == 201
    assert again.headers["x-namespace"] == first.headers["x-namespace"]
    assert again.headers["x-expires-at"] == first.headers["x-expires-at"]
    assert again.headers["idempotent-replayed"] == "true"
    assert other_owner.headers["x-namespace"] != first.headers["x-namespace"]
    assert fresh.headers["x-namespace"] != first.headers["x-namespace"]


def test_an_idempotent_replay_must_ask_for_the_same_ttl(
    service: RunningService, core: client.CoreV1Api
) -> None:
    key = {"Idempotency-Key": "job-ttl-check"}
    with service.client() as http:
        first = http.post("/api/v1/namespaces", params={"ttl": "10m"},
                          headers={**service.auth(), **key})  # fmt: skip
        assert first.status_code == 201, first.text
        name = first.headers["x-namespace"]
        before = core.read_namespace(name).metadata
        other = http.post("/api/v1/namespaces", params={"ttl": "20m"},
                          headers={**service.auth(), **key})  # fmt: skip
        detail = problem(other, 422)["detail"]
        assert "first used with ttl 10m0s, not 20m0s" in detail
        same = http.post("/api/v1/namespaces", params={"ttl": "600s"},
                         headers={**service.auth(), **key})  # fmt: skip
        assert same.status_code == 201, same.text
        assert same.headers["x-namespace"] == name
    after = core.read_namespace(name).metadata
    assert after.resource_version == before.resource_version
    assert after.annotations["nsprov.io/requested-ttl"] == "600.0s"


def test_an_idempotent_replay_of_an_expired_namespace_is_409(
    cluster: Cluster, tmp_path: Path
) -> None:
    # No controller acts on it (none here, and its label is its own): it stays, expired, as
    # it would while a deletion is pending. The DELETE below is its cleanup.
    args = ["--controller=false", "--selector=nsprov-test=expired-replay", "--min-ttl=1s"]
    key = {"Idempotency-Key": "job-expired"}
    with running_service(cluster.kubeconfig, tmp_path, args) as service, service.client() as http:
        first = http.post("/api/v1/namespaces", params={"ttl": "1s"},
                          headers={**service.auth(), **key})  # fmt: skip
        assert first.status_code == 201, first.text
        expires_at = calendar.timegm(
            time.strptime(first.headers["x-expires-at"], "%Y-%m-%dT%H:%M:%SZ")
        )
        wait_until(lambda: time.time() > expires_at, timeout=5, message="expiry passed")
        replay = http.post("/api/v1/namespaces", params={"ttl": "1s"},
                           headers={**service.auth(), **key})  # fmt: skip
        assert "expired" in problem(replay, 409)["detail"]
        name = first.headers["x-namespace"]
        assert http.delete(f"/api/v1/namespaces/{name}", headers=service.auth()).status_code == 202
        deleting = http.post("/api/v1/namespaces", params={"ttl": "1s"},
                             headers={**service.auth(), **key})  # fmt: skip
        assert "being deleted" in problem(deleting, 409)["detail"]


# ---- what nsprov refuses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing Authorization"),
        ({"Authorization": "Bearer not-a-configured-token"}, "invalid token"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "Bearer scheme"),
        ({"Authorization": "Bearer"}, "Bearer scheme"),
    ],
)
def test_bad_credentials_are_401(
    service: RunningService, core: client.CoreV1Api, headers: dict[str, str], detail: str
) -> None:
    with service.client() as http:
        for method, path in [
            ("POST", "/api/v1/namespaces"),
            ("GET", "/api/v1/namespaces"),
            ("DELETE", "/api/v1/namespaces/kube-system"),
        ]:
            response = http.request(method, path, headers=headers)
            assert detail in problem(response, 401)["detail"]
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert live_managed_namespaces(core) == []


def test_bearer_scheme_is_case_insensitive(service: RunningService) -> None:
    with service.client() as http:
        response = http.get(
            "/api/v1/namespaces", headers={"Authorization": f"bEaReR {service.tokens['alice']}"}
        )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"ttl": "soon"}, "invalid duration"),
        ({"ttl": "10"}, "missing unit"),
        ({"ttl": "-5m"}, "negative"),
        ({"ttl": "3h"}, "exceeds the maximum of 2h0m0s"),
        # A namespace dead on arrival: below --min-ttl (30s by default).
        ({"ttl": "1ns"}, "below the minimum of 30s"),
        ({"ttl": "29s"}, "below the minimum of 30s"),
        # Arabic-Indic digits: Python's \d takes them, Go's ParseDuration does not.
        ({"ttl": "\u0661h"}, "invalid duration"),
        ({"ttl": "1h", "server": "ftp://k8s.example.com"}, "absolute http(s) URL"),
        ({"server": "/relative/path"}, "absolute http(s) URL"),
        ({"server": "https://user:pw@k8s.example.com"}, "credentials"),
        # What the OpenAPI document's patterns refuse (issue 24's fuzzer): Go takes -0s, and
        # the duration parser strips spaces; an unclosed IPv6 address made urlsplit raise.
        ({"ttl": "-0s"}, "negative"),
        ({"ttl": " 1h"}, "spaces"),
        ({"server": "http://[::1"}, "absolute http(s) URL"),
        ({"server": "http://k8s.example.com:port"}, "absolute http(s) URL"),
    ],
)
def test_bad_parameters_are_400_and_create_nothing(
    service: RunningService, core: client.CoreV1Api, params: dict[str, str], detail: str
) -> None:
    response = _create(service, **params)
    assert detail in problem(response, 400)["detail"]
    assert live_managed_namespaces(core) == []


def test_unknown_routes_and_methods_are_problems(service: RunningService) -> None:
    with service.client() as http:
        assert (
            "no route"
            in problem(http.get("/api/v2/namespaces", headers=service.auth()), 404)["detail"]
        )
        not_allowed = http.put("/api/v1/namespaces", headers=service.auth())
        assert "not allowed" in problem(not_allowed, 405)["detail"]
        assert set(not_allowed.headers["allow"].split(", ")) >= {"GET", "POST"}
        item = http.post("/api/v1/namespaces/np-anything", headers=service.auth())
        problem(item, 405)
        assert set(item.headers["allow"].split(", ")) >= {"GET", "PATCH", "DELETE"}


def test_foreign_namespaces_are_404_and_untouched(
    service: RunningService, core: client.CoreV1Api
) -> None:
    bobs = _create(service, owner="bob").headers["x-namespace"]
    system_version = core.read_namespace("kube-system").metadata.resource_version
    bob_version = core.read_namespace(bobs).metadata.resource_version
    with service.client() as http:
        for name in ("kube-system", "default", bobs, "no-such-namespace", "Invalid_Name"):
            for method in ("GET", "PATCH", "DELETE"):
                response = http.request(
                    method,
                    f"/api/v1/namespaces/{name}",
                    params={"ttl": "1h"} if method == "PATCH" else None,
                    headers=service.auth(),
                )
                assert problem(response, 404)["detail"] == f"namespace {name!r} not found"
    assert core.read_namespace("kube-system").metadata.resource_version == system_version
    bob_ns = core.read_namespace(bobs)
    assert bob_ns.metadata.resource_version == bob_version
    assert bob_ns.metadata.deletion_timestamp is None


@pytest.mark.usefixtures("no_managed_namespaces")
def test_per_owner_cap_is_429(cluster: Cluster, tmp_path: Path) -> None:
    with running_service(cluster.kubeconfig, tmp_path, ["--max-namespaces-per-owner=1"]) as service:
        assert _create(service).status_code == 201
        assert "limit of 1" in problem(_create(service), 429)["detail"]
        assert _create(service, owner="bob").status_code == 201


def test_failure_mid_provisioning_leaves_no_namespace(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path, manifest_kubeconfig: Path
) -> None:
    # With the manifests' permissions (plus reading this one grant, so the grant check
    # passes) nsprov may create namespaces but not bind a ClusterRole whose rights it
    # lacks: the RoleBinding step fails after the namespace exists, so nsprov must
    # remove it again.
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    grant, reader = "nsprov-test-unbindable", "nsprov-test-read-unbindable"
    configmaps = client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get"])
    read = client.V1PolicyRule(api_groups=["rbac.authorization.k8s.io"],
                               resources=["clusterroles"], verbs=["get", "list", "watch"],
                               resource_names=[grant])  # fmt: skip
    rbac.create_cluster_role(client.V1ClusterRole(metadata=client.V1ObjectMeta(name=grant),
                                                  rules=[configmaps]))  # fmt: skip
    rbac.create_cluster_role(client.V1ClusterRole(metadata=client.V1ObjectMeta(name=reader),
                                                  rules=[read]))  # fmt: skip
    rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=reader),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                  name=reader),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="nsprov",
                                       namespace=NSPROV_NAMESPACE)],
    ))  # fmt: skip
    args = [f"--cluster-role={grant}", f"--leader-elect-namespace={NSPROV_NAMESPACE}"]
    try:
        with running_service(manifest_kubeconfig, tmp_path, args) as service:
            response = _create(service)
            body = problem(response, 500)
            assert grant in body["detail"]
            assert "not allowed" in body["detail"]
            assert body["requestId"] in service.log()
            assert "cannot read grant" not in service.log()
    finally:
        rbac.delete_cluster_role_binding(reader)
        rbac.delete_cluster_role(reader)
        rbac.delete_cluster_role(grant)
    assert live_managed_namespaces(core) == []
    wait_until(
        lambda: core.list_namespace(label_selector=SELECTOR).items == [],
        timeout=60,
        message="rolled-back namespace gone",
    )


def test_50_concurrent_creates_succeed_with_distinct_namespaces(service: RunningService) -> None:
    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=service.url, timeout=120) as http:
            return http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=service.auth())

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(create, range(50)))
    assert [r.status_code for r in responses] == [201] * 50
    assert len({r.headers["x-namespace"] for r in responses}) == 50
    log = service.log()
    assert "Connection pool is full" not in log
    assert "Traceback" not in log


# ---- internal listener ------------------------------------------------------------------------


def test_health_readiness_and_metrics(service: RunningService) -> None:
    _create(service)
    assert httpx.get(f"{service.internal_url}/healthz").text == "ok"
    assert httpx.get(f"{service.internal_url}/readyz").json() == {"ready": True}
    metrics = httpx.get(f"{service.internal_url}/metrics").text
    assert (
        'nsprov_http_requests_total{method="POST",route="/api/v1/namespaces",status="201"}'
        in metrics
    )
    assert "nsprov_provision_duration_seconds_count" in metrics
    assert 'nsprov_live_namespaces{tenant=""} 1.0' in metrics
    # The public listener serves no internal endpoints.
    with service.client() as http:
        assert http.get("/metrics").status_code == 404


def test_openapi_document_is_served(service: RunningService) -> None:
    with service.client() as http:
        document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/namespaces" in document["paths"]


def test_token_file_is_reloaded(service: RunningService) -> None:
    original = service.token_file.read_text()
    rotated = "rotated-token-for-alice-0123456789"
    try:
        service.token_file.write_text(f"alice: {rotated}\n")

        def new_token_works() -> bool:
            with service.client() as http:
                answer = http.get(
                    "/api/v1/namespaces", headers={"Authorization": f"Bearer {rotated}"}
                )
            return answer.status_code == 200

        wait_until(new_token_works, timeout=10, message="rotated token accepted")
        with service.client() as http:
            assert http.get("/api/v1/namespaces", headers=service.auth()).status_code == 401
            assert http.get("/api/v1/namespaces", headers=service.auth("bob")).status_code == 401
    finally:
        service.token_file.write_text(original)
        wait_until(
            lambda: (
                httpx.get(f"{service.url}/api/v1/namespaces", headers=service.auth()).status_code
                == 200
            ),
            timeout=10,
            message="original tokens back",
        )
    assert rotated not in service.log()
    assert service.tokens["alice"] not in service.log()


def test_unreachable_api_server_is_503_with_retry_after(
    service: RunningService, cluster: Cluster, core: client.CoreV1Api
) -> None:
    plane = cluster.require_local()
    plane.stop_component("kube-apiserver", kill=True)
    try:
        response = _create(service)
        body = problem(response, 503)
        assert "unreachable" in body["detail"]
        assert int(response.headers["retry-after"]) > 0
    finally:
        plane.start_component("kube-apiserver")
    assert live_managed_namespaces(core) == []


def test_deleting_the_namespace_revokes_its_token(
    service: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    created = _create(service)
    name = created.headers["x-namespace"]
    tenant = _tenant_core(kubeconfig_from(created, tmp_path / "kubeconfig"))
    try:
        assert tenant.list_namespaced_config_map(name).items is not None
        with service.client() as http:
            assert (
                http.delete(f"/api/v1/namespaces/{name}", headers=service.auth()).status_code == 202
            )

        def revoked() -> bool:
            try:
                tenant.list_namespaced_config_map(name)
            except ApiException as exc:
                return exc.status == 401
            return False

        # The ServiceAccount goes with the namespace, and its bound token with it.
        wait_until(revoked, timeout=60, message="token rejected with 401")
    finally:
        tenant.api_client.close()


@pytest.mark.usefixtures("no_managed_namespaces")
def test_total_cap_is_429(cluster: Cluster, tmp_path: Path) -> None:
    with running_service(cluster.kubeconfig, tmp_path, ["--max-namespaces=2"]) as service:
        assert _create(service).status_code == 201
        assert _create(service, owner="bob").status_code == 201
        assert "limit of 2 namespaces" in problem(_create(service, owner="bob"), 429)["detail"]


def test_expired_namespaces_are_not_extended_and_deleting_twice_is_fine(
    cluster: Cluster, tmp_path: Path
) -> None:
    # No controller acts on it (this service runs none, and its label is its own), so the
    # API's own rule shows. Its two DELETEs below are its cleanup.
    args = ["--controller=false", "--selector=nsprov-test=expired-extend", "--min-ttl=1s"]
    with running_service(cluster.kubeconfig, tmp_path, args) as service:
        created = _create(service, ttl="1s")
        name = created.headers["x-namespace"]
        expires_at = calendar.timegm(
            time.strptime(created.headers["x-expires-at"], "%Y-%m-%dT%H:%M:%SZ")
        )
        wait_until(lambda: time.time() > expires_at, timeout=5, message="expiry passed")
        with service.client() as http:
            late = http.patch(f"/api/v1/namespaces/{name}", params={"ttl": "1h"},
                              headers=service.auth())  # fmt: skip
            assert "has expired" in problem(late, 409)["detail"]
            for _ in range(2):
                deleted = http.delete(f"/api/v1/namespaces/{name}", headers=service.auth())
                assert deleted.status_code == 202, deleted.text


def test_extensions_stop_at_the_total_lifetime(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    # Creation time is in whole seconds and never after the POST, so a PATCH to now + 2m
    # lands strictly past creation + 2m: by at least a moment, whatever the timing.
    args = ["--controller=false", "--ttl=1m", "--max-ttl=2m", "--max-lifetime=2m"]
    with running_service(cluster.kubeconfig, tmp_path, args) as service:
        name = _create(service, ttl="1m").headers["x-namespace"]
        label = core.read_namespace(name).metadata.labels["nsprov.io/expires-at"]
        with service.client() as http:
            too_late = http.patch(f"/api/v1/namespaces/{name}", params={"ttl": "2m"},
                                  headers=service.auth())  # fmt: skip
            detail = problem(too_late, 400)["detail"]
            assert "past the total lifetime of 2m0s from creation" in detail
            assert "latest possible expiry" in detail
            assert core.read_namespace(name).metadata.labels["nsprov.io/expires-at"] == label
            within = http.patch(f"/api/v1/namespaces/{name}", params={"ttl": "1m"},
                                headers=service.auth())  # fmt: skip
            assert within.status_code == 200, within.text


def test_a_malformed_token_file_is_reported_and_a_deleted_one_revokes(
    cluster: Cluster, tmp_path: Path
) -> None:
    with running_service(cluster.kubeconfig, tmp_path, ["--controller=false"]) as service:

        def listing() -> int:
            with service.client() as http:
                return http.get("/api/v1/namespaces", headers=service.auth()).status_code

        def readyz() -> httpx.Response:
            return httpx.get(f"{service.internal_url}/readyz", timeout=5)

        good = service.token_file.read_text()
        service.token_file.write_text(good + "carol: [unclosed\n")
        wait_until(lambda: "tokenFile" in readyz().json().get("degraded", {}), timeout=5,
                   message="/readyz names the bad token file")  # fmt: skip
        ready = readyz()
        # Still ready (the last good tokens serve), and the detail says what is wrong.
        assert ready.status_code == 200
        assert "malformed" in ready.json()["degraded"]["tokenFile"]
        assert service.tokens["alice"] not in ready.text
        assert listing() == 200
        assert metric(service, "nsprov_token_file_errors_total") == 1

        service.token_file.unlink()
        wait_until(lambda: listing() == 401, timeout=5, message="deleted token file revoked")
        assert "revoked" in readyz().json()["degraded"]["tokenFile"]
        assert metric(service, "nsprov_token_file_errors_total") == 2
        assert "token file" in service.log()


def _iso_unix(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def _token_exp(kubeconfig_text: str) -> int:
    token = yaml.safe_load(kubeconfig_text)["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def test_x_expires_at_never_outlives_a_shortened_token(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    # The API server may cap TokenRequest lifetimes below what nsprov asks for (the
    # namespace's remaining life): restart it with a cap of 1h and ask for 2h.
    plane = cluster.require_local()
    apiserver = plane.components["kube-apiserver"]
    original = list(apiserver.argv)
    plane.stop_component("kube-apiserver")
    apiserver.argv.append("--service-account-max-token-expiration=1h")
    try:
        plane.start_component("kube-apiserver")
        args = ["--controller=false", "--max-ttl=3h"]
        with running_service(cluster.kubeconfig, tmp_path, args) as capped:
            created = _create(capped, ttl="2h")
            assert created.status_code == 201, created.text
            name = created.headers["x-namespace"]
            token_exp = _token_exp(created.text)
            namespace_exp = _iso_unix(created.headers["x-namespace-expires-at"])
            label = core.read_namespace(name).metadata.labels["nsprov.io/expires-at"]
            assert namespace_exp == int(label)  # the namespace lives its full ttl
            assert abs(namespace_exp - (time.time() + 7200)) < 10
            assert abs(token_exp - (time.time() + 3600)) < 10  # the API server's cap
            assert _iso_unix(created.headers["x-expires-at"]) == token_exp
            with capped.client() as http:
                extended = http.patch(
                    f"/api/v1/namespaces/{name}",
                    params={"ttl": "2h"},
                    headers={**capped.auth(), "Accept": "application/json"},
                )
            body = extended.json()
            assert _iso_unix(body["expiresAt"]) == _token_exp(body["kubeconfig"])
            assert _iso_unix(body["namespaceExpiresAt"]) > _iso_unix(body["expiresAt"]) + 3000
    finally:
        plane.stop_component("kube-apiserver")
        apiserver.argv[:] = original
        plane.start_component("kube-apiserver")


def test_x_expires_at_is_the_namespace_expiry_when_the_token_outlives_it(
    service: RunningService,
) -> None:
    created = _create(service, ttl="15m")
    assert created.status_code == 201, created.text
    assert created.headers["x-expires-at"] == created.headers["x-namespace-expires-at"]
    assert _token_exp(created.text) >= _iso_unix(created.headers["x-expires-at"])
