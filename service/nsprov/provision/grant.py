"""Is the grant ClusterRole safe to hand to tenants?

Each tenant's RoleBinding points at the grant, so whatever it allows, every CI
job may do inside its namespace. Some rights would let a job undo nsprov's
guarantees: editing its own Namespace (lifting the expiry label or the Pod
Security level), creating or changing RoleBindings or Roles (granting itself
more, or keeping a foothold), minting tokens, rewriting the quota, limits or
network policy that bound it, writing endpoints (a Service's traffic sent to any
address, the cluster's own included: CVE-2021-25740), or anything through a
wildcard.
nsprov refuses to start with such a grant unless told it is intended.

A grant can change while nsprov runs, so the check does not end at start:
``GrantGuard`` holds what nsprov last learned about each grant (the app keeps it
current from a watch on the ClusterRoles) and fails closed. While a grant is
missing, unreadable or unsafe, nothing new is handed out with it (POST and PATCH
of the tenants that use it answer 503 naming the grant); reading and deleting
namespaces go on. A policy file naming an unsafe grant is refused as a whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from nsprov.core.errors import GrantUnusable, NsprovError
from nsprov.core.kube import Kube, KubeError
from nsprov.provision import bundle
from nsprov.provision.bundle import RBAC_GROUP as _RBAC_GROUP
from nsprov.provision.firstcall import representative_access

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.grant")

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


# Where a Service's traffic goes. The EndpointSlice controller writes them for Services
# with a selector; a tenant who may write them sends its Services' (and its Ingresses')
# traffic to any IP, also outside its namespace and past its network policy.
_ENDPOINTS = {("", "endpoints"), ("discovery.k8s.io", "endpointslices")}


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
    # An aggregated role (the built-in view, say) is judged by the rules the aggregation
    # controller has written into it: nsprov watches every ClusterRole, so when another
    # role joins the aggregation and the rules grow, the grant is judged again at once.
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
        if writes and any(group in groups and res in bases for group, res in _ENDPOINTS):
            reasons.append(
                "tenants could write endpoints (send Service traffic to any address, "
                f"CVE-2021-25740): {_show(rule)}"
            )
    return list(dict.fromkeys(reasons))


def _show(rule: dict[str, Any]) -> str:
    groups = ",".join(rule.get("apiGroups") or []) or '""'
    resources = ",".join(rule.get("resources") or [])
    verbs = ",".join(rule.get("verbs") or [])
    return f"[{groups}] {resources}: {verbs}"


def bind_refusal(kube: Kube, role: str) -> str | None:
    """Why ``kube``'s identity may not bind ClusterRole ``role``; None if it may.

    Binding a role without holding its rights needs ``bind`` on it, which nsprov's own
    ClusterRole grants by name. Asked (a SelfSubjectAccessReview) before a record names
    a role the controller would then fail to bind in a loop, and before a drifted
    RoleBinding is deleted for a replacement that could not be made.
    """
    try:
        answer = kube.post(bundle.SELF_SUBJECT_ACCESS_REVIEWS, bundle.bind_review(role))
    except (KubeError, NsprovError) as exc:
        return f"cannot check that nsprov may bind grant ClusterRole {role!r}: {exc}"
    if (answer.get("status") or {}).get("allowed"):
        return None
    return (
        f"nsprov may not bind grant ClusterRole {role!r}: add it under 'bind' in "
        "nsprov's own ClusterRole (k8s/clusterrole.yaml)"
    )


class GrantGuard:
    """What nsprov last learned about each grant ClusterRole; ``require()`` before handing out.

    With a policy file every tenant may have grants of its own, so the guard holds a
    verdict per ClusterRole, fed by a watch on all of them (``listed`` after each list,
    ``saw`` on each event). Fails closed: a role not yet seen (before the first list)
    or missing is refused, and so is every role while nsprov cannot read them.
    ``--allow-unsafe-grant`` covers an unsafe grant, never one nsprov cannot read: a
    grant nobody checked is not an intended one. Changes of a role in use (``in_use``)
    are logged once each, not on every event.
    """

    def __init__(self, in_use: Callable[[], Iterable[str]], *, allow_unsafe: bool = False) -> None:
        self.in_use = in_use
        self.allow_unsafe = allow_unsafe
        self._lock = threading.Lock()
        self._verdicts: dict[str, str | None] = {}  # name -> why it is refused (None: usable)
        self._reasons: dict[str, list[str]] = {}  # name -> why it is unsafe (allowed or not)
        # name -> one right it grants (firstcall.py), and a digest of all its rules
        self._accesses: dict[str, dict[str, str] | None] = {}
        self._fingerprints: dict[str, str] = {}
        self._listed = False
        self._unreadable = False
        self._logged: dict[str, tuple[str | None, tuple[str, ...]]] = {}

    def saw(self, name: str, cluster_role: dict[str, Any] | None) -> list[str]:
        """Role ``name`` as the API server has it now (None: it does not exist); its unsafe
        reasons."""
        with self._lock:
            reasons = self._judge(name, cluster_role)
        self._log_changes()
        return reasons

    def listed(self, cluster_roles: Iterable[dict[str, Any]]) -> None:
        """A complete list of the ClusterRoles: whatever is not in it does not exist."""
        with self._lock:
            self._verdicts.clear()
            self._reasons.clear()
            self._accesses.clear()
            self._fingerprints.clear()
            for role in cluster_roles:
                self._judge(role["metadata"]["name"], role)
            self._listed, self._unreadable = True, False
        self._log_changes()

    def _judge(self, name: str, cluster_role: dict[str, Any] | None) -> list[str]:
        if cluster_role is None:
            self._verdicts.pop(name, None)
            self._reasons.pop(name, None)
            self._accesses.pop(name, None)
            self._fingerprints.pop(name, None)
            return []
        reasons = unsafe_reasons(cluster_role)
        self._accesses[name] = representative_access(cluster_role)
        rules = json.dumps(cluster_role.get("rules") or [], sort_keys=True)
        self._fingerprints[name] = hashlib.sha256(rules.encode()).hexdigest()[:16]
        self._reasons[name] = reasons
        if reasons and not self.allow_unsafe:
            self._verdicts[name] = (
                f"{describe_unsafe(name, reasons)} (fix it, or pass --allow-unsafe-grant=true)"
            )
        else:
            self._verdicts[name] = None
        return reasons

    def unreadable(self, why: object) -> None:
        """nsprov may not read the grants (403, 401, ...): it cannot know what it hands out."""
        log.debug("grant ClusterRoles unreadable: %s", why)
        with self._lock:
            self._unreadable = True
        self._log_changes()

    def refusal(self, name: str) -> str | None:
        """Why role ``name`` may not be handed out now; None when it is usable."""
        with self._lock:
            if self._unreadable:
                return (
                    f"nsprov cannot read grant ClusterRole {name!r} (it needs get, list and "
                    "watch on clusterroles; see nsprov's log)"
                )
            if name in self._verdicts:
                return self._verdicts[name]
            if self._listed:
                return f"grant ClusterRole {name!r} does not exist"
            return f"grant ClusterRole {name!r} has not been checked yet"

    def refusals(self) -> dict[str, str]:
        """Every role in use that is refused, and why: for /readyz and the metric."""
        found = {name: self.refusal(name) for name in self.in_use()}
        return {name: why for name, why in found.items() if why is not None}

    def access(self, name: str) -> dict[str, str] | None:
        """One right role ``name`` grants, to ask the authorizer about (None: none known)."""
        with self._lock:
            return self._accesses.get(name)

    def fingerprint(self, name: str) -> str:
        """A digest of role ``name``'s rules as last seen ('' unseen): a pooled namespace made
        with other rules is stale."""
        with self._lock:
            return self._fingerprints.get(name, "")

    def unsafe(self, name: str) -> list[str]:
        """Why a role nsprov has seen is unsafe, unless that is allowed; [] if fine or unseen."""
        with self._lock:
            return [] if self.allow_unsafe else list(self._reasons.get(name, []))

    def require(self, names: Iterable[str]) -> None:
        for name in names:
            refusal = self.refusal(name)
            if refusal is not None:
                raise GrantUnusable(f"{refusal}; provisioning is paused until it is fixed")

    def _log_changes(self) -> None:
        for name in self.in_use():
            refusal, allowed = self.refusal(name), tuple(self.unsafe_allowed(name))
            if self._logged.get(name) == (refusal, allowed):
                continue
            previous = self._logged.get(name)
            self._logged[name] = (refusal, allowed)
            if refusal is None:
                if allowed:
                    log.warning(
                        "%s (allowed by --allow-unsafe-grant)", describe_unsafe(name, [*allowed])
                    )
                if previous is None or previous[0] is not None:
                    log.info("grant ClusterRole %r checked: provisioning with it enabled", name)
            elif previous is not None or "not been checked" not in refusal:
                log.warning("%s: provisioning with it paused (POST and PATCH answer 503)", refusal)

    def unsafe_allowed(self, name: str) -> list[str]:
        with self._lock:
            return list(self._reasons.get(name, [])) if self.allow_unsafe else []


def describe_unsafe(name: str, reasons: list[str]) -> str:
    """The one sentence every refusal of an unsafe grant starts with."""
    return f"grant ClusterRole {name!r} is unsafe for tenants: {'; '.join(reasons)}"
