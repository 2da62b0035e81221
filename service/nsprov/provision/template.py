"""What a tenant's namespace is made with, and the record of it kept on the namespace.

A template is the part of a tenant's settings that becomes objects and labels:
the ClusterRoles bound (one RoleBinding each), the Pod Security level, extra
labels and annotations, and the bounds (a ResourceQuota, a LimitRange and an
isolating NetworkPolicy). The provisioner writes the template it used onto the
namespace as JSON (``nsprov.io/template``) with the namespace itself, and
everything after that (the rest of the bundle, the controller's repairs, a
replayed request) reads the namespace's own record, never the policy in force:
a policy edit never changes a running job's namespace behind its back. Only the
roll-out (``nsprov rollout``) rewrites the record, and the controller then
brings the objects in line with it.

The admission policy lets nobody but nsprov write ``nsprov.io/*`` annotations,
so the record is as trustworthy as the namespace's owner annotation.

Three of a template's settings bound what a tenant may do inside its namespace
rather than what nsprov makes there: the longest pod grace period, the Service
types and the finalizers a tenant may add. Kubernetes enforces them (the
admission policies in k8s/admission-policy.yaml), reading them from the
namespace's annotations (``bundle.bound_annotations``); a namespace without them
(made before they existed) gets the same defaults as here, in CEL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

NETWORK_POLICIES = ("none", "isolated")
# The LimitRange keys a template may set, for type Container.
LIMIT_KEYS = ("default", "defaultRequest", "max", "min", "maxLimitRequestRatio")
MAX_CLUSTER_ROLES = 8
"""One RoleBinding per role; nsprov's RBAC names each binding it may delete."""
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
DEFAULT_MAX_GRACE_SECONDS = 30
"""Kubernetes' own default terminationGracePeriodSeconds: a pod that says nothing fits."""
DEFAULT_SERVICE_TYPES = ("ClusterIP",)
"""NodePort and LoadBalancer open the tenant's pods beyond the cluster; ExternalName
points cluster names (and Ingresses) anywhere."""


def _frozen(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Template:
    """What a namespace is provisioned with (resolved: no 'inherit' left)."""

    cluster_roles: tuple[str, ...]
    pod_security: str = ""
    resource_quota: Mapping[str, str] = field(default_factory=_empty)
    """The quota's ``hard`` limits; empty = no ResourceQuota."""
    limit_range: Mapping[str, Mapping[str, str]] = field(default_factory=_empty)
    """LimitRange item keys (``default``, ``defaultRequest``, ...) for containers; empty = none."""
    network_policy: str = "none"
    """``isolated``: a NetworkPolicy that admits ingress from the namespace's own pods only."""
    isolated_egress: bool = False
    """With ``isolated``: egress too, to the namespace's own pods and the cluster's DNS only."""
    labels: Mapping[str, str] = field(default_factory=_empty)
    annotations: Mapping[str, str] = field(default_factory=_empty)
    max_grace_seconds: int = DEFAULT_MAX_GRACE_SECONDS
    """The longest ``terminationGracePeriodSeconds`` (and delete grace) a pod may ask for: a
    namespace outlives its expiry by about this much when its pods ignore SIGTERM."""
    service_types: tuple[str, ...] = DEFAULT_SERVICE_TYPES
    """The Service types a tenant may create (``externalIPs`` are refused whatever this says)."""
    finalizers: tuple[str, ...] = ()
    """Finalizers a tenant may add to any of its objects besides Kubernetes' own, each of
    which it may add only where a Kubernetes controller removes it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "clusterRoles": list(self.cluster_roles),
            "podSecurity": self.pod_security,
            "resourceQuota": {"hard": dict(self.resource_quota)} if self.resource_quota else None,
            "limitRange": {k: dict(v) for k, v in self.limit_range.items()} or None,
            "networkPolicy": self.network_policy,
            "isolatedEgress": self.isolated_egress,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "maxGracePeriodSeconds": self.max_grace_seconds,
            "serviceTypes": list(self.service_types),
            "finalizers": list(self.finalizers),
        }

    def record(self) -> str:
        """The annotation value: compact, key-sorted JSON (equal templates, equal text)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """A short name for this template, for logs and the roll-out's report."""
        return hashlib.sha256(self.record().encode()).hexdigest()[:12]

    @classmethod
    def from_record(cls, text: str) -> Template | None:
        """The template a namespace recorded; None when the text is not one (never raises)."""
        try:
            data = json.loads(text)
            roles = data["clusterRoles"]
            quota = data.get("resourceQuota") or {}
            limits = data.get("limitRange") or {}
            template = cls(
                cluster_roles=tuple(roles),
                pod_security=data.get("podSecurity") or "",
                resource_quota=_frozen(_strings(quota.get("hard") or {})),
                limit_range=MappingProxyType(
                    {k: _frozen(_strings(v)) for k, v in limits.items() if k in LIMIT_KEYS}
                ),
                network_policy=data.get("networkPolicy") or "none",
                isolated_egress=bool(data.get("isolatedEgress")),
                labels=_frozen(_strings(data.get("labels") or {})),
                annotations=_frozen(_strings(data.get("annotations") or {})),
                # Records written before these keys existed get the defaults, as the
                # admission policies give a namespace without the annotations.
                max_grace_seconds=data.get("maxGracePeriodSeconds", DEFAULT_MAX_GRACE_SECONDS),
                service_types=tuple(data.get("serviceTypes") or DEFAULT_SERVICE_TYPES),
                finalizers=tuple(data.get("finalizers") or ()),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if (
            not template.cluster_roles
            or not all(isinstance(r, str) and r for r in template.cluster_roles)
            or template.network_policy not in NETWORK_POLICIES
            or isinstance(template.max_grace_seconds, bool)
            or not isinstance(template.max_grace_seconds, int)
            or template.max_grace_seconds < 0
            or not all(t in SERVICE_TYPES for t in template.service_types)
            or not all(isinstance(f, str) and f and "," not in f for f in template.finalizers)
        ):
            return None
        return template


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError("expected a mapping of strings")
    return value
