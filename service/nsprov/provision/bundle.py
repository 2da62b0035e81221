"""What a provisioned namespace is: its names, labels and the objects that make it up.

The provisioner (which creates bundles) and the controller (which keeps them
whole and expires them) both read this module and nothing else about the shape
of a namespace, so the two can never disagree about it.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from nsprov.provision.template import MAX_CLUSTER_ROLES, Template

EXPIRES_AT_LABEL = "nsprov.io/expires-at"
IDEMPOTENCY_LABEL = "nsprov.io/idempotency-key"
# A preview key (POST ?key=): a digest of (owner, key) as a label, the key itself as an
# annotation (a key's charset and length are bounded: KEY_PATTERN), for people to read.
KEY_LABEL = "nsprov.io/key"
KEY_ANNOTATION = "nsprov.io/key"
KEY_PATTERN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
OWNER_ANNOTATION = "nsprov.io/owner"
# The policy tenant that admitted the caller, and a small JSON of who asked (audit claims).
TENANT_ANNOTATION = "nsprov.io/tenant"
REQUESTED_BY_ANNOTATION = "nsprov.io/requested-by"
# The tenant again as a label, so the API server can select (and cap) one tenant's namespaces.
TENANT_LABEL = "nsprov.io/tenant"
# The template the namespace was made with (template.py): roles, Pod Security, bounds.
TEMPLATE_ANNOTATION = "nsprov.io/template"
# A digest of the owner as a label, so the API server can select one owner's namespaces
# (annotations cannot be selected on; an owner name may not fit a label value).
OWNER_HASH_LABEL = "nsprov.io/owner-hash"
# The grant is recorded on the namespace, so the controller repairs a RoleBinding to
# what it was provisioned with, whatever --cluster-role the repairing replica has.
CLUSTER_ROLE_ANNOTATION = "nsprov.io/cluster-role"
# The ttl the creating request asked for, as a Go duration in seconds ("1800.0s"): a replay
# with the same Idempotency-Key must ask for the same, or it is not the same request.
REQUESTED_TTL_ANNOTATION = "nsprov.io/requested-ttl"
# What a tenant may do inside its namespace, for the admission policies to read through
# namespaceObject (k8s/admission-policy.yaml): the longest pod grace period in seconds, the
# Service types and the extra finalizers it may add, the lists comma-separated.
MAX_GRACE_ANNOTATION = "nsprov.io/max-grace-seconds"
SERVICE_TYPES_ANNOTATION = "nsprov.io/service-types"
FINALIZERS_ANNOTATION = "nsprov.io/finalizers"
ROLLED_BACK_ANNOTATION = "nsprov.io/rolled-back"
"""On a namespace nsprov deleted before handing it out (a lost cap race, a failed bundle):
nothing of a tenant's is in it, so while it is being deleted it holds no cap slot."""
# A pooled namespace (made in advance for one profile, no owner yet): the profile's hash
# (pool_hash) while it waits, "true" under the second label once all its objects exist and
# the authorizer allows its grant, and the tenant it waits for. A claim removes all three.
POOL_LABEL = "nsprov.io/pool"
POOL_READY_LABEL = "nsprov.io/pool-ready"
POOL_TENANT_ANNOTATION = "nsprov.io/pool-tenant"
SERVICE_ACCOUNT = "namespace-provisioner"
ROLE_BINDING = "namespace-provisioner"
# The bounds of a template: one object each, all named so.
BOUNDS_NAME = "namespace-provisioner"
NETWORKING_GROUP = "networking.k8s.io"
RBAC_GROUP = "rbac.authorization.k8s.io"
# TokenRequest refuses expirationSeconds below 10 minutes.
MIN_TOKEN_SECONDS = 600
_PSA_PREFIX = "pod-security.kubernetes.io/"
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_RANDOM_LENGTH = 10  # 50 bits: collisions are not a practical concern
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class Selector:
    """The ``key=value`` label that marks everything nsprov made."""

    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Selector:
        key, sep, value = text.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"selector {text!r} must be key=value")
        return cls(key.strip(), value.strip())

    def __str__(self) -> str:
        return f"{self.key}={self.value}"

    def matches(self, labels: dict[str, str] | None) -> bool:
        return bool(labels) and labels.get(self.key) == self.value  # type: ignore[union-attr]


# Where the bundle's objects live in the API (cluster-wide collections are what we watch).
NAMESPACES_PATH = "/api/v1/namespaces"
SERVICE_ACCOUNTS_PATH = "/api/v1/serviceaccounts"
ROLE_BINDINGS_PATH = f"/apis/{RBAC_GROUP}/v1/rolebindings"
RESOURCE_QUOTAS_PATH = "/api/v1/resourcequotas"
LIMIT_RANGES_PATH = "/api/v1/limitranges"
NETWORK_POLICIES_PATH = f"/apis/{NETWORKING_GROUP}/v1/networkpolicies"


def namespace_path(name: str) -> str:
    return f"{NAMESPACES_PATH}/{name}"


def service_accounts_path(namespace_name: str) -> str:
    return f"{NAMESPACES_PATH}/{namespace_name}/serviceaccounts"


def token_path(namespace_name: str) -> str:
    return f"{service_accounts_path(namespace_name)}/{SERVICE_ACCOUNT}/token"


def role_bindings_path(namespace_name: str) -> str:
    return f"/apis/{RBAC_GROUP}/v1/namespaces/{namespace_name}/rolebindings"


def resource_quotas_path(namespace_name: str) -> str:
    return f"{NAMESPACES_PATH}/{namespace_name}/resourcequotas"


def limit_ranges_path(namespace_name: str) -> str:
    return f"{NAMESPACES_PATH}/{namespace_name}/limitranges"


def network_policies_path(namespace_name: str) -> str:
    return f"/apis/{NETWORKING_GROUP}/v1/namespaces/{namespace_name}/networkpolicies"


def cluster_role_path(name: str) -> str:
    return f"/apis/{RBAC_GROUP}/v1/clusterroles/{name}"


SELF_SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def bind_review(cluster_role: str) -> dict[str, Any]:
    """A SelfSubjectAccessReview: may the caller bind ``cluster_role`` (create RoleBindings to
    it without holding its rights)?"""
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "verb": "bind",
                "group": RBAC_GROUP,
                "resource": "clusterroles",
                "name": cluster_role,
            }
        },
    }


def is_dns_label(name: str) -> bool:
    """Whether ``name`` can be a namespace name (an RFC 1123 label)."""
    return len(name) <= 63 and _DNS_LABEL.fullmatch(name) is not None


def validate_prefix(prefix: str) -> str:
    if len(prefix) > 63 - 1 - _RANDOM_LENGTH or not _DNS_LABEL.fullmatch(prefix):
        raise ValueError(
            f"prefix {prefix!r} must be a DNS label of at most {62 - _RANDOM_LENGTH} characters"
        )
    return prefix


def random_name(prefix: str) -> str:
    """``<prefix>-<random>``: unguessable, so names reveal nothing about other tenants."""
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return f"{prefix}-{suffix}"


def idempotent_name(prefix: str, owner: str, key: str) -> tuple[str, str]:
    """The name and label value for a request carrying an Idempotency-Key.

    Deriving the name from (owner, key) makes the API server itself the lock:
    a concurrent or retried POST with the same key runs into AlreadyExists
    instead of creating a second namespace.
    """
    digest = hashlib.sha256(f"{owner}\0{key}".encode()).digest()
    suffix = "".join(_ALPHABET[b % 32] for b in digest[:_RANDOM_LENGTH])
    return f"{prefix}-{suffix}", digest.hex()[:40]


def keyed_name(prefix: str, owner: str, key: str) -> tuple[str, str]:
    """The name and label value of ``owner``'s namespace for the preview key ``key``.

    As with ``idempotent_name``, the name derived from (owner, key) makes the API server
    the lock: concurrent creates with one key run into AlreadyExists, so a key never
    has two namespaces. The digest is of another domain than an Idempotency-Key's, so
    a preview key and an Idempotency-Key that happen to be equal name two namespaces;
    the owner is in it, so another owner's same key names another namespace.
    """
    digest = hashlib.sha256(f"key\0{owner}\0{key}".encode()).digest()
    suffix = "".join(_ALPHABET[b % 32] for b in digest[:_RANDOM_LENGTH])
    return f"{prefix}-{suffix}", digest.hex()[:40]


def key_of(metadata: dict[str, Any]) -> str | None:
    """The preview key a namespace was made with (None: made without one)."""
    value = (metadata.get("annotations") or {}).get(KEY_ANNOTATION)
    return value if isinstance(value, str) else None


def namespace_labels(
    selector: Selector, expires_at: int, pod_security: str, idempotency: str | None
) -> dict[str, str]:
    labels = {selector.key: selector.value, EXPIRES_AT_LABEL: str(expires_at)}
    if pod_security:
        labels[_PSA_PREFIX + "enforce"] = pod_security
        labels[_PSA_PREFIX + "enforce-version"] = "latest"
    if idempotency:
        labels[IDEMPOTENCY_LABEL] = idempotency
    return labels


def bound_annotations(template: Template) -> dict[str, str]:
    """The annotations that tell the admission policies a template's bounds on the tenant.

    CEL cannot parse the template's JSON record, so the three values it needs are
    spelled out: a whole number and two comma-separated lists (no Service type or
    finalizer name contains a comma). An empty finalizers list is written as ``""``
    rather than left out, so the namespace says "none" instead of "made before this".
    """
    return {
        MAX_GRACE_ANNOTATION: str(template.max_grace_seconds),
        SERVICE_TYPES_ANNOTATION: ",".join(template.service_types),
        FINALIZERS_ANNOTATION: ",".join(template.finalizers),
    }


def owner_hash(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:40]


def namespace(
    name: str,
    *,
    selector: Selector,
    owner: str,
    template: Template,
    expires_at: int,
    idempotency: str | None = None,
    requested_ttl: float | None = None,
    tenant: str | None = None,
    requested_by: str | None = None,
    key: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The Namespace, with its expiry label and its template's record from the very first write.

    The template's extra labels and annotations go first: nsprov's own keys always win
    (the policy file refuses reserved keys; the selector key is checked here).
    """
    annotations = {
        **template.annotations,
        OWNER_ANNOTATION: owner,
        CLUSTER_ROLE_ANNOTATION: template.cluster_roles[0],
        TEMPLATE_ANNOTATION: template.record(),
        **bound_annotations(template),
    }
    if requested_ttl is not None:
        annotations[REQUESTED_TTL_ANNOTATION] = f"{float(requested_ttl)!r}s"
    if tenant:
        annotations[TENANT_ANNOTATION] = tenant
    if requested_by:
        annotations[REQUESTED_BY_ANNOTATION] = requested_by
    labels = {
        **{k: v for k, v in template.labels.items() if k != selector.key},
        **namespace_labels(selector, expires_at, template.pod_security, idempotency),
        OWNER_HASH_LABEL: owner_hash(owner),
    }
    if tenant:
        labels[TENANT_LABEL] = tenant
    if key is not None:  # (the key, its digest with the owner: keyed_name)
        annotations[KEY_ANNOTATION], labels[KEY_LABEL] = key
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
    }


def pool_hash(tenant: str | None, template: Template, grant_fingerprints: list[str]) -> str:
    """What a pooled namespace is made for, as a label value: the tenant, the template and
    the rules of its grants as last seen. A pooled namespace whose hash is not its profile's
    now is stale: deleted, never handed out."""
    text = "\0".join([tenant or "", template.record(), *grant_fingerprints])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def pooled_namespace(
    name: str,
    *,
    selector: Selector,
    template: Template,
    tenant: str | None,
    expires_at: int,
    pool: str,
) -> dict[str, Any]:
    """A namespace made in advance: as ``namespace()`` makes it, but with no owner and no
    tenant label or annotation, so it counts in no caller's caps and no caller sees it,
    and with the pool's labels. Its expiry is the pool's maxAge."""
    manifest = namespace(
        name, selector=selector, owner="", template=template, expires_at=expires_at
    )
    metadata = manifest["metadata"]
    del metadata["annotations"][OWNER_ANNOTATION]
    del metadata["labels"][OWNER_HASH_LABEL]
    metadata["labels"][POOL_LABEL] = pool
    if tenant:
        metadata["annotations"][POOL_TENANT_ANNOTATION] = tenant
    return manifest


def pool_ready_patch(metadata: dict[str, Any]) -> dict[str, Any]:
    """Mark a pooled namespace claimable (compare-and-swap on its resourceVersion)."""
    return {
        "metadata": {
            "resourceVersion": metadata.get("resourceVersion"),
            "labels": {POOL_READY_LABEL: "true"},
        }
    }


def claim_patch(
    metadata: dict[str, Any],
    *,
    owner: str,
    tenant: str | None,
    expires_at: int,
    requested_ttl: float,
    idempotency: str | None = None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """The one write that hands a pooled namespace to a caller: it says what ``namespace()``
    would have said for this request (owner, expiry, tenant, ...) and is pooled no more.

    The resourceVersion makes it a compare-and-swap: of two replicas claiming the same
    namespace, one wins and the other gets 409 and takes the next; a namespace that
    changed since it was read (deleted as stale, expired) is not claimed either.
    """
    labels: dict[str, str | None] = {
        POOL_LABEL: None,
        POOL_READY_LABEL: None,
        EXPIRES_AT_LABEL: str(expires_at),
        OWNER_HASH_LABEL: owner_hash(owner),
    }
    annotations: dict[str, str | None] = {
        POOL_TENANT_ANNOTATION: None,
        OWNER_ANNOTATION: owner,
        REQUESTED_TTL_ANNOTATION: f"{float(requested_ttl)!r}s",
    }
    if tenant:
        labels[TENANT_LABEL] = tenant
        annotations[TENANT_ANNOTATION] = tenant
    if idempotency:
        labels[IDEMPOTENCY_LABEL] = idempotency
    if requested_by:
        annotations[REQUESTED_BY_ANNOTATION] = requested_by
    return {
        "metadata": {
            "resourceVersion": metadata.get("resourceVersion"),
            "labels": labels,
            "annotations": annotations,
        }
    }


def pool_of(metadata: dict[str, Any]) -> str | None:
    """The profile hash a pooled namespace waits for; None when it is not pooled."""
    return (metadata.get("labels") or {}).get(POOL_LABEL)


def is_pooled(metadata: dict[str, Any]) -> bool:
    return pool_of(metadata) is not None


def is_pool_ready(metadata: dict[str, Any]) -> bool:
    return (metadata.get("labels") or {}).get(POOL_READY_LABEL) == "true"


def ready_pool_of(namespace: dict[str, Any]) -> str | None:
    """The profile hash a ready pooled namespace waits to be claimed for; None when it is
    not one (not pooled, or not ready yet): the Namespace informer's index."""
    metadata = namespace.get("metadata") or {}
    return pool_of(metadata) if is_pool_ready(metadata) else None


def pool_tenant_of(metadata: dict[str, Any]) -> str | None:
    return (metadata.get("annotations") or {}).get(POOL_TENANT_ANNOTATION)


def _own_key(key: str, selector: Selector) -> bool:
    """A label or annotation nsprov writes for itself: never a template's to set or remove."""
    return key == selector.key or key.startswith(("nsprov.io/", _PSA_PREFIX))


def template_patch(
    metadata: dict[str, Any], selector: Selector, template: Template, tenant: str | None
) -> dict[str, Any]:
    """The merge patch that makes a live namespace say ``template``: what a roll-out writes.

    Everything ``namespace()`` derives from the template is set: the record, the first
    ClusterRole, the Pod Security labels (removed, with null, when the new template has
    no level), the bounds the admission policies read (``bound_annotations``) and the
    extra labels and annotations. Extra keys the namespace's old
    record had and the new one has not are removed; a namespace made before templates
    had none. Nothing else is touched: not the expiry, the owner, the requested ttl.
    With ``tenant`` the tenant label is written too (namespaces made before it existed
    carry the annotation only, and the tenant's cap counts by the label). The
    resourceVersion makes the patch a compare-and-swap: if the namespace changed since
    it was read, the API server refuses (409) and the caller reads it again.
    """
    old = template_of(metadata)
    old_labels = old.labels if old is not None else {}
    old_annotations = old.annotations if old is not None else {}
    labels: dict[str, str | None] = {k: None for k in old_labels if k not in template.labels}
    labels.update(template.labels)
    annotations: dict[str, str | None] = {
        k: None for k in old_annotations if k not in template.annotations
    }
    annotations.update(template.annotations)
    labels = {k: v for k, v in labels.items() if not _own_key(k, selector)}
    annotations = {k: v for k, v in annotations.items() if not _own_key(k, selector)}
    level = template.pod_security or None
    labels[_PSA_PREFIX + "enforce"] = level
    labels[_PSA_PREFIX + "enforce-version"] = "latest" if level else None
    if tenant:
        labels[TENANT_LABEL] = tenant
    annotations[CLUSTER_ROLE_ANNOTATION] = template.cluster_roles[0]
    annotations[TEMPLATE_ANNOTATION] = template.record()
    annotations.update(bound_annotations(template))
    return {
        "metadata": {
            "resourceVersion": metadata.get("resourceVersion"),
            "labels": labels,
            "annotations": annotations,
        }
    }


def service_account(namespace_name: str, selector: Selector) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": SERVICE_ACCOUNT,
            "namespace": namespace_name,
            "labels": {selector.key: selector.value},
        },
        # Tokens come from TokenRequest only; nothing should mount one into pods.
        "automountServiceAccountToken": False,
    }


def role_binding_name(index: int) -> str:
    """The first binding keeps the name it always had; more roles get -2, -3, ..."""
    return ROLE_BINDING if index == 0 else f"{ROLE_BINDING}-{index + 1}"


def role_binding(
    namespace_name: str, selector: Selector, cluster_role: str, index: int = 0
) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": role_binding_name(index),
            "namespace": namespace_name,
            "labels": {selector.key: selector.value},
        },
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
        "subjects": [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace_name}
        ],
    }


def _bound(namespace_name: str, selector: Selector, kind: str, api: str) -> dict[str, Any]:
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {
            "name": BOUNDS_NAME,
            "namespace": namespace_name,
            "labels": {selector.key: selector.value},
        },
    }


def resource_quota(
    namespace_name: str, selector: Selector, hard: dict[str, str] | Any
) -> dict[str, Any]:
    quota = _bound(namespace_name, selector, "ResourceQuota", "v1")
    quota["spec"] = {"hard": dict(hard)}
    return quota


def resource_quota_status_path(namespace_name: str) -> str:
    return f"{resource_quotas_path(namespace_name)}/{BOUNDS_NAME}/status"


def quota_in_force(quota: dict[str, Any]) -> dict[str, Any] | None:
    """The status write that puts a ResourceQuota's ``spec.hard`` in force now; None if
    ``status.hard`` says it already.

    The API server enforces a quota by its *status*, which the resource-quota controller
    (kube-controller-manager) fills in: a just-created quota limits nothing, and a
    changed one keeps its old limits, until it has. A job could create without bound, or
    beyond a lowered limit, for as long as the controller lags or is down. So nsprov
    writes ``status.hard`` itself, keeping the usage already counted for resources still
    limited; a resource with no count yet (every one of a new quota) makes admission
    refuse its creates ("status unknown for quota") until the controller has counted
    it: fail-closed from the first instant. The body carries the quota's
    resourceVersion: if the controller wrote the status meanwhile, the PUT fails (409)
    and overwrites nothing.
    """
    hard = (quota.get("spec") or {}).get("hard") or {}
    status = quota.get("status") or {}
    if not hard or same_quantities(status.get("hard"), hard):
        return None
    in_force: dict[str, Any] = {"hard": dict(hard)}
    used = {k: v for k, v in (status.get("used") or {}).items() if k in hard}
    if used:
        in_force["used"] = used
    return {**quota, "status": in_force}


def quota_counted(quota: dict[str, Any]) -> bool:
    """Whether the resource-quota controller has counted usage for every limit of ``quota``."""
    status = quota.get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    return bool(hard) and set(hard) <= set(used)


def limit_range_item(spec: Any) -> dict[str, Any]:
    """The Container item as the API server stores it, its defaulting done here.

    The API server fills a missing ``default`` from ``max`` and a missing
    ``defaultRequest`` from ``default``, then from ``min`` (core/v1 defaults for
    LimitRangeItem). Sending the filled-in item means what is stored is what nsprov
    sent, so a comparison finds real changes only.
    """
    item: dict[str, Any] = {"type": "Container"}
    for key, values in spec.items():
        item[key] = dict(values)
    default = {**item.get("max", {}), **item.get("default", {})}
    request = {**item.get("min", {}), **default, **item.get("defaultRequest", {})}
    if default:
        item["default"] = default
    if request:
        item["defaultRequest"] = request
    return item


def limit_range(namespace_name: str, selector: Selector, spec: Any) -> dict[str, Any]:
    limits = _bound(namespace_name, selector, "LimitRange", "v1")
    limits["spec"] = {"limits": [limit_range_item(spec)]}
    return limits


def network_policy_spec(isolated_egress: bool) -> dict[str, Any]:
    """Ingress only from the namespace's own pods; with ``isolated_egress`` egress likewise,
    plus DNS to kube-system (a pod that cannot resolve names is of little use).

    Every field the API server would default is spelled out, so what is stored is what
    nsprov sent.
    """
    same_namespace: list[dict[str, Any]] = [{"podSelector": {}}]
    spec: dict[str, Any] = {
        "podSelector": {},
        "ingress": [{"from": same_namespace}],
        "policyTypes": ["Ingress"],
    }
    if isolated_egress:
        dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
        spec["egress"] = [
            {"to": same_namespace},
            {
                "to": [dns],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            },
        ]
        spec["policyTypes"] = ["Ingress", "Egress"]
    return spec


def network_policy(
    namespace_name: str, selector: Selector, isolated_egress: bool
) -> dict[str, Any]:
    policy = _bound(namespace_name, selector, "NetworkPolicy", f"{NETWORKING_GROUP}/v1")
    policy["spec"] = network_policy_spec(isolated_egress)
    return policy


@dataclass(frozen=True)
class Wanted:
    """One object a namespace's template calls for, and where it is created."""

    kind: str
    """Lower-case kind, as metrics and logs name it."""
    collection: str
    name: str
    body: dict[str, Any]


def wanted_objects(namespace_name: str, selector: Selector, template: Template) -> list[Wanted]:
    """Everything in the namespace the template calls for, but the ServiceAccount."""
    found = [
        Wanted(
            "rolebinding",
            role_bindings_path(namespace_name),
            role_binding_name(i),
            role_binding(namespace_name, selector, role, i),
        )
        for i, role in enumerate(template.cluster_roles)
    ]
    if template.resource_quota:
        found.append(
            Wanted(
                "resourcequota",
                resource_quotas_path(namespace_name),
                BOUNDS_NAME,
                resource_quota(namespace_name, selector, template.resource_quota),
            )
        )
    if template.limit_range:
        found.append(
            Wanted(
                "limitrange",
                limit_ranges_path(namespace_name),
                BOUNDS_NAME,
                limit_range(namespace_name, selector, template.limit_range),
            )
        )
    if template.network_policy == "isolated":
        found.append(
            Wanted(
                "networkpolicy",
                network_policies_path(namespace_name),
                BOUNDS_NAME,
                network_policy(namespace_name, selector, template.isolated_egress),
            )
        )
    return found


def nsprov_object_names(namespace_name: str) -> list[tuple[str, str, str]]:
    """(kind, name, collection) of every object a template may have put in a namespace."""
    bindings = role_bindings_path(namespace_name)
    found = [("rolebinding", role_binding_name(i), bindings) for i in range(MAX_CLUSTER_ROLES)]
    found += [
        ("resourcequota", BOUNDS_NAME, resource_quotas_path(namespace_name)),
        ("limitrange", BOUNDS_NAME, limit_ranges_path(namespace_name)),
        ("networkpolicy", BOUNDS_NAME, network_policies_path(namespace_name)),
    ]
    return found


def quantity(text: object) -> Decimal | None:
    """A Kubernetes quantity (``500m``, ``8Gi``) in base units (cores, bytes, objects);
    None when ``text`` is not one. Parsed once per distinct text: thousands of quotas
    hold the same few limits."""
    return _parse_quantity(text) if isinstance(text, str) else None


@functools.lru_cache(maxsize=4096)
def _parse_quantity(text: str) -> Decimal | None:
    # Imported here: the command line imports this module, and must start without the
    # server's libraries (kubernetes is not installed with the client alone).
    from kubernetes.utils import parse_quantity

    try:
        return parse_quantity(text)  # type: ignore[no-any-return]
    except (ValueError, TypeError, ArithmeticError):
        return None


def _as_stored(text: str) -> Decimal | None:
    """A quantity as the API server stores it in a quota or limit range: rounded up to a
    milli-unit (1.5m -> 2m, 1.0001 -> 1001m, 100u -> 1m)."""
    value = quantity(text)
    if value is None:
        return None
    return (value * 1000).to_integral_value(rounding=ROUND_CEILING) / 1000


def same_quantities(have: object, want: dict[str, str]) -> bool:
    """``have`` (as stored: 0.5 comes back as 500m, 1.5m as 2m) holds exactly ``want``'s
    quantities."""
    if not isinstance(have, dict) or set(have) != set(want):
        return False
    return all(
        quantity(have[k]) is not None and quantity(have[k]) == _as_stored(v)
        for k, v in want.items()
    )


def is_right(existing: dict[str, Any], wanted: Wanted) -> bool:
    """Whether an object in the cluster still says what the template wants."""
    body = wanted.body
    if wanted.kind == "rolebinding":
        return bool(
            existing.get("roleRef") == body["roleRef"]
            and existing.get("subjects") == body["subjects"]
        )
    spec = existing.get("spec") or {}
    if wanted.kind == "resourcequota":
        other = {k: v for k, v in spec.items() if k != "hard"}
        return not other and same_quantities(spec.get("hard"), body["spec"]["hard"])
    if wanted.kind == "limitrange":
        have, want = spec.get("limits") or [], body["spec"]["limits"]
        if len(have) != len(want) or not isinstance(have[0], dict):
            return False
        item, wanted_item = have[0], want[0]
        if set(item) != set(wanted_item) or item.get("type") != "Container":
            return False
        return all(same_quantities(item[k], wanted_item[k]) for k in wanted_item if k != "type")
    if wanted.kind == "networkpolicy":
        return bool(spec == body["spec"])
    raise ValueError(f"unknown kind {wanted.kind!r}")


def is_nsprov_quota(quota: dict[str, Any], selector: Selector) -> bool:
    """Whether a ResourceQuota is the one nsprov puts in a namespace (its name, its label)."""
    metadata = quota.get("metadata") or {}
    return metadata.get("name") == BOUNDS_NAME and selector.matches(metadata.get("labels"))


def quota_usage(quota: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(hard, used) of a ResourceQuota, as quantities written by Kubernetes.

    Both come from ``status``, which kube-controller-manager's quota controller
    fills in a moment after the quota is created (and keeps current). Until it has,
    ``hard`` is the spec's (what the quota will enforce) and ``used`` is empty.
    """
    status = quota.get("status") or {}
    hard = status.get("hard") or (quota.get("spec") or {}).get("hard") or {}
    used = status.get("used") or {}
    return _strings(hard), _strings(used)


def _strings(quantities: object) -> dict[str, str]:
    if not isinstance(quantities, dict):
        return {}
    return {str(k): str(v) for k, v in quantities.items()}


def template_of(metadata: dict[str, Any]) -> Template | None:
    """The template a namespace records; None for namespaces made before templates (or garbled).

    Such a namespace keeps what it has: its RoleBinding to ``nsprov.io/cluster-role``
    is repaired, nothing else is added or taken away.
    """
    raw = (metadata.get("annotations") or {}).get(TEMPLATE_ANNOTATION)
    return Template.from_record(raw) if isinstance(raw, str) else None


def token_seconds(seconds_left: float) -> int:
    """TokenRequest lifetime: the namespace's remaining life, never below the API minimum."""
    return max(MIN_TOKEN_SECONDS, int(seconds_left) + 60)


def token_request(seconds: int) -> dict[str, Any]:
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": seconds},
    }


def is_managed(metadata: dict[str, Any] | None, selector: Selector) -> bool:
    return bool(metadata) and selector.matches((metadata or {}).get("labels"))


def owner_of(metadata: dict[str, Any]) -> str | None:
    return (metadata.get("annotations") or {}).get(OWNER_ANNOTATION)


def requested_ttl_of(metadata: dict[str, Any]) -> float | None:
    """The ttl the creating request asked for, in seconds; None if not recorded (or garbled)."""
    raw = (metadata.get("annotations") or {}).get(REQUESTED_TTL_ANNOTATION)
    if not isinstance(raw, str) or not raw.endswith("s"):
        return None
    try:
        return float(raw[:-1])
    except ValueError:
        return None


def tenant_of(metadata: dict[str, Any]) -> str | None:
    return (metadata.get("annotations") or {}).get(TENANT_ANNOTATION)


def belongs_to(metadata: dict[str, Any], owner: str, tenant: str | None) -> bool:
    """Whether the caller (owner, tenant) may see and change this namespace.

    The owner must match, and so must the tenant when both the namespace and the
    caller have one: two tenants whose owner templates render the same owner (a
    main-branch tenant and a pull-request tenant of one repository, say) never see
    each other's namespaces. A namespace made before a policy file (no tenant) stays
    its owner's.
    """
    if owner_of(metadata) != owner:
        return False
    recorded = tenant_of(metadata)
    return recorded is None or tenant is None or recorded == tenant


def cluster_role_of(metadata: dict[str, Any]) -> str | None:
    return (metadata.get("annotations") or {}).get(CLUSTER_ROLE_ANNOTATION)


def legacy_template(metadata: dict[str, Any], default_role: str) -> Template:
    """What a namespace made before templates (no record) is: one RoleBinding, to the role
    it recorded (``nsprov.io/cluster-role``), else ``default_role``; no bounds."""
    return Template((cluster_role_of(metadata) or default_role,))


def expires_at_of(metadata: dict[str, Any]) -> int | None:
    raw = (metadata.get("labels") or {}).get(EXPIRES_AT_LABEL)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"
_USUAL_TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z", re.ASCII)
_EPOCH_DAY = datetime.date(1970, 1, 1).toordinal()


def unix_time(raw: object) -> int | None:
    """An API server timestamp (RFC 3339, whole seconds, UTC) as unix seconds; None if not one.

    What ``time.strptime`` accepts with ``_TIMESTAMP``, and nothing else; it is asked only
    about the unusual (one-digit fields, a leap second, non-ASCII digits, a lower-case t):
    it took 5 µs a call, and a pooled POST reads a timestamp per namespace it tries to claim.
    """
    if not isinstance(raw, str):
        return None
    usual = _USUAL_TIMESTAMP.fullmatch(raw)
    if usual is None:
        return _unix_time_strptime(raw)
    year, month, day, hour, minute, second = map(int, usual.groups())
    if hour > 23 or minute > 59 or second > 59:
        return _unix_time_strptime(raw)
    try:
        days = datetime.date(year, month, day).toordinal() - _EPOCH_DAY
    except ValueError:  # month 13, 30 February, year 0: strptime refuses them too
        return None
    return days * 86400 + hour * 3600 + minute * 60 + second


def _unix_time_strptime(raw: str) -> int | None:
    try:
        return calendar.timegm(time.strptime(raw, _TIMESTAMP))
    except ValueError:
        return None


def created_at_of(metadata: dict[str, Any]) -> int | None:
    """creationTimestamp as unix seconds."""
    return unix_time(metadata.get("creationTimestamp"))


def is_terminating(obj: dict[str, Any]) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def is_rolled_back(obj: dict[str, Any]) -> bool:
    """Being deleted by nsprov before anyone was handed it (ROLLED_BACK_ANNOTATION)."""
    return is_terminating(obj) and is_marked_rolled_back(obj)


def is_marked_rolled_back(obj: dict[str, Any]) -> bool:
    """Marked by a rollback, which was handed to nobody; its DELETE may not have landed yet."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return annotations.get(ROLLED_BACK_ANNOTATION) == "true"


def delete_exactly(uid: str, resource_version: str | None = None) -> dict[str, Any]:
    """DeleteOptions for the object we looked at and no other.

    The UID precondition makes the API server refuse (409) when the name now belongs
    to an object created since; with ``resource_version`` it also refuses when the
    object changed since we judged it (say, its expiry was extended a moment ago).
    Background propagation returns at once and leaves emptying to the namespace
    controller and the garbage collector.
    """
    preconditions = {"uid": uid}
    if resource_version:
        preconditions["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": preconditions,
        "propagationPolicy": "Background",
    }
