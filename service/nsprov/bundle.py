"""What a provisioned namespace is: its names, labels and the objects that make it up.

The provisioner (which creates bundles) and the controller (which keeps them
whole and expires them) both read this module and nothing else about the shape
of a namespace, so the two can never disagree about it.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

EXPIRES_AT_LABEL = "nsprov.io/expires-at"
IDEMPOTENCY_LABEL = "nsprov.io/idempotency-key"
OWNER_ANNOTATION = "nsprov.io/owner"
# The policy tenant that admitted the caller, and a small JSON of who asked (audit claims).
TENANT_ANNOTATION = "nsprov.io/tenant"
REQUESTED_BY_ANNOTATION = "nsprov.io/requested-by"
# A digest of the owner as a label, so the API server can select one owner's namespaces
# (annotations cannot be selected on; an owner name may not fit a label value).
OWNER_HASH_LABEL = "nsprov.io/owner-hash"
# The grant is recorded on the namespace, so the controller repairs a RoleBinding to
# what it was provisioned with, whatever --cluster-role the repairing replica has.
CLUSTER_ROLE_ANNOTATION = "nsprov.io/cluster-role"
# The ttl the creating request asked for, as a Go duration in seconds ("1800.0s"): a replay
# with the same Idempotency-Key must ask for the same, or it is not the same request.
REQUESTED_TTL_ANNOTATION = "nsprov.io/requested-ttl"
SERVICE_ACCOUNT = "namespace-provisioner"
ROLE_BINDING = "namespace-provisioner"
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
ROLES_PATH = f"/apis/{RBAC_GROUP}/v1/roles"
ROLE_BINDINGS_PATH = f"/apis/{RBAC_GROUP}/v1/rolebindings"


def namespace_path(name: str) -> str:
    return f"{NAMESPACES_PATH}/{name}"


def service_accounts_path(namespace_name: str) -> str:
    return f"{NAMESPACES_PATH}/{namespace_name}/serviceaccounts"


def token_path(namespace_name: str) -> str:
    return f"{service_accounts_path(namespace_name)}/{SERVICE_ACCOUNT}/token"


def role_bindings_path(namespace_name: str) -> str:
    return f"/apis/{RBAC_GROUP}/v1/namespaces/{namespace_name}/rolebindings"


def cluster_role_path(name: str) -> str:
    return f"/apis/{RBAC_GROUP}/v1/clusterroles/{name}"


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


def owner_hash(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:40]


def namespace(
    name: str,
    *,
    selector: Selector,
    owner: str,
    cluster_role: str,
    expires_at: int,
    pod_security: str,
    idempotency: str | None = None,
    requested_ttl: float | None = None,
    tenant: str | None = None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """The Namespace, with its expiry label from the very first write."""
    annotations = {OWNER_ANNOTATION: owner, CLUSTER_ROLE_ANNOTATION: cluster_role}
    if requested_ttl is not None:
        annotations[REQUESTED_TTL_ANNOTATION] = f"{float(requested_ttl)!r}s"
    if tenant:
        annotations[TENANT_ANNOTATION] = tenant
    if requested_by:
        annotations[REQUESTED_BY_ANNOTATION] = requested_by
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                **namespace_labels(selector, expires_at, pod_security, idempotency),
                OWNER_HASH_LABEL: owner_hash(owner),
            },
            "annotations": annotations,
        },
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


def role_binding(namespace_name: str, selector: Selector, cluster_role: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": ROLE_BINDING,
            "namespace": namespace_name,
            "labels": {selector.key: selector.value},
        },
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
        "subjects": [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace_name}
        ],
    }


def role_binding_is_right(binding: dict[str, Any], namespace_name: str, cluster_role: str) -> bool:
    """Whether a RoleBinding still grants what the bundle says (else the controller repairs it)."""
    wanted = role_binding(namespace_name, Selector("", ""), cluster_role)
    return bool(
        binding.get("roleRef") == wanted["roleRef"]
        and binding.get("subjects") == wanted["subjects"]
    )


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


def expires_at_of(metadata: dict[str, Any]) -> int | None:
    raw = (metadata.get("labels") or {}).get(EXPIRES_AT_LABEL)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def unix_time(raw: object) -> int | None:
    """An API server timestamp (RFC 3339, whole seconds, UTC) as unix seconds; None if not one."""
    if not isinstance(raw, str):
        return None
    try:
        return calendar.timegm(time.strptime(raw, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def created_at_of(metadata: dict[str, Any]) -> int | None:
    """creationTimestamp as unix seconds."""
    return unix_time(metadata.get("creationTimestamp"))


def is_terminating(obj: dict[str, Any]) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


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
