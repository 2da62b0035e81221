"""Is the grant ClusterRole safe to hand to tenants?

Each tenant's RoleBinding points at the grant, so whatever it allows, every CI
job may do inside its namespace. Some rights would let a job undo nsprov's
guarantees: editing its own Namespace (lifting the expiry label or the Pod
Security level), creating or changing RoleBindings or Roles (granting itself
more, or keeping a foothold), minting tokens, rewriting the quota, limits or
network policy that bound it, or anything through a wildcard.
nsprov refuses to start with such a grant unless told it is intended.

A grant can change while nsprov runs, so the check does not end at start:
``GrantGuard`` holds what nsprov last learned about the grant (the app keeps it
current from a watch on that one ClusterRole) and fails closed. While the
grant is missing, unreadable or unsafe, nothing new is handed out (POST and
PATCH answer 503 naming the grant); reading and deleting namespaces go on.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from nsprov.bundle import RBAC_GROUP as _RBAC_GROUP
from nsprov.errors import GrantUnusable

log = logging.getLogger(__name__)

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


class GrantGuard:
    """What nsprov last learned about the grant ClusterRole; ``require()`` before handing it out.

    Fails closed: until the grant has been read and found safe (or unsafe, with
    ``allow_unsafe``), ``require()`` raises. ``--allow-unsafe-grant`` covers an unsafe
    grant, never one nsprov cannot read: a grant nobody checked is not an intended one.
    Changes of state are logged once each, not on every event.
    """

    def __init__(self, name: str, *, allow_unsafe: bool = False) -> None:
        self.name = name
        self.allow_unsafe = allow_unsafe
        self._lock = threading.Lock()
        self._refusal: str | None = f"grant ClusterRole {name!r} has not been checked yet"
        self._allowed_reasons: list[str] = []

    def saw(self, cluster_role: dict[str, Any] | None) -> list[str]:
        """The grant as the API server has it now (None: it does not exist); its unsafe reasons."""
        if cluster_role is None:
            self._set(f"grant ClusterRole {self.name!r} does not exist")
            return []
        reasons = unsafe_reasons(cluster_role)
        if not reasons:
            self._set(None)
        elif self.allow_unsafe:
            if reasons != self._allowed_reasons:
                log.warning("%s (allowed by --allow-unsafe-grant)", self._unsafe(reasons))
            self._set(None)
        else:
            self._set(self._unsafe(reasons) + " (fix it, or pass --allow-unsafe-grant=true)")
        self._allowed_reasons = reasons if self.allow_unsafe else []
        return reasons

    def unreadable(self, why: object) -> None:
        """nsprov may not read the grant (403, 401, ...): it cannot know what it hands out."""
        log.debug("grant ClusterRole %r unreadable: %s", self.name, why)
        self._set(
            f"nsprov cannot read grant ClusterRole {self.name!r} (it needs get, list and "
            "watch on it; see nsprov's log)"
        )

    def refusal(self) -> str | None:
        """Why nothing may be handed out now; None when the grant is usable."""
        with self._lock:
            return self._refusal

    def require(self) -> None:
        refusal = self.refusal()
        if refusal is not None:
            raise GrantUnusable(f"{refusal}; provisioning is paused until it is fixed")

    def _unsafe(self, reasons: list[str]) -> str:
        return f"grant ClusterRole {self.name!r} is unsafe for tenants: {'; '.join(reasons)}"

    def _set(self, refusal: str | None) -> None:
        with self._lock:
            previous, self._refusal = self._refusal, refusal
        if refusal == previous:
            return
        if refusal is None:
            log.info("grant ClusterRole %r checked: provisioning enabled", self.name)
        else:
            log.warning("%s: provisioning paused (POST and PATCH answer 503)", refusal)
