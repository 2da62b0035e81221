"""Is the grant ClusterRole safe to hand to tenants?

Each tenant's RoleBinding points at the grant, so whatever it allows, every CI
job may do inside its namespace. Some rights would let a job undo nsprov's
guarantees: editing its own Namespace (lifting the expiry label or the Pod
Security level), creating or changing RoleBindings or Roles (granting itself
more, or keeping a foothold), minting tokens, rewriting the quota, limits or
network policy that bound it, or anything through a wildcard.
nsprov refuses to start with such a grant unless told it is intended.
"""

from __future__ import annotations

from typing import Any

from nsprov.bundle import RBAC_GROUP as _RBAC_GROUP

_WRITE = {"create", "update", "patch", "delete", "deletecollection", "*"}
_RISKY_RBAC_VERBS = _WRITE | {"bind", "escalate", "impersonate"}
# What nsprov sets up in each namespace to bound a tenant (quota, limits, isolation):
# a tenant that could rewrite these would lift its own bounds.
_BOUNDS = {
    ("", "resourcequotas"): "quota",
    ("", "limitranges"): "limits",
    ("networking.k8s.io", "networkpolicies"): "network policy",
    ("extensions", "networkpolicies"): "network policy",
}


def _has(values: list[str] | None, *wanted: str) -> bool:
    return bool(values) and any(v in (values or []) for v in wanted)


def _base(resource: str) -> str:
    """``namespaces/finalize`` -> ``namespaces``: a subresource writes its parent object."""
    return resource.partition("/")[0]


def unsafe_reasons(cluster_role: dict[str, Any]) -> list[str]:
    """Why a ClusterRole (as the API returns it) is unsafe as a grant; empty when it is fine.

    A subresource counts as its parent: ``namespaces/finalize`` and ``namespaces/status``
    updates write the Namespace's labels too. A ``*`` anywhere in a resource (``*``,
    ``*/status``, ``*/token``, ``pods/*``) matches things nobody listed, including
    resources and subresources the API server only gains later.
    """
    reasons: list[str] = []
    if cluster_role.get("aggregationRule"):
        reasons.append("it aggregates other ClusterRoles, so its rules can grow unseen")
    for rule in cluster_role.get("rules") or []:
        groups, resources, verbs = (
            rule.get("apiGroups") or [],
            rule.get("resources") or [],
            rule.get("verbs") or [],
        )
        if "*" in verbs or "*" in groups or any("*" in r for r in resources):
            reasons.append(f"wildcard rule {_show(rule)}")
            continue
        bases = {_base(r) for r in resources}
        writes = bool(set(verbs) & _WRITE)
        if _has(groups, "") and "namespaces" in bases and writes:
            reasons.append(f"tenants could edit Namespaces (their expiry): {_show(rule)}")
        if _has(groups, _RBAC_GROUP) and (set(verbs) & _RISKY_RBAC_VERBS):
            reasons.append(f"tenants could change RBAC: {_show(rule)}")
        if _has(groups, "") and _has(resources, "serviceaccounts/token") and "create" in verbs:
            reasons.append(f"tenants could mint ServiceAccount tokens: {_show(rule)}")
        if "impersonate" in verbs or "escalate" in verbs:
            reasons.append(f"tenants could impersonate or escalate: {_show(rule)}")
        bounds = sorted({what for (group, res), what in _BOUNDS.items()
                         if group in groups and res in bases})  # fmt: skip
        if bounds and writes:
            reasons.append(f"tenants could change their own {' and '.join(bounds)}: {_show(rule)}")
    return list(dict.fromkeys(reasons))


def _show(rule: dict[str, Any]) -> str:
    groups = ",".join(rule.get("apiGroups") or []) or '""'
    resources = ",".join(rule.get("resources") or [])
    verbs = ",".join(rule.get("verbs") or [])
    return f"[{groups}] {resources}: {verbs}"
