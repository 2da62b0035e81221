"""The policy file: YAML -> a validated Policy, re-read when the file changes.

Parsing is strict: an unknown key is an error that names where it is (a typo
such as ``claim:`` for ``claims:`` must not silently admit everyone), and so is
every value of the wrong type. The keys are DESIGN.md's "Tenants and policy".
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from nsprov import bundle
from nsprov.bundle import Selector, limit_range_item, namespace
from nsprov.errors import BadRequest
from nsprov.grant import GrantGuard, describe_unsafe
from nsprov.policy import (
    MAX_OWNER_LENGTH,
    MAX_POOL_SIZE,
    PLACEHOLDER,
    ClaimCondition,
    Glob,
    Issuer,
    Match,
    OwnerTemplate,
    Policy,
    Pool,
    Profile,
    TemplateSettings,
    Tenant,
    TenantSettings,
)
from nsprov.template import LIMIT_KEYS, MAX_CLUSTER_ROLES, NETWORK_POLICIES, SERVICE_TYPES
from nsprov.ttl import format_duration, parse_duration

log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Token names as the token file allows them (auth.py), plus globs; no ':' so they never look
# like an issuer owner.
_TOKEN_NAME = re.compile(r"[A-Za-z0-9*?][A-Za-z0-9._@*?-]{0,62}")
_RECHECK_SECONDS = 1.0
# Kubernetes swaps a mounted ConfigMap's files through a symlink: a file missing on one
# check may be mid-swap. Missing on two checks this far apart, it is gone.
_MISSING_GRACE_SECONDS = 1.0
_POD_SECURITY = ("", "privileged", "baseline", "restricted")
_MIN_POOL_AGE = 60.0
# Kubernetes' rules: a qualified name with an optional DNS-subdomain prefix, and label values.
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
# Keys nsprov sets itself, the admission policy guards or Kubernetes owns
# (pod-security.kubernetes.io/enforce!): extra labels must not forge or lift them.
_RESERVED_DOMAINS = ("nsprov.io", "kubernetes.io", "k8s.io")
# A resource name: a qualified name with an optional DNS-subdomain prefix (count/configmaps,
# example.com/gpu, hugepages-2Mi), as Kubernetes' ResourceList keys.
_RESOURCE = re.compile(rf"(?:{_DNS_SUBDOMAIN.pattern}/)?{_QUALIFIED_NAME.pattern}")
# What the API server accepts in a quota's hard without a '/' (its standard quota resources);
# every other name is refused (422) on every provision.
_QUOTA_STANDARD = frozenset({
    "pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
    "persistentvolumeclaims", "services.nodeports", "services.loadbalancers", "cpu", "memory",
    "ephemeral-storage", "requests.cpu", "requests.memory", "requests.storage",
    "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage",
})  # fmt: skip
# Object counts, which the API server wants whole (extended resources, count/..., are too).
_QUOTA_INTEGER = frozenset({
    "pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
    "persistentvolumeclaims", "services.nodeports", "services.loadbalancers",
})  # fmt: skip
_HUGEPAGES = ("hugepages-", "requests.hugepages-", "limits.hugepages-")
_CONTAINER_STANDARD = frozenset({"cpu", "memory", "ephemeral-storage"})
# The API server refuses an object whose annotations (keys and values) pass 256 KiB; the
# headroom is for what nsprov adds per request (the audit claims of nsprov.io/requested-by).
_ANNOTATIONS_HEADROOM = 16 * 1024
_MAX_ANNOTATIONS_BYTES = 256 * 1024 - _ANNOTATIONS_HEADROOM
# A Kubernetes quantity: 2, 500m, 8Gi, 1.5, 1e3.
_QUANTITY = re.compile(r"[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?")


class PolicyError(ValueError):
    """The policy file is unreadable or invalid; the message says where and why."""


# ---- parsing ------------------------------------------------------------------------------


class _Reader:
    """Strict access to one YAML mapping, with its place in the file for error messages."""

    def __init__(self, data: Any, where: str, known: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise PolicyError(f"{where}: expected a mapping, got {_kind(data)}")
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise PolicyError(f"{where}: unknown key {key!r}{hint}; known: {', '.join(known)}")
        self.data: dict[str, Any] = data
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise PolicyError(f"{self.at(key)}: required")
            return None
        if not isinstance(value, str) or not value:
            raise PolicyError(
                f"{self.at(key)}: expected a non-empty string, got {_kind(value)} (quote it)"
            )
        return value

    def boolean(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise PolicyError(f"{self.at(key)}: expected true or false, got {_kind(value)}")
        return value

    def count(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PolicyError(f"{self.at(key)}: expected a whole number >= 0, got {value!r}")
        return int(value)

    def duration(self, key: str) -> float | None:
        text = self.string(key)
        if text is None:
            return None
        try:
            seconds = parse_duration(text)
        except BadRequest as exc:
            raise PolicyError(f"{self.at(key)}: {exc.detail}") from None
        if seconds <= 0:
            raise PolicyError(f"{self.at(key)}: must be positive")
        return seconds

    def strings(self, key: str) -> tuple[str, ...] | None:
        """One string or a list of strings."""
        value = self.data.get(key)
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v for v in items):
            raise PolicyError(f"{self.at(key)}: expected a string or a list of strings")
        return tuple(items)

    def string_map(self, key: str) -> Mapping[str, str]:
        value = self.data.get(key) or {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise PolicyError(f"{self.at(key)}: expected a mapping of strings to strings")
        return MappingProxyType(dict(value))


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


_SETTINGS_KEYS = (
    "clusterRole", "ttl", "maxTTL", "maxLifetime", "maxNamespaces", "maxNamespacesPerOwner",
    "podSecurity", "labels", "annotations", "template", "maxGracePeriod", "serviceTypes",
    "finalizers", "pool",
)  # fmt: skip
_TEMPLATE_KEYS = ("resourceQuota", "limitRange", "networkPolicy", "isolatedEgress")


def _settings(reader: _Reader) -> TenantSettings:
    pod_security = reader.data.get("podSecurity")
    if pod_security is not None and pod_security not in _POD_SECURITY:
        raise PolicyError(
            f"{reader.at('podSecurity')}: expected privileged, baseline, restricted or ''"
        )
    roles = reader.strings("clusterRole")
    for role in roles or ():
        if "/" in role or "%" in role or role in (".", ".."):
            raise PolicyError(f"{reader.at('clusterRole')}: {role!r} is not a ClusterRole name")
    if roles is not None and len(set(roles)) != len(roles):
        raise PolicyError(f"{reader.at('clusterRole')}: a ClusterRole is listed twice")
    if roles is not None and len(roles) > MAX_CLUSTER_ROLES:
        raise PolicyError(
            f"{reader.at('clusterRole')}: at most {MAX_CLUSTER_ROLES} ClusterRoles "
            "(one RoleBinding each)"
        )
    labels = _metadata_map(reader, "labels", values=_LABEL_VALUE)
    annotations = _metadata_map(reader, "annotations", values=None)
    template = TemplateSettings()
    if reader.data.get("template") is not None:
        template = _template(_Reader(reader.data["template"], reader.at("template"),
                                     _TEMPLATE_KEYS))  # fmt: skip
    return TenantSettings(
        cluster_roles=roles,
        ttl=reader.duration("ttl"),
        max_ttl=reader.duration("maxTTL"),
        max_lifetime=reader.duration("maxLifetime"),
        max_namespaces=reader.count("maxNamespaces"),
        max_namespaces_per_owner=reader.count("maxNamespacesPerOwner"),
        pod_security=pod_security,
        labels=labels,
        annotations=annotations,
        template=template,
        max_grace_seconds=_grace(reader),
        service_types=_service_types(reader),
        finalizers=_finalizers(reader),
        pool=_pool(reader),
    )


def _pool(reader: _Reader) -> Pool | None:
    """``pool: {size: N, maxAge: 1h}``; ``size: 0`` turns off a pool the defaults give."""
    if reader.data.get("pool") is None:
        return None
    r = _Reader(reader.data["pool"], reader.at("pool"), ("size", "maxAge"))
    size = r.count("size")
    if size is None:
        raise PolicyError(f"{r.at('size')}: required (0 = no pool)")
    if size > MAX_POOL_SIZE:
        raise PolicyError(f"{r.at('size')}: at most {MAX_POOL_SIZE}")
    max_age = r.duration("maxAge") or 3600.0
    if max_age < _MIN_POOL_AGE:
        raise PolicyError(
            f"{r.at('maxAge')}: at least {format_duration(_MIN_POOL_AGE)} (a pooled namespace "
            "younger than that is made anew before it could be claimed)"
        )
    return Pool(size, max_age)


def _grace(reader: _Reader) -> int | None:
    """``maxGracePeriod`` in seconds: pods count their grace in whole seconds."""
    seconds = reader.duration("maxGracePeriod")
    if seconds is None:
        return None
    if seconds != int(seconds):
        raise PolicyError(
            f"{reader.at('maxGracePeriod')}: must be whole seconds (terminationGracePeriodSeconds "
            "is), e.g. 30s or 2m"
        )
    return int(seconds)


def _service_types(reader: _Reader) -> tuple[str, ...] | None:
    types = reader.strings("serviceTypes")
    for kind in types or ():
        if kind not in SERVICE_TYPES:
            raise PolicyError(
                f"{reader.at('serviceTypes')}: {kind!r} is not a Service type "
                f"({', '.join(SERVICE_TYPES)})"
            )
    if types is not None and len(set(types)) != len(types):
        raise PolicyError(f"{reader.at('serviceTypes')}: a type is listed twice")
    return types


def _finalizers(reader: _Reader) -> tuple[str, ...] | None:
    """Extra finalizers a tenant may add: domain-qualified names (``example.com/cleanup``).

    Kubernetes' own (``foregroundDeletion``, ``kubernetes.io/pvc-protection``, ...) need
    no listing: the admission policy allows each where Kubernetes removes it. An empty
    list is allowed (a tenant may get none of the defaults' names).
    """
    value = reader.data.get("finalizers")
    if value is None:
        return None
    if value == []:
        return ()
    names = reader.strings("finalizers") or ()
    for name in names:
        prefix, slash, short = name.partition("/")
        if (
            not slash
            or len(prefix) > 253
            or not _DNS_SUBDOMAIN.fullmatch(prefix)
            or not _QUALIFIED_NAME.fullmatch(short)
        ):
            raise PolicyError(
                f"{reader.at('finalizers')}: {name!r} is not a domain-qualified finalizer name "
                "(e.g. example.com/cleanup)"
            )
    if len(set(names)) != len(names):
        raise PolicyError(f"{reader.at('finalizers')}: a finalizer is listed twice")
    return names


def _metadata_map(reader: _Reader, key: str, *, values: re.Pattern[str] | None) -> Any:
    """Extra labels or annotations for the namespace: Kubernetes' key rules, no reserved key."""
    if reader.data.get(key) is None:
        return None
    found = reader.string_map(key)
    for name, value in found.items():
        prefix, slash, short = name.rpartition("/")
        if (slash and not _DNS_SUBDOMAIN.fullmatch(prefix)) or not _QUALIFIED_NAME.fullmatch(short):
            raise PolicyError(f"{reader.at(key)}: {name!r} is not a valid {key[:-1]} key")
        if prefix and any(prefix == d or prefix.endswith("." + d) for d in _RESERVED_DOMAINS):
            raise PolicyError(
                f"{reader.at(key)}: {name!r} is reserved (nsprov.io, kubernetes.io and k8s.io "
                "keys are set by nsprov or Kubernetes)"
            )
        if values is not None and not values.fullmatch(value):
            raise PolicyError(f"{reader.at(key)}.{name}: {value!r} is not a valid label value")
    return found


def _none(value: Any) -> bool:
    return isinstance(value, str) and value == "none"


def _quantities(value: Any, where: str) -> Mapping[str, str]:
    if not isinstance(value, dict) or not value:
        raise PolicyError(f"{where}: expected a mapping of resource names to quantities")
    found: dict[str, str] = {}
    for name, quantity in value.items():
        if not isinstance(name, str) or len(name) > 253 or not _RESOURCE.fullmatch(name):
            raise PolicyError(f"{where}: {name!r} is not a resource name")
        # YAML reads `pods: 2` as a number; Kubernetes wants the quantity as a string.
        text = (
            str(quantity)
            if isinstance(quantity, int | float) and not isinstance(quantity, bool)
            else quantity
        )
        if not isinstance(text, str) or not _QUANTITY.fullmatch(text):
            raise PolicyError(f"{where}.{name}: {quantity!r} is not a quantity (e.g. 2, 500m, 8Gi)")
        found[name] = text
    return MappingProxyType(found)


def _amount(text: str) -> Decimal:
    """A quantity that ``_QUANTITY`` has admitted already."""
    value = bundle.quantity(text)
    if value is None:
        raise ValueError(f"{text!r} is not a quantity")
    return value


def _check_quota(hard: Mapping[str, str], where: str) -> None:
    """Refuse what the API server would refuse (422) when the quota is created: a name that
    is not a quota resource, or a fraction of something it counts in whole objects."""
    for name, text in hard.items():
        if "/" not in name and name not in _QUOTA_STANDARD and not name.startswith(_HUGEPAGES):
            raise PolicyError(f"{where}: {name!r} is not a resource a ResourceQuota can bound")
        extended = "/" in name and "kubernetes.io/" not in name and not name.startswith("requests.")
        if (name in _QUOTA_INTEGER or extended) and _amount(text) % 1 != 0:
            raise PolicyError(
                f"{where}.{name}: {text!r} must be a whole number (it counts objects)"
            )


def _check_limits(limits: Mapping[str, Mapping[str, str]], where: str) -> None:
    """Refuse a LimitRange the API server would refuse (422) when it is created: a resource
    containers do not have, or bounds out of order once Kubernetes has filled in the
    defaults (min <= defaultRequest <= default <= max, 1 <= maxLimitRequestRatio)."""
    for key, values in limits.items():
        for name in values:
            if (
                "/" not in name
                and name not in _CONTAINER_STANDARD
                and not name.startswith("hugepages-")
            ):
                raise PolicyError(f"{where}.{key}: {name!r} is not a container resource")
    item = limit_range_item(limits)
    text = {k: dict(v) for k, v in item.items() if k != "type"}
    order = (("min", "max"), ("min", "defaultRequest"), ("defaultRequest", "default"),
             ("default", "max"), ("min", "default"), ("defaultRequest", "max"))  # fmt: skip
    for low, high in order:
        for name in set(text.get(low, {})) & set(text.get(high, {})):
            if _amount(text[low][name]) > _amount(text[high][name]):
                raise PolicyError(
                    f"{where}: {low} {name} {text[low][name]} is above {high} "
                    f"{text[high][name]} (with what Kubernetes fills in: a missing default is "
                    "max, a missing defaultRequest is default, else min)"
                )
    for name, ratio in text.get("maxLimitRequestRatio", {}).items():
        if _amount(ratio) < 1:
            raise PolicyError(f"{where}.maxLimitRequestRatio.{name}: {ratio} is below 1")


def _template(reader: _Reader) -> TemplateSettings:
    data = reader.data
    quota: Mapping[str, str] | None = None
    if _none(data.get("resourceQuota")):
        quota = MappingProxyType({})
    elif data.get("resourceQuota") is not None:
        q = _Reader(data["resourceQuota"], reader.at("resourceQuota"), ("hard",))
        quota = _quantities(q.data.get("hard"), q.at("hard"))
        _check_quota(quota, q.at("hard"))
    limits: Mapping[str, Mapping[str, str]] | None = None
    if _none(data.get("limitRange")):
        limits = MappingProxyType({})
    elif data.get("limitRange") is not None:
        lr = _Reader(data["limitRange"], reader.at("limitRange"), LIMIT_KEYS)
        if not lr.data:
            raise PolicyError(f"{lr.where}: set one of {', '.join(LIMIT_KEYS)}, or write 'none'")
        limits = MappingProxyType({
            key: _quantities(value, lr.at(key)) for key, value in lr.data.items()
        })  # fmt: skip
        _check_limits(limits, lr.where)
    network = data.get("networkPolicy")
    if network is not None and network not in NETWORK_POLICIES:
        raise PolicyError(f"{reader.at('networkPolicy')}: expected isolated or none")
    egress = data.get("isolatedEgress")
    if egress is not None and not isinstance(egress, bool):
        raise PolicyError(f"{reader.at('isolatedEgress')}: expected true or false")
    return TemplateSettings(
        resource_quota=quota, limit_range=limits, network_policy=network, isolated_egress=egress
    )


def _https_url(value: str, where: str) -> str:
    if not re.fullmatch(r"https://[^\s/?#]+(/[^\s?#]*)?", value):
        raise PolicyError(f"{where}: must be an https:// URL without query or fragment")
    return value


def _issuer(data: Any, where: str, base: Path) -> Issuer:
    r = _Reader(data, where, ("name", "issuer", "audience", "jwksUri", "caFile", "tokenReview"))
    name = r.string("name", required=True)
    assert name is not None
    if not _NAME.fullmatch(name):
        raise PolicyError(f"{r.at('name')}: {name!r} must be a DNS label (a-z, 0-9, -)")
    url = _https_url(r.string("issuer", required=True) or "", r.at("issuer"))
    jwks_uri = r.string("jwksUri")
    ca_file = r.string("caFile")
    ca_path = None
    if ca_file is not None:
        ca_path = Path(ca_file) if Path(ca_file).is_absolute() else base / ca_file
        if not ca_path.is_file():
            raise PolicyError(f"{r.at('caFile')}: {ca_path} is not a readable file")
    return Issuer(
        name=name,
        issuer=url,
        audience=r.string("audience", required=True) or "",
        jwks_uri=_https_url(jwks_uri, r.at("jwksUri")) if jwks_uri else None,
        ca_file=ca_path,
        token_review=r.boolean("tokenReview"),
    )


def _owner_template(text: str, where: str, allowed: Callable[[str], bool]) -> OwnerTemplate:
    stripped = PLACEHOLDER.sub("", text)
    if "{" in stripped or "}" in stripped:
        raise PolicyError(f"{where}: unbalanced '{{' or '}}' in {text!r}")
    names = tuple(PLACEHOLDER.findall(text))
    for name in names:
        if not allowed(name):
            raise PolicyError(f"{where}: placeholder {{{name}}} is not allowed here")
    return OwnerTemplate(text, names)


def _tenant(data: Any, where: str, issuers: dict[str, Issuer]) -> Tenant:
    r = _Reader(data, where, ("name", "match", "owner", *_SETTINGS_KEYS))
    name = r.string("name", required=True)
    assert name is not None
    if not _NAME.fullmatch(name):
        raise PolicyError(f"{r.at('name')}: {name!r} must be a DNS label (a-z, 0-9, -)")
    m = _Reader(r.data.get("match"), r.at("match"), ("issuer", "claims", "token"))
    owner_text = r.string("owner")
    if m.has("token"):
        if m.has("issuer") or m.has("claims"):
            raise PolicyError(f"{m.where}: either 'token' or 'issuer' with 'claims', not both")
        tokens = m.strings("token") or ()
        for token in tokens:
            if not _TOKEN_NAME.fullmatch(token):
                raise PolicyError(f"{m.at('token')}: {token!r} is not a token name")
        match = Match(tokens=tuple(Glob.compile(t) for t in tokens))
        owner_text = owner_text or "{token}"
        if ":" in owner_text:
            # Only issuer owners contain ':', so a token never takes an OIDC identity's owner.
            raise PolicyError(f"{r.at('owner')}: a token tenant's owner must not contain ':'")
        owner = _owner_template(owner_text, r.at("owner"), lambda n: n == "token")
    else:
        issuer_name = m.string("issuer", required=True)
        assert issuer_name is not None
        if issuer_name not in issuers:
            raise PolicyError(
                f"{m.at('issuer')}: no issuer named {issuer_name!r} "
                f"(issuers: {', '.join(issuers) or 'none'})"
            )
        raw_claims = m.data.get("claims")
        if not isinstance(raw_claims, dict) or not raw_claims:
            # Anyone can get a token from a public issuer (any GitHub repository in the world
            # can mint one with audience 'nsprov'): an issuer alone admits strangers.
            raise PolicyError(
                f"{m.at('claims')}: required, at least one claim (an issuer alone admits "
                "every identity it has, e.g. every repository on GitHub)"
            )
        claims = _Reader(raw_claims, m.at("claims"), tuple(str(k) for k in raw_claims))
        conditions = []
        for claim in raw_claims:
            if not isinstance(claim, str) or not claim or claim == "/":
                raise PolicyError(f"{claims.where}: claim names must be non-empty strings")
            patterns = claims.strings(claim)
            if patterns is None:
                raise PolicyError(f"{claims.at(claim)}: expected a string or a list of strings")
            conditions.append(ClaimCondition(claim, tuple(Glob.compile(p) for p in patterns)))
        match = Match(issuer=issuer_name, claims=tuple(conditions))
        owner_text = owner_text or f"{issuer_name}:{{sub}}"
        if not owner_text.startswith(f"{issuer_name}:"):
            raise PolicyError(
                f"{r.at('owner')}: must start with '{issuer_name}:' so owners of different "
                "issuers (and static tokens) can never be the same"
            )
        owner = _owner_template(owner_text, r.at("owner"), lambda n: n != "/")
    return Tenant(name=name, match=match, owner=owner, settings=_settings(r))


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"{where}: expected a list, got {_kind(value)}")
    return value


def parse_policy(text: str, base: Path = Path()) -> Policy:
    """Parse and validate a policy file's text; relative ``caFile`` paths are under ``base``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}") from None
    root = _Reader(data if data is not None else {}, "", ("issuers", "defaults", "tenants"))
    issuers: dict[str, Issuer] = {}
    urls: set[str] = set()
    for i, raw in enumerate(_list(root.data.get("issuers"), "issuers")):
        issuer = _issuer(raw, f"issuers[{i}]", base)
        if issuer.name in issuers:
            raise PolicyError(f"issuers[{i}].name: {issuer.name!r} is used twice")
        if issuer.issuer in urls:
            # Tokens are routed to an issuer by their 'iss': it must be unambiguous.
            raise PolicyError(f"issuers[{i}].issuer: {issuer.issuer!r} is listed twice")
        issuers[issuer.name] = issuer
        urls.add(issuer.issuer)
    defaults = _settings(_Reader(root.data.get("defaults") or {}, "defaults", _SETTINGS_KEYS))
    tenants: list[Tenant] = []
    for i, raw in enumerate(_list(root.data.get("tenants"), "tenants")):
        tenant = _tenant(raw, f"tenants[{i}]", issuers)
        if any(t.name == tenant.name for t in tenants):
            raise PolicyError(f"tenants[{i}].name: {tenant.name!r} is used twice")
        tenants.append(tenant)
    return Policy(issuers=tuple(issuers.values()), defaults=defaults, tenants=tuple(tenants))


# ---- the file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyStatus:
    """What /readyz and the metrics say about the policy file."""

    path: str
    loaded_at: float | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.path, "loadedAt": self.loaded_at, "error": self.error}


def check_profiles(policy: Policy, base: Profile, min_ttl: float) -> None:
    """Refuse a policy that would refuse every request of a tenant (ttl beyond its maxTTL, ...).

    Each tenant is checked as it resolves (its settings, else the defaults', else the
    flags'), so a problem that only shows in the combination is found too.
    """
    for where, profile in policy.profiles(base):
        if profile.ttl > profile.max_ttl:
            raise PolicyError(
                f"{where}: ttl {format_duration(profile.ttl)} is above its maxTTL "
                f"{format_duration(profile.max_ttl)}"
            )
        if profile.ttl < min_ttl:
            raise PolicyError(
                f"{where}: ttl {format_duration(profile.ttl)} is below --min-ttl "
                f"{format_duration(min_ttl)}"
            )
        if profile.max_lifetime and profile.ttl > profile.max_lifetime:
            raise PolicyError(
                f"{where}: ttl {format_duration(profile.ttl)} is above its maxLifetime "
                f"{format_duration(profile.max_lifetime)}"
            )
        if profile.template.isolated_egress and profile.template.network_policy != "isolated":
            raise PolicyError(f"{where}: isolatedEgress needs networkPolicy: isolated")
        size = _annotations_size(profile)
        if size > _MAX_ANNOTATIONS_BYTES:
            raise PolicyError(
                f"{where}: the namespace's annotations would take {size} bytes with nsprov's "
                f"own (the template's are also in its record); Kubernetes allows "
                f"{_MAX_ANNOTATIONS_BYTES + _ANNOTATIONS_HEADROOM}"
            )


def _annotations_size(profile: Profile) -> int:
    """The bytes of a namespace's annotations (keys and values, as the API server counts
    them) for the longest owner, without the audit claims (the headroom is theirs)."""
    manifest = namespace(
        "np-" + "x" * 59,
        selector=Selector("x", "x"),
        owner="x" * MAX_OWNER_LENGTH,
        template=profile.template,
        expires_at=0,
        requested_ttl=0.0,
        tenant=profile.tenant,
    )
    annotations = manifest["metadata"]["annotations"]
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def refuse_unsafe_grants(policy: Policy, base: Profile, grants: GrantGuard) -> None:
    """Refuse the whole policy if a tenant's grant is one nsprov has seen to be unsafe.

    A grant nsprov has not seen (missing, or before the first list) passes here; requests
    of the tenants using it answer 503 until it exists and is safe (GrantGuard).
    """
    for where, profile in policy.profiles(base):
        for role in profile.cluster_roles:
            reasons = grants.unsafe(role)
            if reasons:
                raise PolicyError(f"{where}: {describe_unsafe(role, reasons)}")


class PolicyFile:
    """The policy from a file, re-read when the file changes; thread-safe.

    Like the token file, the file's identity (mtime, size, inode) is checked at most
    once a second; a file that fails to load keeps the last good policy in force, and
    the failure is logged, counted (``on_reload``) and shown by :meth:`status`.
    """

    def __init__(
        self,
        path: Path,
        *,
        on_reload: Callable[[bool], None] = lambda ok: None,
        validate: Callable[[Policy], None] = lambda policy: None,
        recheck_seconds: float = _RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._on_reload = on_reload
        self._validate = validate
        self._recheck = recheck_seconds
        self._clock = clock
        self._missing_since: float | None = None
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._loaded_at: float | None = None
        self._error: str | None = None
        self._policy = self._load(strict=True) or Policy()

    def _load(self, *, strict: bool) -> Policy | None:
        try:
            stat = os.stat(self.path)
            identity = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if identity == self._identity:
                return None
            policy = parse_policy(self.path.read_text(), self.path.parent)
            self._validate(policy)
        except FileNotFoundError as exc:
            if strict:
                raise PolicyError(f"policy file {self.path}: {exc.strerror}") from None
            return self._missing()
        except (OSError, PolicyError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if strict:
                raise PolicyError(f"policy file {self.path}: {reason}") from None
            if self._error != reason:
                log.error("policy file %s not reloaded, keeping the last good policy: %s",
                          self.path, reason)  # fmt: skip
                self._on_reload(False)
            self._error = reason
            return None
        self._identity, self._missing_since = identity, None
        self._loaded_at = time.time()
        self._error = None
        log.info(
            "policy file %s loaded: %d issuer(s), %d tenant(s)",
            self.path, len(policy.issuers), len(policy.tenants),
        )  # fmt: skip
        self._on_reload(True)
        return policy

    def _missing(self) -> Policy | None:
        """A deleted policy file fails closed, as a deleted token file revokes its tokens.

        Keeping the last good policy would make deleting the file (or the ConfigMap key
        behind it), the quickest way to cut off a compromised tenant, change nothing.
        Falling back to "no policy" would fail open (every static token an owner again).
        So once the file is surely gone, the policy is empty: every identity is refused
        (403) until the file is back, and /readyz says why.
        """
        now = self._clock()
        if self._missing_since is None:
            self._missing_since = now
            self._next_check = min(self._next_check, now + _MISSING_GRACE_SECONDS)
            return None
        if now - self._missing_since < _MISSING_GRACE_SECONDS or self._identity is None:
            return None
        reason = "deleted: every identity is refused until it is back"
        log.error("policy file %s %s", self.path, reason)
        self._identity, self._error = None, reason
        self._on_reload(False)
        return Policy()

    def current(self) -> Policy:
        """The policy in force, after re-reading the file if it changed (at most once a second)."""
        now = self._clock()
        with self._lock:
            if now >= self._next_check:
                self._next_check = now + self._recheck
                policy = self._load(strict=False)
                if policy is not None:
                    self._policy = policy
            return self._policy

    def status(self) -> PolicyStatus:
        self.current()
        return PolicyStatus(str(self.path), self._loaded_at, self._error)
