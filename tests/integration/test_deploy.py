"""k8s/ deploys nsprov with least privilege, and that privilege is enough (and no more)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from nsprov.provision.grant import unsafe_reasons
from tests.integration.conftest import (
    EMPTY_GRANT,
    NSPROV_NAMESPACE,
    REPO,
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
    wait_expired_line,
)
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")


def _kubectl(cluster: Cluster, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        [cluster.kubectl, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def rendered(cluster: Cluster) -> dict[tuple[str, str], dict[str, Any]]:
    """k8s/ as kustomize renders it, by (kind, name)."""
    result = _kubectl(cluster, cluster.kubeconfig, "kustomize", str(REPO / "k8s"))
    assert result.returncode == 0, result.stderr
    return {
        (doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(result.stdout)
    }


@pytest.fixture
def deployed_service(manifest_kubeconfig: Path, tmp_path: Path) -> Iterator[RunningService]:
    """nsprov run with exactly the permissions k8s/ gives its ServiceAccount."""
    args = [f"--leader-elect-namespace={NSPROV_NAMESPACE}", "--min-ttl=1s"]
    with running_service(manifest_kubeconfig, tmp_path, args) as service:
        yield service


# ---- the manifests as written -------------------------------------------------------------


def test_server_side_dry_run_accepts_the_manifests(
    cluster: Cluster, manifest_kubeconfig: Path
) -> None:
    result = _kubectl(
        cluster, cluster.kubeconfig, "apply", "--dry-run=server", "-k", str(REPO / "k8s")
    )
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/nsprov" in result.stdout


def test_service_clusterrole_is_least_privilege(rendered) -> None:
    rules = rendered[("ClusterRole", "nsprov")]["rules"]
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert "escalate" not in rule["verbs"]
        assert "secrets" not in rule["resources"]
        if "clusterroles" in rule["resources"]:
            # Every ClusterRole is read (a policy may name any as a tenant's grant, and each
            # is checked); binding is for the grant only.
            if "bind" in rule["verbs"]:
                assert rule["resourceNames"] == [EMPTY_GRANT]
                assert rule["verbs"] == ["bind"]
            else:
                assert set(rule["verbs"]) == {"get", "list", "watch"}
        # Tokens, deletions and updates for nsprov's own objects only (RoleBindings: one per
        # grant of a tenant, namespace-provisioner, -2, ... -8).
        own = "serviceaccounts/token" in rule["resources"] or {"delete", "update"} & set(
            rule["verbs"]
        )
        if own and rule["resources"] != ["namespaces"]:
            assert rule["resourceNames"], rule
            names = [
                re.fullmatch(r"namespace-provisioner(-[2-8])?", n) for n in rule["resourceNames"]
            ]
            assert all(names), rule
    assert rendered[("ClusterRole", EMPTY_GRANT)]["rules"] == []
    lease_rules = rendered[("Role", "nsprov-leader-election")]["rules"]
    assert {r["resources"][0] for r in lease_rules} == {"leases"}
    # The stuck-namespace Event: create, in default (where Events about a Namespace live).
    events = rendered[("Role", "nsprov-events")]
    assert events["metadata"]["namespace"] == "default"
    assert events["rules"] == [
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]}
    ]


def test_deployment_is_hardened(rendered) -> None:
    deployment = rendered[("Deployment", "nsprov")]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # The token Secret is root-owned: the non-root user reads it through fsGroup.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    tokens = next(v for v in pod["volumes"] if v["name"] == "tokens")
    assert tokens["secret"]["defaultMode"] & 0o040
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["resources"]["limits"]["memory"]
    assert not any("token" in arg for arg in container.get("args", []))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NSPROV_TOKEN_FILE"].startswith("/etc/nsprov/tokens/")
    # The Lease identity survives a container restart (a restarted leader leads again at once).
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The API Service exposes only the API; metrics and probes have a Service of their own.
    api, metrics = rendered[("Service", "nsprov")], rendered[("Service", "nsprov-metrics")]
    assert [(p["name"], p["targetPort"]) for p in api["spec"]["ports"]] == [("http", "http")]
    assert [(p["name"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [
        ("metrics", "metrics")
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for service in (api, metrics):
        assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9090}
    assert rendered[("PodDisruptionBudget", "nsprov")]["spec"]["minAvailable"] == 1


def test_network_policy_opens_the_api_to_all_and_metrics_to_monitoring_only(rendered) -> None:
    """What the policy says, read back; no enforcing CNI here proves what it blocks.

    The probes use the metrics port, which only monitoring namespaces may reach: they
    come from the node, which NetworkPolicy always lets through.
    """
    policy = rendered[("NetworkPolicy", "nsprov")]["spec"]
    deployment = rendered[("Deployment", "nsprov")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["podSelector"]["matchLabels"]  # nsprov's pods, not the whole namespace
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    api, metrics = policy["ingress"]
    assert "from" not in api  # from anywhere; an operator narrows it
    assert api["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {
        "nsprov.io/monitoring": "true"}}}]  # fmt: skip
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["port"] == "metrics"
    egress = [(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]]
    assert egress == [(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")]
    assert not any("to" in rule for rule in policy["egress"])


@pytest.mark.parametrize("source", ["deploy/overlay", "k8s/examples/grant-configmaps.yaml"])
def test_example_grants_pass_the_safety_check(cluster: Cluster, source: str) -> None:
    path = REPO / source
    if path.is_dir():
        result = _kubectl(cluster, cluster.kubeconfig, "kustomize", str(path))
        assert result.returncode == 0, result.stderr
        docs = list(yaml.safe_load_all(result.stdout))
    else:
        docs = list(yaml.safe_load_all(path.read_text()))
    (grant,) = [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == EMPTY_GRANT
    ]
    assert grant["rules"], "an example grant that grants nothing teaches nothing"
    assert unsafe_reasons(grant) == []


# ---- the manifests' identity at work ------------------------------------------------------


@pytest.mark.usefixtures("configmap_grant")
def test_manifest_identity_creates_uses_extends_deletes_and_expires(
    deployed_service: RunningService, cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    service = deployed_service
    assert "cannot read grant" not in service.log()
    with service.client() as http:
        created = http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=service.auth())
        assert created.status_code == 201, created.text
        name = created.headers["x-namespace"]
        kubeconfig = kubeconfig_from(created, tmp_path / "kubeconfig")
        used = _kubectl(cluster, kubeconfig, "create", "configmap", "ci", "--from-literal=a=b")
        assert used.returncode == 0, used.stderr

        extended = http.patch(f"/api/v1/namespaces/{name}", params={"ttl": "1h"},
                              headers=service.auth())  # fmt: skip
        assert extended.status_code == 200, extended.text
        deleted = http.delete(f"/api/v1/namespaces/{name}", headers=service.auth())
        assert deleted.status_code == 202

        short = http.post("/api/v1/namespaces", params={"ttl": "2s"}, headers=service.auth())
        assert short.status_code == 201, short.text
    expiring = short.headers["x-namespace"]
    wait_until(lambda: expiring not in live_managed_namespaces(core), timeout=15,
               message="expired by the manifest identity's controller")  # fmt: skip
    wait_expired_line(service, expiring)
    assert name not in live_managed_namespaces(core)


def test_manifest_identity_may_ask_the_authorizer_about_a_new_service_account(
    manifest_kubeconfig: Path, core: client.CoreV1Api
) -> None:
    """The first-call check (issue 21) asks SubjectAccessReviews: k8s/ allows nsprov that."""
    api = config.new_client_from_config(str(manifest_kubeconfig))
    try:
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user="system:serviceaccount:np-x:namespace-provisioner",
                resource_attributes=client.V1ResourceAttributes(
                    namespace="np-x", verb="get", resource="configmaps"
                ),
            )
        )
        answer = client.AuthorizationV1Api(api).create_subject_access_review(review)
    finally:
        api.close()
    assert answer.status.allowed is False  # asked and answered: not refused (403) to ask


def test_manifest_identity_provisions_and_repairs_a_tenants_bounds(
    cluster: Cluster, core: client.CoreV1Api, manifest_kubeconfig: Path, tmp_path: Path
) -> None:
    """k8s/'s RBAC and admission policies let nsprov create, watch and put back the quota,
    limits and network policy of a tenant's template (and nothing more: see the other tests)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "tenants:\n"
        "  - name: team\n"
        "    match: {token: '*'}\n"
        "    template:\n"
        "      resourceQuota: {hard: {pods: '2'}}\n"
        "      limitRange: {default: {cpu: 200m}}\n"
        "      networkPolicy: isolated\n"
    )
    args = [f"--leader-elect-namespace={NSPROV_NAMESPACE}", f"--policy-file={policy}"]
    networking = client.NetworkingV1Api(cluster.api)
    with running_service(manifest_kubeconfig, tmp_path / "svc", args) as service:
        with service.client() as http:
            created = http.post("/api/v1/namespaces", headers=service.auth())
        assert created.status_code == 201, created.text
        name = created.headers["x-namespace"]
        quota = core.read_namespaced_resource_quota("namespace-provisioner", name)
        assert quota.spec.hard == {"pods": "2"}
        assert core.read_namespaced_limit_range("namespace-provisioner", name).spec.limits
        assert networking.read_namespaced_network_policy("namespace-provisioner", name)
        core.delete_namespaced_resource_quota("namespace-provisioner", name)

        def repaired() -> bool:
            try:
                core.read_namespaced_resource_quota("namespace-provisioner", name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                return False
            return True

        wait_until(repaired, timeout=5, message="the quota put back by the manifest identity")
        with service.client() as http:
            assert (
                http.delete(f"/api/v1/namespaces/{name}", headers=service.auth()).status_code == 202
            )


def test_manifest_identity_cannot_escalate(
    deployed_service: RunningService, cluster: Cluster, manifest_kubeconfig: Path,
    core: client.CoreV1Api,
) -> None:  # fmt: skip
    def can_i(*args: str) -> str:
        return _kubectl(cluster, manifest_kubeconfig, "auth", "can-i", *args).stdout.strip()

    assert can_i("get", "secrets", "--namespace", "default") == "no"
    assert can_i("list", "secrets", "--all-namespaces") == "no"
    assert can_i("bind", "clusterroles/cluster-admin") == "no"
    assert can_i("bind", f"clusterroles/{EMPTY_GRANT}") == "yes"
    assert can_i("escalate", "clusterroles") == "no"
    assert can_i("create", "clusterrolebindings") == "no"
    assert can_i("*", "*") == "no"

    with deployed_service.client() as http:
        created = http.post("/api/v1/namespaces", headers=deployed_service.auth())
        name = created.headers["x-namespace"]
        rolebinding = _kubectl(
            cluster, manifest_kubeconfig, "create", "rolebinding", "escalate",
            "--clusterrole=cluster-admin", f"--serviceaccount={name}:namespace-provisioner",
            "--namespace", name,
        )  # fmt: skip
        assert rolebinding.returncode != 0
        assert "forbidden" in rolebinding.stderr.lower()

        version = core.read_namespace("kube-system").metadata.resource_version
        refused = http.delete("/api/v1/namespaces/kube-system", headers=deployed_service.auth())
        problem(refused, 404)
    assert core.read_namespace("kube-system").metadata.resource_version == version


def test_manifest_identity_mints_tokens_and_deletes_bindings_only_for_its_own(
    cluster: Cluster, manifest_kubeconfig: Path
) -> None:
    """Measured before: nsprov's identity could mint a token for any ServiceAccount."""
    nsprov = f"system:serviceaccount:{NSPROV_NAMESPACE}:nsprov"

    def can_i(*args: str) -> str:
        answer = _kubectl(cluster, cluster.kubeconfig, "auth", "can-i", f"--as={nsprov}", *args)
        return answer.stdout.strip()

    token = ("create", "--subresource=token")
    assert can_i(*token, "serviceaccounts/default", "-n", "kube-system") == "no"
    assert can_i(*token, "serviceaccounts/namespace-controller", "-n", "kube-system") == "no"
    assert can_i(*token, "serviceaccounts/nsprov", "-n", NSPROV_NAMESPACE) == "no"
    assert can_i(*token, "serviceaccounts/namespace-provisioner", "-n", "np-abc") == "yes"
    assert can_i("delete", "rolebindings/namespace-provisioner", "-n", "np-abc") == "yes"
    assert can_i("delete", "rolebindings/nsprov-leader-election", "-n", NSPROV_NAMESPACE) == "no"
    assert can_i("delete", "rolebindings", "-n", "kube-system") == "no"

    # And the API server agrees when nsprov's identity actually asks.
    as_nsprov = client.CoreV1Api(config.new_client_from_config(str(manifest_kubeconfig)))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    try:
        with pytest.raises(ApiException) as refused:
            as_nsprov.create_namespaced_service_account_token("default", "kube-system", request)
        assert refused.value.status == 403
    finally:
        as_nsprov.api_client.close()


# ---- the grant, checked while nsprov runs ---------------------------------------------------


def _post(service: RunningService) -> httpx.Response:
    with service.client() as http:
        return http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=service.auth())


def _refused(service: RunningService) -> httpx.Response | None:
    response = _post(service)
    return response if response.status_code == 503 else None


def _provisions(service: RunningService) -> bool:
    return _post(service).status_code == 201


def test_grant_made_unsafe_while_running_pauses_provisioning_until_fixed(
    deployed_service: RunningService, cluster: Cluster
) -> None:
    service = deployed_service
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    first = _post(service)
    assert first.status_code == 201, first.text
    name = first.headers["x-namespace"]
    unsafe = {"apiGroups": [""], "resources": ["namespaces/finalize"], "verbs": ["update"]}
    rbac.patch_cluster_role(EMPTY_GRANT, {"rules": [unsafe]})
    try:
        response = wait_until(lambda: _refused(service), timeout=5, interval=0.1,
                              message="POST refused after the grant became unsafe")  # fmt: skip
        detail = problem(response, 503)["detail"]
        assert EMPTY_GRANT in detail, detail
        assert "edit Namespaces" in detail, detail
        assert int(response.headers["retry-after"]) > 0
        assert metric(service, "nsprov_grant_usable") == 0
        with service.client() as http:
            extend = http.patch(f"/api/v1/namespaces/{name}", params={"ttl": "1h"},
                                headers=service.auth())  # fmt: skip
            assert EMPTY_GRANT in problem(extend, 503)["detail"]
            # Reading and deleting what exists goes on.
            assert http.get(f"/api/v1/namespaces/{name}", headers=service.auth()).status_code == 200
            deleted = http.delete(f"/api/v1/namespaces/{name}", headers=service.auth())
            assert deleted.status_code == 202, deleted.text
    finally:
        rbac.patch_cluster_role(EMPTY_GRANT, {"rules": []})
    wait_until(lambda: _provisions(service), timeout=5, message="POST works once fixed")
    assert metric(service, "nsprov_grant_usable") == 1


def test_grant_deleted_while_running_pauses_provisioning_until_it_is_back(
    deployed_service: RunningService, cluster: Cluster
) -> None:
    service = deployed_service
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    assert _provisions(service)
    rbac.delete_cluster_role(EMPTY_GRANT)
    try:
        response = wait_until(lambda: _refused(service), timeout=5, interval=0.1,
                              message="POST refused without a grant")  # fmt: skip
        detail = problem(response, 503)["detail"]
        assert f"grant ClusterRole {EMPTY_GRANT!r} does not exist" in detail, detail
    finally:
        rbac.create_cluster_role(
            client.V1ClusterRole(metadata=client.V1ObjectMeta(name=EMPTY_GRANT), rules=[])
        )
    wait_until(lambda: _provisions(service), timeout=5, message="POST works once it is back")


def test_a_grant_nsprov_may_not_bind_is_never_handed_out(
    cluster: Cluster, manifest_kubeconfig: Path, tmp_path: Path
) -> None:
    """k8s/ lets nsprov read every ClusterRole (to judge each tenant's grant) but bind only
    those it names: another --cluster-role is refused by Kubernetes, and the half-made
    namespace is rolled back, so the caller gets no kubeconfig."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    core = client.CoreV1Api(cluster.api)
    other = "nsprov-test-unbindable-grant"
    # A rule nsprov does not hold itself: without `bind` on the role, Kubernetes' escalation
    # check refuses the RoleBinding (an empty role could be bound by anyone).
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
    rbac.create_cluster_role(
        client.V1ClusterRole(metadata=client.V1ObjectMeta(name=other), rules=[rule])
    )
    args = [f"--leader-elect-namespace={NSPROV_NAMESPACE}", f"--cluster-role={other}"]
    try:
        with running_service(manifest_kubeconfig, tmp_path, args) as service:
            response = _post(service)
            detail = problem(response, 500)["detail"]
            assert f"could not bind ClusterRole {other!r}" in detail, detail
            assert "not allowed" in detail
            live = core.list_namespace(label_selector=SELECTOR).items
            kept = [
                ns.metadata.name
                for ns in live
                if not ns.metadata.deletion_timestamp
                and (ns.metadata.annotations or {}).get("nsprov.io/cluster-role") == other
            ]
            assert kept == []
    finally:
        rbac.delete_cluster_role(other)


def test_allow_unsafe_grant_still_provisions_with_a_grant_made_unsafe(
    manifest_kubeconfig: Path, cluster: Cluster, tmp_path: Path
) -> None:
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    args = [f"--leader-elect-namespace={NSPROV_NAMESPACE}", "--allow-unsafe-grant=true"]
    with running_service(manifest_kubeconfig, tmp_path, args) as service:
        unsafe = {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["delete"]}
        rbac.patch_cluster_role(EMPTY_GRANT, {"rules": [unsafe]})
        try:
            wait_until(lambda: "allowed by --allow-unsafe-grant" in service.log(), timeout=5,
                       message="the unsafe grant noticed")  # fmt: skip
            assert _provisions(service)
        finally:
            rbac.patch_cluster_role(EMPTY_GRANT, {"rules": []})


def _serve(cluster: Cluster, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tokens = tmp_path / "tokens"
    tokens.write_text("ci: 0123456789abcdef0123456789abcdef\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NSPROV_")},
        "NSPROV_TOKEN_FILE": str(tokens),
    }
    argv = [sys.executable, "-m", "nsprov.cli", "serve", f"--kubeconfig={cluster.kubeconfig}",
            "--listen=127.0.0.1:0", "--listen-internal=127.0.0.1:0", *args]  # fmt: skip
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_unsafe_grant_is_refused_at_start(cluster: Cluster, tmp_path: Path) -> None:
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    unsafe = "nsprov-test-unsafe-grant"
    rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=client.V1ObjectMeta(name=unsafe),
            rules=[
                client.V1PolicyRule(api_groups=[""], resources=["namespaces"], verbs=["patch"]),
                client.V1PolicyRule(
                    api_groups=["rbac.authorization.k8s.io"],
                    resources=["rolebindings"],
                    verbs=["create"],
                ),
                client.V1PolicyRule(api_groups=["apps"], resources=["*"], verbs=["get"]),
            ],
        )
    )
    try:
        refused = _serve(cluster, tmp_path, f"--cluster-role={unsafe}")
        assert refused.returncode == 2
        (line,) = refused.stderr.strip().splitlines()[-1:]
        for reason in ("edit Namespaces", "change RBAC", "wildcard", "--allow-unsafe-grant"):
            assert reason in line, line
    finally:
        rbac.delete_cluster_role(unsafe)


# ---- a Lease nsprov may not use ------------------------------------------------------------


def test_a_lease_nsprov_may_not_use_is_named_in_readyz_metrics_and_once_in_the_log(
    manifest_kubeconfig: Path, tmp_path: Path
) -> None:
    """--leader-elect-namespace left at its default outside a pod: ``default``.

    k8s/ lets nsprov use a Lease in its own namespace only, so every replica run
    like this is a follower forever and nothing expires. Before, /readyz said ready
    with no word of it and the log repeated the same warning every retry.
    """
    # A 3 s lease retries every 0.5 s: many failed calls within a few seconds.
    with running_service(
        manifest_kubeconfig, tmp_path, ["--leader-elect-lease-duration=3s"]
    ) as service:
        wait_until(
            lambda: (metric(service, "nsprov_leader_election_errors_total") or 0) >= 6,
            timeout=15,
            message="failed lease calls counted",
        )
        ready = httpx.get(f"{service.internal_url}/readyz", timeout=5)
        assert ready.status_code == 200  # it still serves the API
        problem_ = ready.json()["degraded"]["leaderElection"]
        assert "lease default/nsprov-controller: forbidden" in problem_, problem_
        assert "--leader-elect-namespace" in problem_
        metrics = httpx.get(f"{service.internal_url}/metrics", timeout=5).text
        assert 'nsprov_leader_election_errors_total{reason="forbidden"}' in metrics
        assert metric(service, "nsprov_leader") == 0
        said = [line for line in service.log().splitlines() if "nsprov-controller" in line]
        assert len(said) == 1, said
        assert "WARNING" in said[0]
