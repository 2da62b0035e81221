"""Only nsprov may write what nsprov trusts: k8s/'s admission policy on the real API server.

The attacker here is not a tenant but a neighbour with ordinary cluster rights:
a GitOps tool or an operator bound to `patch` on namespaces and `delete` on
ServiceAccounts and RoleBindings. Before the policy, such a user set
``nsprov.io/expires-at=1`` on a one-hour namespace and nsprov deleted it five
seconds later; rewriting ``nsprov.io/owner`` would hand the namespace to
another token. The policy is applied from k8s/ (by ``manifest_kubeconfig``,
for the rest of the session): it exempts ``system:masters``, which every other
test's admin identity and the test plane's kube-controller-manager belong to,
so it changes nothing for them.

The second policy, ``nsprov-confine``, faces the other way: its attacker holds
nsprov's own ServiceAccount token (leaked, or nsprov has a bug), whose RBAC is
cluster-wide because namespace names are random. It keeps that token to
namespaces with the selector label.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from nsprov.provision.grant import unsafe_reasons
from tests.integration.conftest import (
    EMPTY_GRANT,
    NSPROV_NAMESPACE,
    SELECTOR,
    Cluster,
    live_managed_namespaces,
    token_kubeconfig,
)
from tests.integration.service import (
    RunningService,
    kubeconfig_from,
    namespace_status,
    provision,
    running_service,
    wait_expired_line,
)
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces", "policy")

SELECTOR_KEY, SELECTOR_VALUE = SELECTOR.split("=")
EXPIRES_AT = "nsprov.io/expires-at"
OWNER = "nsprov.io/owner"
BUNDLE = "namespace-provisioner"
RBAC_GROUP = "rbac.authorization.k8s.io"
GITOPS = "nsprov-test-gitops"
# The policy's own words; the API server prefixes them with the policy's name.
DENIED = "only nsprov may"
# nsprov-confine's words, to nsprov's own ServiceAccount when it reaches past its namespaces.
CONFINED = "nsprov's ServiceAccount may"
PSA_PREFIX = "pod-security.kubernetes.io/"
ENFORCE = PSA_PREFIX + "enforce"


def _impersonating(cluster: Cluster, user: str, group: str | None = None) -> client.ApiClient:
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    api.set_default_header("Impersonate-User", user)
    if group:
        api.set_default_header("Impersonate-Group", group)
    return api


@pytest.fixture(scope="module")
def gitops(cluster: Cluster) -> Iterator[client.ApiClient]:
    """A user who may patch namespaces and edit ServiceAccounts, RoleBindings, quotas, ...

    Not a member of system:masters: RBAC lets it do all of this; only the policy can refuse.
    """
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    edit = ["get", "list", "create", "update", "patch", "delete"]
    rules = [
        client.V1PolicyRule(api_groups=[""], resources=["namespaces"],
                            verbs=["get", "list", "create", "update", "patch"]),
        client.V1PolicyRule(api_groups=[""], verbs=["update"],
                            resources=["namespaces/status", "namespaces/finalize"]),
        client.V1PolicyRule(api_groups=[""], verbs=edit,
                            resources=["serviceaccounts", "resourcequotas", "limitranges"]),
        client.V1PolicyRule(api_groups=[RBAC_GROUP], resources=["rolebindings"], verbs=edit),
        client.V1PolicyRule(api_groups=["networking.k8s.io"], resources=["networkpolicies"],
                            verbs=edit),
    ]  # fmt: skip
    role = client.V1ClusterRole(metadata=client.V1ObjectMeta(name=GITOPS), rules=rules)
    binding = client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=GITOPS),
        role_ref=client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole", name=GITOPS),
        subjects=[client.RbacV1Subject(api_group=RBAC_GROUP, kind="User", name=GITOPS)],
    )
    rbac.create_cluster_role(role)
    rbac.create_cluster_role_binding(binding)
    api = _impersonating(cluster, GITOPS)
    try:
        yield api
    finally:
        api.close()
        rbac.delete_cluster_role_binding(GITOPS)
        rbac.delete_cluster_role(GITOPS)


def _claiming_namespace(name: str) -> client.V1Namespace:
    return client.V1Namespace(
        metadata=client.V1ObjectMeta(
            name=name,
            labels={SELECTOR_KEY: SELECTOR_VALUE, EXPIRES_AT: str(int(time.time()) + 3600)},
            annotations={OWNER: "alice"},
        )
    )


@pytest.fixture(scope="module")
def nsprov_api(manifest_kubeconfig: Path) -> Iterator[client.ApiClient]:
    """nsprov's own ServiceAccount, as a leaked token would be used: straight at the API."""
    api = config.new_client_from_config(config_file=str(manifest_kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="module")
def policy(
    manifest_kubeconfig: Path, gitops: client.ApiClient, nsprov_api: client.ApiClient
) -> None:
    """k8s/ is applied (policies included); wait until the API server enforces both.

    The API server compiles a new policy in the background, so the first second after
    `kubectl apply` may still admit everything. A dry run changes nothing either way.
    """

    def refuses(api: client.ApiClient, namespace: client.V1Namespace, words: str) -> bool:
        try:
            client.CoreV1Api(api).create_namespace(namespace, dry_run="All")
        except ApiException as exc:
            return exc.status == 403 and words in exc.body
        return False

    unlabelled = client.V1Namespace(metadata=client.V1ObjectMeta(name="nsprov-test-probe"))
    wait_until(
        lambda: refuses(gitops, _claiming_namespace("nsprov-test-probe"), DENIED)
        and refuses(nsprov_api, unlabelled, CONFINED),
        timeout=15, interval=0.2, message="admission policies enforced",
    )  # fmt: skip


@pytest.fixture(scope="module")
def service(manifest_kubeconfig: Path, tmp_path_factory) -> Iterator[RunningService]:
    """nsprov with exactly the identity k8s/ gives it (the one the policy exempts)."""
    args = [f"--leader-elect-namespace={NSPROV_NAMESPACE}", "--min-ttl=1s"]
    workdir = tmp_path_factory.mktemp("nsprov")
    with running_service(manifest_kubeconfig, workdir, args) as running:
        yield running


def _denied(call: Callable[[], Any], words: str = DENIED) -> str:
    """Run ``call``, which must be refused by the policy; return the API server's message.

    The policy's own ``words`` tell its refusal from RBAC's, which is a 403 too.
    """
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 403, refused.value.body
    message = str(json.loads(refused.value.body)["message"])
    assert words in message, message
    return message


def _protected(metadata: client.V1ObjectMeta) -> tuple[dict[str, str], dict[str, str]]:
    labels = {k: v for k, v in (metadata.labels or {}).items()
              if k == SELECTOR_KEY or k.startswith(("nsprov.io/", PSA_PREFIX))}  # fmt: skip
    annotations = {k: v for k, v in (metadata.annotations or {}).items()
                   if k.startswith("nsprov.io/")}  # fmt: skip
    return labels, annotations


# ---- what a neighbour with patch rights can no longer do ----------------------------------


def test_patch_rights_cannot_rewrite_what_nsprov_reads_from_a_namespace(
    service: RunningService, gitops: client.ApiClient, core: client.CoreV1Api
) -> None:
    name, _ = provision(service, "1h")
    before = core.read_namespace(name).metadata
    mallory = client.CoreV1Api(gitops)
    edits: dict[str, dict[str, Any]] = {
        # The attack measured before the policy: nsprov deleted the namespace 5 s later.
        "expiry set to 1": {"labels": {EXPIRES_AT: "1"}},
        "expiry removed": {"labels": {EXPIRES_AT: None}},
        "owner rewritten": {"annotations": {OWNER: "bob"}},
        "owner removed": {"annotations": {OWNER: None}},
        "grant rewritten": {"annotations": {"nsprov.io/cluster-role": "admin"}},
        "new nsprov.io label": {"labels": {"nsprov.io/tenant": "web"}},
        "new nsprov.io annotation": {"annotations": {"nsprov.io/requested-by": "{}"}},
        "selector removed": {"labels": {SELECTOR_KEY: None}},
        "selector changed": {"labels": {SELECTOR_KEY: "someone-else"}},
    }
    for what, metadata in edits.items():
        message = _denied(lambda m=metadata: mallory.patch_namespace(name, {"metadata": m}))
        assert "nsprov" in message, what

    # The subresources write metadata too (see test_finalize_rights_...): refused as well.
    for replace in (mallory.replace_namespace_status, mallory.replace_namespace_finalize):
        current = core.read_namespace(name)
        current.metadata.labels[EXPIRES_AT] = "1"
        _denied(lambda r=replace, c=current: r(name, c))

    after = core.read_namespace(name)
    assert after.metadata.resource_version == before.resource_version
    assert _protected(after.metadata) == _protected(before)
    assert namespace_status(core, name) == "active"

    # The policy guards nsprov's keys only: other labels stay the neighbour's business.
    mallory.patch_namespace(name, {"metadata": {"labels": {"team": "web"}}})
    assert core.read_namespace(name).metadata.labels["team"] == "web"


def test_patch_rights_cannot_touch_nsprovs_objects_in_its_namespaces(
    service: RunningService, gitops: client.ApiClient, cluster: Cluster, core: client.CoreV1Api
) -> None:
    name, _ = provision(service, "1h")
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    uids = (
        core.read_namespaced_service_account(BUNDLE, name).metadata.uid,
        rbac.read_namespaced_role_binding(BUNDLE, name).metadata.uid,
    )
    mallory, mallory_rbac = client.CoreV1Api(gitops), client.RbacAuthorizationV1Api(gitops)
    networking = client.NetworkingV1Api(gitops)
    label = {"metadata": {"labels": {"mine": "now"}}}
    meta = client.V1ObjectMeta(name=BUNDLE)
    _denied(lambda: mallory_rbac.delete_namespaced_role_binding(BUNDLE, name))
    _denied(lambda: mallory_rbac.patch_namespaced_role_binding(BUNDLE, name, label))
    _denied(lambda: mallory.delete_namespaced_service_account(BUNDLE, name))
    _denied(lambda: mallory.patch_namespaced_service_account(BUNDLE, name, label))
    # What nsprov will make next (quota, limits, network policy): nobody may plant or edit one.
    _denied(
        lambda: mallory.create_namespaced_resource_quota(
            name, client.V1ResourceQuota(metadata=meta, spec=client.V1ResourceQuotaSpec(hard={}))
        )
    )
    _denied(
        lambda: mallory.create_namespaced_limit_range(
            name, client.V1LimitRange(metadata=meta, spec=client.V1LimitRangeSpec(limits=[]))
        )
    )
    _denied(lambda: networking.create_namespaced_network_policy(
        name, client.V1NetworkPolicy(metadata=meta, spec=client.V1NetworkPolicySpec(
            pod_selector=client.V1LabelSelector()))))  # fmt: skip
    # Nor dress up an object of its own as nsprov's (the controller watches that label).
    disguised = client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="extra", labels={SELECTOR_KEY: SELECTOR_VALUE}),
        role_ref=client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole", name=EMPTY_GRANT),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=BUNDLE, namespace=name)],
    )
    _denied(lambda: mallory_rbac.create_namespaced_role_binding(name, disguised))

    assert uids == (
        core.read_namespaced_service_account(BUNDLE, name).metadata.uid,
        rbac.read_namespaced_role_binding(BUNDLE, name).metadata.uid,
    )
    # Objects of its own, under other names, are none of the policy's business.
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="team-quota"), spec=client.V1ResourceQuotaSpec(hard={})
    )
    mallory.create_namespaced_resource_quota(name, quota)
    mallory.delete_namespaced_resource_quota("team-quota", name)


def test_nobody_else_can_make_a_namespace_look_like_nsprovs(
    gitops: client.ApiClient, core: client.CoreV1Api, make_namespace
) -> None:
    mallory = client.CoreV1Api(gitops)
    claimed = "nsprov-test-claimed"
    _denied(lambda: mallory.create_namespace(_claiming_namespace(claimed)))
    plain = make_namespace()
    _denied(lambda: mallory.patch_namespace(
        plain, {"metadata": {"labels": {SELECTOR_KEY: SELECTOR_VALUE}}}))  # fmt: skip
    assert claimed not in {ns.metadata.name for ns in core.list_namespace().items}
    assert SELECTOR_KEY not in (core.read_namespace(plain).metadata.labels or {})


def test_namespaces_without_the_selector_are_not_affected(
    gitops: client.ApiClient, make_namespace
) -> None:
    foreign = make_namespace()
    mallory = client.CoreV1Api(gitops)
    mallory_rbac = client.RbacAuthorizationV1Api(gitops)
    look_alike = {
        "labels": {EXPIRES_AT: "1", SELECTOR_KEY: "someone-else"},
        "annotations": {OWNER: "alice"},
    }
    mallory.patch_namespace(foreign, {"metadata": look_alike})
    relabelled = mallory.read_namespace(foreign).metadata
    assert relabelled.labels[EXPIRES_AT] == "1"
    assert relabelled.annotations[OWNER] == "alice"
    removed = {"labels": {EXPIRES_AT: None, SELECTOR_KEY: None}, "annotations": {OWNER: None}}
    mallory.patch_namespace(foreign, {"metadata": removed})
    assert EXPIRES_AT not in (mallory.read_namespace(foreign).metadata.labels or {})

    binding = client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=BUNDLE),
        role_ref=client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole", name=EMPTY_GRANT),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=BUNDLE, namespace=foreign)],
    )
    mallory_rbac.create_namespaced_role_binding(foreign, binding)
    mallory_rbac.delete_namespaced_role_binding(BUNDLE, foreign)


# ---- the selector label on the kinds nsprov watches, in any namespace --------------------

# The API server says which rule refused; the policy says the way out.
LABEL_DENIED = "only nsprov may put the controller.observatorium.io=namespace-provisioner label"
NEIGHBOUR = "nsprov-test-neighbour"


def _labelled_objects(namespace: str) -> dict[str, Callable[[client.ApiClient], Any]]:
    """One create per kind nsprov watches, each carrying the selector label."""
    labels = {SELECTOR_KEY: SELECTOR_VALUE}

    def meta() -> client.V1ObjectMeta:
        return client.V1ObjectMeta(name="looks-like-nsprov", labels=labels)

    return {
        "serviceaccount": lambda api: client.CoreV1Api(api).create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=meta())),
        "rolebinding": lambda api: client.RbacAuthorizationV1Api(
            api).create_namespaced_role_binding(namespace, client.V1RoleBinding(
                metadata=meta(),
                role_ref=client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole",
                                          name=EMPTY_GRANT),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="default",
                                               namespace=namespace)])),
        "resourcequota": lambda api: client.CoreV1Api(api).create_namespaced_resource_quota(
            namespace, client.V1ResourceQuota(metadata=meta(),
                                              spec=client.V1ResourceQuotaSpec(hard={}))),
        "limitrange": lambda api: client.CoreV1Api(api).create_namespaced_limit_range(
            namespace, client.V1LimitRange(metadata=meta(), spec=client.V1LimitRangeSpec(
                limits=[client.V1LimitRangeItem(type="Container", max={"cpu": "1"})]))),
        "networkpolicy": lambda api: client.NetworkingV1Api(
            api).create_namespaced_network_policy(namespace, client.V1NetworkPolicy(
                metadata=meta(),
                spec=client.V1NetworkPolicySpec(pod_selector=client.V1LabelSelector()))),
    }  # fmt: skip


def test_nobody_else_may_put_the_selector_label_on_a_watched_kind_anywhere(
    gitops: client.ApiClient, cluster: Cluster, core: client.CoreV1Api, make_namespace
) -> None:
    """The attack of issue 19: labelled objects in an unrelated namespace fill nsprov's caches.

    Measured before this rule: a user with ``admin`` in one namespace of its own made
    ServiceAccounts with the selector label and 180,000 imagePullSecrets each (2.5 MB);
    every nsprov replica grew 46 MiB per object and crash-looped at its memory limit.
    """
    unrelated = make_namespace()
    for kind, create in _labelled_objects(unrelated).items():
        message = _denied(lambda c=create: c(gitops), LABEL_DENIED)
        assert "nsprov-protect" in message, kind
        assert "break glass" in message, kind

    # Nor by labelling an object that exists without the label.
    mallory = client.CoreV1Api(gitops)
    mallory.create_namespaced_service_account(
        unrelated, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="plain"))
    )
    claim = {"metadata": {"labels": {SELECTOR_KEY: SELECTOR_VALUE}}}
    _denied(lambda: mallory.patch_namespaced_service_account("plain", unrelated, claim),
            LABEL_DENIED)  # fmt: skip
    assert SELECTOR_KEY not in (
        core.read_namespaced_service_account("plain", unrelated).metadata.labels or {}
    )
    # A look-alike value is no claim, and objects without the label are the owner's business.
    mallory.patch_namespaced_service_account(
        "plain", unrelated, {"metadata": {"labels": {SELECTOR_KEY: "someone-else"}}}
    )
    mallory.delete_namespaced_service_account("plain", unrelated)

    # The attacker as measured: the ordinary admin role, in its own namespace only.
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_namespaced_role_binding(unrelated, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=NEIGHBOUR),
        role_ref=client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole", name="admin"),
        subjects=[client.RbacV1Subject(api_group=RBAC_GROUP, kind="User", name=NEIGHBOUR)],
    ))  # fmt: skip
    neighbour = _impersonating(cluster, NEIGHBOUR)
    try:
        pulls = [client.V1LocalObjectReference(name=f"pull-{i}") for i in range(2000)]
        heavy = client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name="heavy", labels={SELECTOR_KEY: SELECTOR_VALUE}),
            image_pull_secrets=pulls,
        )
        neighbours = client.CoreV1Api(neighbour)
        _denied(lambda: neighbours.create_namespaced_service_account(unrelated, heavy),
                LABEL_DENIED)  # fmt: skip
        heavy.metadata.labels = None
        neighbours.create_namespaced_service_account(unrelated, heavy)  # unlabelled: its own
    finally:
        neighbour.close()
    assert [sa.metadata.name for sa in core.list_namespaced_service_account(
        unrelated, label_selector=SELECTOR).items] == []  # fmt: skip


def test_break_glass_may_put_the_selector_label_anywhere(
    cluster: Cluster, core: client.CoreV1Api, make_namespace
) -> None:
    unrelated = make_namespace()
    api = _impersonating(cluster, GITOPS, group="nsprov:break-glass")
    try:
        for create in _labelled_objects(unrelated).values():
            create(api)
    finally:
        api.close()
    labelled = core.list_namespaced_service_account(unrelated, label_selector=SELECTOR).items
    assert [sa.metadata.name for sa in labelled] == ["looks-like-nsprov"]


def test_patch_rights_cannot_change_the_pod_security_of_nsprovs_namespaces(
    service: RunningService, gitops: client.ApiClient, core: client.CoreV1Api, make_namespace
) -> None:
    """nsprov sets a managed namespace's Pod Security level; patch rights must not lift it.

    Before the policy covered pod-security.kubernetes.io/*, a neighbour with namespace patch
    could set enforce=privileged on a tenant's namespace (or drop the label: the cluster's
    default, often privileged, applies then).
    """
    name, _ = provision(service, "1h")
    before = core.read_namespace(name).metadata
    assert before.labels[ENFORCE] == "baseline"
    mallory = client.CoreV1Api(gitops)
    edits: dict[str, dict[str, str | None]] = {
        "enforce lifted": {ENFORCE: "privileged"},
        "enforce removed": {ENFORCE: None},
        "enforce-version pinned": {f"{ENFORCE}-version": "v1.0"},
        "warn added": {PSA_PREFIX + "warn": "privileged"},
    }
    for what, labels in edits.items():
        message = _denied(
            lambda m=labels: mallory.patch_namespace(name, {"metadata": {"labels": m}})
        )
        assert "pod-security.kubernetes.io" in message, what
    after = core.read_namespace(name).metadata
    assert after.resource_version == before.resource_version
    assert after.labels[ENFORCE] == "baseline"

    # Namespaces nsprov does not manage keep whatever Pod Security their owners choose.
    plain = make_namespace()
    mallory.patch_namespace(plain, {"metadata": {"labels": {ENFORCE: "privileged"}}})
    assert core.read_namespace(plain).metadata.labels[ENFORCE] == "privileged"


# ---- what nsprov's own identity cannot do outside its namespaces -------------------------


def _tenant_binding(namespace: str) -> client.V1RoleBinding:
    """The RoleBinding nsprov makes, as it would be planted elsewhere."""
    return client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=BUNDLE),
        role_ref=client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole", name=EMPTY_GRANT),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=BUNDLE, namespace=namespace)],
    )


def _gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_a_leaked_nsprov_token_cannot_plant_a_bound_account_in_kube_system(
    nsprov_api: client.ApiClient, core: client.CoreV1Api, cluster: Cluster, make_namespace
) -> None:
    """The escalation nsprov's cluster-wide RBAC allows and nsprov-confine refuses.

    nsprov may create ServiceAccounts and RoleBindings (binding the grant) in any namespace
    and mint tokens for any ServiceAccount named namespace-provisioner: with its token, an
    attacker would make kube-system/namespace-provisioner, bind the grant there and mint
    its token. Each step is refused in kube-system and in any namespace without the
    selector label; RBAC alone allows every one of them.
    """
    nsprov, nsprov_rbac = client.CoreV1Api(nsprov_api), client.RbacAuthorizationV1Api(nsprov_api)
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    account = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=BUNDLE))
    plain = make_namespace()
    try:
        for namespace in ("kube-system", plain):
            message = _denied(
                lambda n=namespace: nsprov.create_namespaced_service_account(n, account), CONFINED
            )
            assert "nsprov" in message
            _denied(
                lambda n=namespace: nsprov_rbac.create_namespaced_role_binding(
                    n, _tenant_binding(n)
                ),
                CONFINED,
            )
        # Its token, for an account that is already there (an admin made it): refused too.
        core.create_namespaced_service_account(plain, account)
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
        _denied(lambda: nsprov.create_namespaced_service_account_token(BUNDLE, plain, request),
                CONFINED)  # fmt: skip
    finally:
        for namespace in ("kube-system", plain):
            if not _gone(lambda n=namespace: rbac.read_namespaced_role_binding(BUNDLE, n)):
                rbac.delete_namespaced_role_binding(BUNDLE, namespace)
        if not _gone(lambda: core.read_namespaced_service_account(BUNDLE, "kube-system")):
            core.delete_namespaced_service_account(BUNDLE, "kube-system")
    assert _gone(lambda: core.read_namespaced_service_account(BUNDLE, "kube-system"))
    assert _gone(lambda: rbac.read_namespaced_role_binding(BUNDLE, plain))


def test_a_leaked_nsprov_token_cannot_edit_delete_or_make_unmanaged_namespaces(
    service: RunningService, nsprov_api: client.ApiClient, core: client.CoreV1Api,
    make_namespace,
) -> None:  # fmt: skip
    nsprov = client.CoreV1Api(nsprov_api)
    label = {"metadata": {"labels": {ENFORCE: "privileged"}}}
    # Nor make it nsprov's, which would let it do the rest.
    claim = {"metadata": {"labels": {SELECTOR_KEY: SELECTOR_VALUE}}}
    plain = make_namespace()
    for namespace in ("kube-system", plain):
        before = core.read_namespace(namespace).metadata.resource_version
        _denied(lambda n=namespace: nsprov.patch_namespace(n, label), CONFINED)
        _denied(lambda n=namespace: nsprov.patch_namespace(n, claim), CONFINED)
        # (kube-system itself Kubernetes never deletes: NamespaceLifecycle refuses first.)
        if namespace == plain:
            _denied(lambda n=namespace: nsprov.delete_namespace(n), CONFINED)
        assert core.read_namespace(namespace).metadata.resource_version == before
        assert core.read_namespace(namespace).status.phase == "Active"

    # A namespace nsprov makes carries its selector and an expiry, or it is not made:
    # nothing a leaked token creates outlives nsprov's controller's reach.
    unlabelled = "nsprov-test-unlabelled"
    no_expiry = "nsprov-test-no-expiry"
    _denied(lambda: nsprov.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=unlabelled))), CONFINED)  # fmt: skip
    _denied(lambda: nsprov.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=no_expiry, labels={SELECTOR_KEY: SELECTOR_VALUE}))), CONFINED)  # fmt: skip
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert not {unlabelled, no_expiry} & names

    # Nor can it let one of its own namespaces go by dropping the selector label.
    name, _ = provision(service, "1h")
    drop = {"metadata": {"labels": {SELECTOR_KEY: None}}}
    _denied(lambda: nsprov.patch_namespace(name, drop), CONFINED)
    assert core.read_namespace(name).metadata.labels[SELECTOR_KEY] == SELECTOR_VALUE


# ---- what still works ---------------------------------------------------------------------


def test_nsprov_itself_creates_extends_repairs_deletes_and_expires(
    service: RunningService, cluster: Cluster, core: client.CoreV1Api
) -> None:
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    name, expires_at = provision(service, "10m")
    with service.client() as http:
        extended = http.patch(f"/api/v1/namespaces/{name}", params={"ttl": "1h"},
                              headers=service.auth())  # fmt: skip
        assert extended.status_code == 200, extended.text
    assert int(core.read_namespace(name).metadata.labels[EXPIRES_AT]) > expires_at

    # An admin (system:masters: the break-glass group) deletes the RoleBinding; nsprov's
    # controller, as nsprov, puts it back.
    old_uid = rbac.read_namespaced_role_binding(BUNDLE, name).metadata.uid

    def recreated() -> bool:
        try:
            return bool(rbac.read_namespaced_role_binding(BUNDLE, name).metadata.uid != old_uid)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    rbac.delete_namespaced_role_binding(BUNDLE, name)
    wait_until(recreated, timeout=10, message="RoleBinding recreated by nsprov")

    with service.client() as http:
        deleted = http.delete(f"/api/v1/namespaces/{name}", headers=service.auth())
        assert deleted.status_code == 202, deleted.text
    assert namespace_status(core, name) != "active"

    expiring, _ = provision(service, "2s")
    wait_until(lambda: expiring not in live_managed_namespaces(core), timeout=15,
               message="expired by nsprov")  # fmt: skip
    wait_expired_line(service, expiring)


def test_break_glass_group_may_edit(
    service: RunningService, cluster: Cluster, core: client.CoreV1Api
) -> None:
    name, _ = provision(service, "1h")
    api = _impersonating(cluster, GITOPS, group="nsprov:break-glass")
    try:
        client.CoreV1Api(api).patch_namespace(name, {"metadata": {"annotations": {OWNER: "bob"}}})
    finally:
        api.close()
    assert core.read_namespace(name).metadata.annotations[OWNER] == "bob"


def test_a_terminating_namespace_can_still_be_emptied(
    service: RunningService, cluster: Cluster, gitops: client.ApiClient, core: client.CoreV1Api
) -> None:
    """The namespace controller may run as any identity; it empties a namespace being deleted.

    The test plane's kube-controller-manager is system:masters (exempt), so the
    neighbour plays its part while it is stopped.
    """
    plane = cluster.require_local()
    name, _ = provision(service, "1h")
    mallory = client.CoreV1Api(gitops)
    mallory_rbac = client.RbacAuthorizationV1Api(gitops)
    _denied(lambda: mallory_rbac.delete_namespaced_role_binding(BUNDLE, name))
    plane.stop_component("kube-controller-manager")
    try:
        core.delete_namespace(name)

        def emptied() -> bool:
            try:
                mallory_rbac.delete_namespaced_role_binding(BUNDLE, name)
            except ApiException as exc:
                # The API server's namespace cache may lag the deletion by a moment.
                if exc.status == 403 and DENIED in exc.body:
                    return False
                raise
            return True

        wait_until(emptied, timeout=10, message="RoleBinding deleted in a terminating namespace")
        mallory.delete_namespaced_service_account(BUNDLE, name)
    finally:
        plane.start_component("kube-controller-manager")
    wait_until(lambda: namespace_status(core, name) == "gone", timeout=60, interval=0.5,
               message=f"{name} gone")  # fmt: skip


# ---- why a grant must not carry namespaces/finalize ----------------------------------------


def test_finalize_rights_let_a_tenant_rewrite_its_own_namespace_labels(
    service: RunningService, cluster: Cluster, core: client.CoreV1Api, make_namespace,
    tmp_path: Path,
) -> None:  # fmt: skip
    """What Kubernetes does, recorded: the grant check and the policy both stand on it.

    A RoleBinding in a namespace authorizes requests on that Namespace object itself
    (the API server takes a namespace's name as the request's namespace), and the
    finalize subresource's update strategy resets only ``status``: metadata changes
    go through. Measured on Kubernetes 1.36: a tenant bound to nothing but
    ``update namespaces/finalize`` rewrote its namespace's labels and annotations
    (``namespaces/status`` behaves the same). So a grant with it is refused by the
    grant check, and the policy also refuses the edit on a namespace nsprov manages.
    """
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    finalize = "nsprov-test-finalize"
    rules = [
        client.V1PolicyRule(api_groups=[""], resources=["namespaces/finalize"], verbs=["update"]),
        client.V1PolicyRule(api_groups=[""], resources=["namespaces"], verbs=["get"]),
    ]
    role = rbac.create_cluster_role(
        client.V1ClusterRole(metadata=client.V1ObjectMeta(name=finalize), rules=rules)
    )
    try:
        grant = cluster.api.sanitize_for_serialization(role)
        assert any("edit Namespaces" in reason for reason in unsafe_reasons(grant))

        # Without nsprov: a plain namespace and a tenant bound to finalize there.
        plain = make_namespace()
        core.create_namespaced_service_account(
            plain, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="tenant"))
        )
        rbac.create_namespaced_role_binding(plain, _binding(finalize, "tenant", plain))
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
        token = core.create_namespaced_service_account_token("tenant", plain, request).status.token
        tenant = client.CoreV1Api(
            config.new_client_from_config(str(token_kubeconfig(cluster, token, tmp_path / "t")))
        )
        try:
            own = tenant.read_namespace(plain)
            own.metadata.labels[EXPIRES_AT] = "1"
            own.metadata.annotations = {OWNER: "mallory"}
            tenant.replace_namespace_finalize(plain, own)  # Kubernetes lets it through
        finally:
            tenant.api_client.close()
        rewritten = core.read_namespace(plain).metadata
        assert rewritten.labels[EXPIRES_AT] == "1"
        assert rewritten.annotations[OWNER] == "mallory"

        # With nsprov: the same right, given to a provisioned namespace's own kubeconfig.
        with service.client() as http:
            created = http.post("/api/v1/namespaces", params={"ttl": "1h"}, headers=service.auth())
        assert created.status_code == 201, created.text
        name = created.headers["x-namespace"]
        rbac.create_namespaced_role_binding(name, _binding(finalize, BUNDLE, name))
        kubeconfig = kubeconfig_from(created, tmp_path / "kubeconfig")
        tenant = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        try:
            own = tenant.read_namespace(name)
            own.metadata.labels[EXPIRES_AT] = "1"
            _denied(lambda: tenant.replace_namespace_finalize(name, own))
        finally:
            tenant.api_client.close()
        assert core.read_namespace(name).metadata.labels[EXPIRES_AT] != "1"
    finally:
        rbac.delete_cluster_role(finalize)


def _binding(cluster_role: str, service_account: str, namespace: str) -> client.V1RoleBinding:
    return client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="finalize"),
        role_ref=client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole", name=cluster_role),
        subjects=[
            client.RbacV1Subject(kind="ServiceAccount", name=service_account, namespace=namespace)
        ],
    )


def test_a_pooled_namespace_is_guarded_and_claimed_only_by_nsprov(
    manifest_kubeconfig: Path, gitops: client.ApiClient, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """Issue 21: a namespace waiting in the pool carries the selector label, so the policy
    guards it like any other: a neighbour cannot claim it (write an owner, lift the pool
    label) or shorten it. nsprov, with k8s/'s identity, makes the pool and claims from it."""
    args = [
        # Its own controller, not the module's service's Lease (k8s/ names the one Lease).
        "--leader-elect=false",
        "--pool-size=1",
    ]
    pooled_selector = f"{SELECTOR},nsprov.io/pool-ready=true"
    with running_service(manifest_kubeconfig, tmp_path, args) as pooling:
        (name,) = wait_until(
            lambda: [n.metadata.name for n in core.list_namespace(label_selector=pooled_selector)
                     .items if not n.metadata.deletion_timestamp] or None,
            timeout=30, message="a ready pooled namespace made with k8s/'s identity",
        )  # fmt: skip
        before = core.read_namespace(name).metadata
        mallory = client.CoreV1Api(gitops)
        for metadata in (
            {"annotations": {OWNER: "mallory"}},
            {"labels": {"nsprov.io/pool": None}},
            {"labels": {"nsprov.io/pool-ready": None}},
            {"labels": {EXPIRES_AT: "1"}},
        ):
            _denied(lambda m=metadata: mallory.patch_namespace(name, {"metadata": m}))
        assert core.read_namespace(name).metadata.resource_version == before.resource_version
        with pooling.client() as http:
            created = http.post("/api/v1/namespaces", headers=pooling.auth())
        assert created.status_code == 201, created.text
        assert created.headers["x-namespace"] == name
        assert core.read_namespace(name).metadata.annotations[OWNER] == "alice"
