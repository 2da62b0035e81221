"""Gone on time, whatever the tenant does inside: k8s/'s tenant policies on the real API server.

The attacker is the tenant itself, acting with the kubeconfig nsprov handed it. Before
these policies, a tenant with ``maxNamespaces: 2`` left five namespaces stuck in
Terminating (three 900 KiB ConfigMaps each, ``finalizers: [example.com/never]``), one
three minutes past its expiry; a pod could ask for a grace period of years; a Service
could take ``externalIPs: [8.8.8.8]`` (CVE-2020-8554). The policies (nsprov-finalizers,
nsprov-grace, nsprov-services) are applied from k8s/ (``manifest_kubeconfig``), nsprov
runs with exactly k8s/'s identity and a policy file with two tenants: ``strict`` (the
defaults: 30 s, ClusterIP, no extra finalizers) and ``roomy`` (2m, LoadBalancer,
``example.com/cleanup``). Creates that would pass are dry runs where the object would
otherwise linger (a pod with a finalizer no controller here removes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import EMPTY_GRANT, NSPROV_NAMESPACE, Cluster
from tests.integration.service import RunningService, kubeconfig_from, running_service
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

POLICY = """
defaults:
  clusterRole: namespace-provisioner-grant
tenants:
  - name: strict
    match: {token: alice}
  - name: roomy
    match: {token: bob}
    maxGracePeriod: 2m
    serviceTypes: [ClusterIP, LoadBalancer]
    finalizers: [example.com/cleanup]
"""
# What the example grant lets a tenant do, roughly: enough to try every bound.
TENANT_RULES = [
    {"apiGroups": [""], "verbs": ["get", "list", "create", "update", "patch", "delete"],
     "resources": ["configmaps", "pods", "services", "persistentvolumeclaims"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "create"]},
]  # fmt: skip
NEVER = "example.com/never"
CLEANUP = "example.com/cleanup"
DRY = {"dry_run": "All"}


@pytest.fixture(scope="module")
def tenant_grant(cluster: Cluster, manifest_kubeconfig: Path) -> Iterator[None]:
    """The admin's job after installing k8s/: give the (empty) grant some rules."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rbac.patch_cluster_role(EMPTY_GRANT, {"rules": TENANT_RULES})
    try:
        yield
    finally:
        rbac.patch_cluster_role(EMPTY_GRANT, {"rules": []})


@pytest.fixture(scope="module")
def service(
    manifest_kubeconfig: Path, tenant_grant: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("nsprov")
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY)
    args = [f"--leader-elect-namespace={NSPROV_NAMESPACE}", f"--policy-file={policy}"]
    with running_service(manifest_kubeconfig, workdir, args) as running:
        yield running


class Tenant:
    """A provisioned namespace and its kubeconfig's clients: what a CI job holds."""

    def __init__(self, namespace: str, api: client.ApiClient) -> None:
        self.namespace = namespace
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)


@pytest.fixture
def tenant(service: RunningService, tmp_path: Path) -> Iterator[Callable[[str], Tenant]]:
    """``tenant(owner)``: a namespace provisioned for ``owner`` (alice: strict, bob: roomy)."""
    made: list[client.ApiClient] = []

    def provision(owner: str) -> Tenant:
        with service.client() as http:
            response = http.post("/api/v1/namespaces", params={"ttl": "10m"},
                                 headers=service.auth(owner))  # fmt: skip
        assert response.status_code == 201, response.text
        path = kubeconfig_from(response, tmp_path / f"{owner}-{len(made)}")
        api = config.new_client_from_config(config_file=str(path))
        made.append(api)
        found = Tenant(response.headers["x-namespace"], api)
        _wait_enforced(found)
        return found

    yield provision
    for api in made:
        api.close()


def _wait_enforced(tenant: Tenant) -> None:
    """The API server compiles a new policy in the background: wait until it refuses."""

    def enforced() -> bool:
        try:
            tenant.core.create_namespaced_config_map(
                tenant.namespace, _configmap("probe", [NEVER]), **DRY
            )
        except ApiException as exc:
            return exc.status == 403
        return False

    wait_until(enforced, timeout=15, interval=0.2, message="tenant policies enforced")


def _configmap(name: str, finalizers: list[str] | None = None) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, finalizers=finalizers), data={"a": "b"}
    )


def _pod(
    name: str, *, grace: int | None = None, finalizers: list[str] | None = None,
    node: str | None = None,
) -> client.V1Pod:  # fmt: skip
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, finalizers=finalizers),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="c", image="busybox")],
            termination_grace_period_seconds=grace,
            node_name=node,
        ),
    )


def _deployment(name: str, *, grace: int | None = None, finalizers: list[str] | None = None) -> Any:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels, finalizers=finalizers),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="c", image="busybox")],
                    termination_grace_period_seconds=grace,
                ),
            ),
        ),
    )


def _service(name: str, kind: str = "ClusterIP", **spec: Any) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name, finalizers=spec.pop("finalizers", None)),
        spec=client.V1ServiceSpec(type=kind, ports=[client.V1ServicePort(port=80)], **spec),
    )


def _refused(call: Callable[[], Any], *words: str) -> str:
    """Run ``call``, which a tenant policy must refuse: a 403 whose message names the rule
    and the way out (``words``); returns the message."""
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 403, refused.value.body
    message = str(json.loads(refused.value.body)["message"])
    for word in words:
        assert word in message, message
    return message


# ---- no tenant-made finalizers --------------------------------------------------------------


def test_a_tenant_cannot_add_a_finalizer_nobody_removes(tenant: Callable[[str], Tenant]) -> None:
    """The attack seen: ConfigMaps with ``finalizers: [example.com/never]`` held namespaces in
    Terminating past their expiry and beyond the tenant's cap."""
    alice = tenant("alice")
    ns, core = alice.namespace, alice.core
    way_out = "policy file: finalizers"
    message = _refused(
        lambda: core.create_namespaced_config_map(ns, _configmap("big", [NEVER])),
        "no tenant-made finalizers", f"'{NEVER}'", "configmaps", way_out,
    )  # fmt: skip
    assert "nsprov-finalizers" in message
    # Added later, by a patch, is the same.
    core.create_namespaced_config_map(ns, _configmap("plain"))
    _refused(lambda: core.patch_namespaced_config_map(
        "plain", ns, {"metadata": {"finalizers": [NEVER]}}), f"'{NEVER}'", way_out)  # fmt: skip
    # A pod template's finalizers are copied onto every pod made from it: refused where written.
    _refused(
        lambda: alice.apps.create_namespaced_deployment(ns, _deployment("d", finalizers=[NEVER])),
        "pod template", "deployments.apps", f"'{NEVER}'", way_out,
    )  # fmt: skip
    # And so is a pod that carries one itself, whoever creates it.
    _refused(lambda: core.create_namespaced_pod(ns, _pod("p", finalizers=[NEVER]), **DRY),
             f"'{NEVER}'", "pods")  # fmt: skip
    assert core.list_namespaced_config_map(ns, field_selector="metadata.name=big").items == []
    assert not core.read_namespaced_config_map("plain", ns).metadata.finalizers


def test_kubernetes_own_finalizers_pass_only_where_kubernetes_removes_them(
    tenant: Callable[[str], Tenant], cluster: Cluster
) -> None:
    alice = tenant("alice")
    ns, core = alice.namespace, alice.core
    # The PVC admission plugin adds kubernetes.io/pvc-protection on the tenant's behalf.
    claim = client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="data"),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
        ),
    )
    made = core.create_namespaced_persistent_volume_claim(ns, claim, **DRY)
    assert made.metadata.finalizers == ["kubernetes.io/pvc-protection"]
    # The garbage collector's anywhere.
    for name in ("orphan", "foregroundDeletion"):
        core.create_namespaced_config_map(ns, _configmap(name.lower(), [name]), **DRY)
    # The same names where no Kubernetes controller would remove them: refused.
    for name in ("kubernetes.io/pvc-protection", "batch.kubernetes.io/job-tracking",
                 "service.kubernetes.io/load-balancer-cleanup"):  # fmt: skip
        _refused(lambda n=name: core.create_namespaced_config_map(ns, _configmap("x", [n]), **DRY),
                 f"'{name}'", "configmaps")  # fmt: skip
    # The Job controller's only on pods it makes: it never removes it from a pod whose
    # controller is not a batch/v1 Job (tests/integration/test_tenant_escapes.py).
    _refused(lambda: core.create_namespaced_pod(
        ns, _pod("tracked", finalizers=["batch.kubernetes.io/job-tracking"]), **DRY),
        "'batch.kubernetes.io/job-tracking'", "pods")  # fmt: skip
    # The Job controller itself may (its RBAC lets it create pods).
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    api.set_default_header("Impersonate-User", "system:serviceaccount:kube-system:job-controller")
    try:
        client.CoreV1Api(api).create_namespaced_pod(
            ns, _pod("tracked", finalizers=["batch.kubernetes.io/job-tracking"]), **DRY
        )
    finally:
        api.close()
    # The service controller removes the load balancer's only from a LoadBalancer Service.
    _refused(
        lambda: core.create_namespaced_service(
            ns, _service("web", finalizers=["service.kubernetes.io/load-balancer-cleanup"]), **DRY
        ),
        "'service.kubernetes.io/load-balancer-cleanup'", "services",
    )  # fmt: skip


def test_an_operator_allowed_finalizer_passes_and_removing_one_always_does(
    tenant: Callable[[str], Tenant], cluster: Cluster
) -> None:
    alice, bob = tenant("alice"), tenant("bob")
    # bob's tenant may add example.com/cleanup (policy file: finalizers), alice's may not.
    bob.core.create_namespaced_config_map(bob.namespace, _configmap("state", [CLEANUP]))
    _refused(lambda: alice.core.create_namespaced_config_map(
        alice.namespace, _configmap("state", [CLEANUP])), f"'{CLEANUP}'")  # fmt: skip
    # Not a blanket pass: bob's tenant still may not add others.
    _refused(lambda: bob.core.patch_namespaced_config_map(
        "state", bob.namespace, {"metadata": {"finalizers": [CLEANUP, NEVER]}}),
        f"'{NEVER}'")  # fmt: skip
    bob.core.patch_namespaced_config_map("state", bob.namespace, {"metadata": {"finalizers": None}})
    assert not bob.core.read_namespaced_config_map("state", bob.namespace).metadata.finalizers

    # A finalizer someone else put there (an admin, break glass) the tenant may remove.
    admin = client.CoreV1Api(cluster.api)
    admin.create_namespaced_config_map(alice.namespace, _configmap("held", [NEVER]))
    alice.core.patch_namespaced_config_map(
        "held", alice.namespace, {"metadata": {"finalizers": None}}
    )
    assert not admin.read_namespaced_config_map("held", alice.namespace).metadata.finalizers


# ---- bounded grace --------------------------------------------------------------------------


def test_a_pod_may_not_ask_for_a_grace_above_its_tenants_limit(
    tenant: Callable[[str], Tenant],
) -> None:
    alice, bob = tenant("alice"), tenant("bob")
    way_out = "raise maxGracePeriod for this tenant in the policy file"
    message = _refused(
        lambda: alice.core.create_namespaced_pod(alice.namespace, _pod("slow", grace=315360000)),
        "bounded grace", "terminationGracePeriodSeconds 315360000", "maxGracePeriod of 30s",
        way_out,
    )  # fmt: skip
    assert "nsprov-grace" in message
    alice.core.create_namespaced_pod(alice.namespace, _pod("default"), **DRY)  # 30: the default
    alice.core.create_namespaced_pod(alice.namespace, _pod("quick", grace=30), **DRY)
    # Refused in the Deployment, where the tenant wrote it, not in pods that never appear.
    _refused(
        lambda: alice.apps.create_namespaced_deployment(
            alice.namespace, _deployment("slow", grace=600)
        ),
        "terminationGracePeriodSeconds 600 in the pod template of deployments.apps",
        way_out,
    )

    # bob's tenant has maxGracePeriod: 2m.
    bob.core.create_namespaced_pod(bob.namespace, _pod("slower", grace=120), **DRY)
    _refused(lambda: bob.core.create_namespaced_pod(bob.namespace, _pod("slowest", grace=121)),
             "maxGracePeriod of 120s")  # fmt: skip


def test_a_delete_or_eviction_may_not_stretch_a_pods_grace(
    tenant: Callable[[str], Tenant], cluster: Cluster
) -> None:
    """A pod's deletion keeps the longest grace it began with: the namespace controller's own
    delete (no grace given) does not shorten it, measured on Kubernetes 1.36 (a pod deleted
    with gracePeriodSeconds 3600, then its namespace: deletionTimestamp stayed an hour
    out). So a DELETE may not ask for more than the limit either."""
    alice = tenant("alice")
    ns, core = alice.namespace, alice.core
    # On a node (a name only: nothing runs it), so its deletion is graceful, not immediate.
    # Bound by the admin: a tenant may not name a node (test_tenant_escapes.py).
    admin = client.CoreV1Api(cluster.api)
    admin.create_namespaced_pod(ns, _pod("running", node="nowhere"))
    admin.create_namespaced_pod(ns, _pod("evicted", node="nowhere"))
    _refused(lambda: core.delete_namespaced_pod("running", ns, grace_period_seconds=3600),
             "bounded grace", "gracePeriodSeconds 3600", "maxGracePeriod of 30s",
             "policy file")  # fmt: skip
    eviction = client.V1Eviction(
        metadata=client.V1ObjectMeta(name="evicted", namespace=ns),
        delete_options=client.V1DeleteOptions(grace_period_seconds=3600),
    )
    _refused(lambda: core.create_namespaced_pod_eviction("evicted", ns, eviction),
             "gracePeriodSeconds 3600")  # fmt: skip
    assert core.read_namespaced_pod("running", ns).metadata.deletion_timestamp is None
    core.delete_namespaced_pod("running", ns, grace_period_seconds=20)
    assert core.read_namespaced_pod("running", ns).metadata.deletion_grace_period_seconds == 20
    for name in ("running", "evicted"):  # no kubelet will confirm: let the namespace go
        core.delete_namespaced_pod(name, ns, grace_period_seconds=0)


# ---- Services -------------------------------------------------------------------------------


def test_services_get_no_external_ips_and_only_the_tenants_types(
    tenant: Callable[[str], Tenant],
) -> None:
    alice, bob = tenant("alice"), tenant("bob")
    for who in (alice, bob):  # no setting allows externalIPs (CVE-2020-8554)
        _refused(
            lambda w=who: w.core.create_namespaced_service(
                w.namespace, _service("grab", "LoadBalancer", external_ips=["10.0.0.1", "8.8.8.8"])
            ),
            "no externalIPs", "10.0.0.1, 8.8.8.8", "CVE-2020-8554",
        )  # fmt: skip
    way_out = "policy file: serviceTypes"
    _refused(lambda: alice.core.create_namespaced_service(
        alice.namespace, _service("lb", "LoadBalancer")), "type LoadBalancer",
        "allowed: ClusterIP", way_out)  # fmt: skip
    _refused(lambda: alice.core.create_namespaced_service(
        alice.namespace, _service("np", "NodePort")), "type NodePort", way_out)  # fmt: skip
    alice.core.create_namespaced_service(alice.namespace, _service("web"))
    # A ClusterIP Service may not become a NodePort one later either.
    _refused(lambda: alice.core.patch_namespaced_service(
        "web", alice.namespace, {"spec": {"type": "NodePort"}}), "type NodePort")  # fmt: skip
    # bob's tenant lists LoadBalancer, not NodePort.
    bob.core.create_namespaced_service(bob.namespace, _service("lb", "LoadBalancer"), **DRY)
    _refused(lambda: bob.core.create_namespaced_service(
        bob.namespace, _service("np", "NodePort")), "type NodePort",
        "allowed: ClusterIP, LoadBalancer")  # fmt: skip


# ---- who else --------------------------------------------------------------------------------


def test_the_namespace_says_its_bounds_and_break_glass_is_exempt(
    tenant: Callable[[str], Tenant], cluster: Cluster, service: RunningService
) -> None:
    bob = tenant("bob")
    annotations = client.CoreV1Api(cluster.api).read_namespace(bob.namespace).metadata.annotations
    assert annotations["nsprov.io/max-grace-seconds"] == "120"
    assert annotations["nsprov.io/service-types"] == "ClusterIP,LoadBalancer"
    assert annotations["nsprov.io/finalizers"] == CLEANUP

    alice = tenant("alice")
    ns = alice.namespace
    # The tenant's own identity with the break-glass group: RBAC as before, policies lifted.
    user = f"system:serviceaccount:{ns}:namespace-provisioner"
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    api.set_default_header("Impersonate-User", user)
    api.set_default_header("Impersonate-Group", "nsprov:break-glass")
    try:
        glass = client.CoreV1Api(api)
        glass.create_namespaced_config_map(ns, _configmap("held", [NEVER]), **DRY)
        glass.create_namespaced_pod(ns, _pod("slow", grace=3600), **DRY)
        glass.create_namespaced_service(ns, _service("ext", external_ips=["10.0.0.1"]), **DRY)
    finally:
        api.close()


def test_namespaces_nsprov_does_not_manage_are_not_affected(
    cluster: Cluster, make_namespace: Callable[[], str], manifest_kubeconfig: Path
) -> None:
    """The policies match namespaces by nsprov's selector label only: an ordinary user of
    another namespace keeps every finalizer, grace and Service type Kubernetes allows."""
    plain = make_namespace()
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_namespaced_role_binding(plain, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="edit"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                  name="edit"),
        subjects=[client.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="User",
                                       name="someone")],
    ))  # fmt: skip
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    api.set_default_header("Impersonate-User", "someone")
    try:
        other = client.CoreV1Api(api)
        other.create_namespaced_config_map(plain, _configmap("held", [NEVER]), **DRY)
        other.create_namespaced_pod(plain, _pod("slow", grace=3600), **DRY)
        other.create_namespaced_service(plain, _service("lb", "LoadBalancer"), **DRY)
    finally:
        api.close()
