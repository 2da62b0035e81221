"""The policy file: YAML -> a validated Policy, re-read when the file changes.

Parsing is strict: an unknown key is an error that names where it is (a typo
such as ``claim:`` for ``claims:`` must not silently admit everyone), and so is
every value of the wrong type. The keys are DESIGN.md's "Tenants and policy";
their types and bounds are declared once, in policy.schema.POLICY, which checks a
file's shape first and also renders the JSON Schema. What needs more than one
value to judge (issuer references, owner templates, quota arithmetic) is here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

import yaml

from nsprov.core.ttl import format_duration, parse_duration
from nsprov.policy.model import (
    MAX_OWNER_LENGTH,
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
from nsprov.policy.schema import POLICY, PolicyError
from nsprov.provision import bundle
from nsprov.provision.bundle import Selector, limit_range_item, namespace
from nsprov.provision.grant import GrantGuard, describe_unsafe
from nsprov.provision.template import LIMIT_KEYS

__all__ = [
    "PolicyError",
    "PolicyFile",
    "PolicyStatus",
    "check_policy",
    "check_profiles",
    "parse_policy",
    "refuse_unsafe_grants",
]

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.policyfile")

_RECHECK_SECONDS = 1.0
# Kubernetes swaps a mounted ConfigMap's files through a symlink: a file missing on one
# check may be mid-swap. Missing on two checks this far apart, it is gone.
_MISSING_GRACE_SECONDS = 1.0
_MIN_POOL_AGE = 60.0
# Keys nsprov sets itself, the admission policy guards or Kubernetes owns
# (pod-security.kubernetes.io/enforce!): extra labels must not forge or lift them.
_RESERVED_DOMAINS = ("nsprov.io", "kubernetes.io", "k8s.io")
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


# ---- parsing ------------------------------------------------------------------------------


class _Reader:
    """One mapping of a file ``POLICY.check`` has admitted, with its place for messages.

    Its values have the declared types already: the accessors only convert them.
    """

    def __init__(self, data: Any, where: str) -> None:
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def child(self, key: str) -> _Reader:
        return _Reader(self.data.get(key), self.at(key))

    def string(self, key: str) -> str | None:
        value = self.data.get(key)
        return value if isinstance(value, str) else None

    def required(self, key: str) -> str:
        value = self.string(key)
        if value is None:  # POLICY declares it required: this is a bug, not bad input
            raise PolicyError(f"{self.at(key)}: required")
        return value

    def count(self, key: str) -> int | None:
        value = self.data.get(key)
        return value if isinstance(value, int) else None

    def duration(self, key: str) -> float | None:
        text = self.string(key)
        return None if text is None else parse_duration(text)

    def strings(self, key: str) -> tuple[str, ...] | None:
        """One string or a list of strings."""
        value = self.data.get(key)
        if value is None:
            return None
        return tuple(value) if isinstance(value, list) else (value,)


def _settings(reader: _Reader) -> TenantSettings:
    template = TemplateSettings()
    if reader.has("template"):
        template = _template(reader.child("template"))
    return TenantSettings(
        cluster_roles=reader.strings("clusterRole"),
        ttl=reader.duration("ttl"),
        max_ttl=reader.duration("maxTTL"),
        max_lifetime=reader.duration("maxLifetime"),
        max_namespaces=reader.count("maxNamespaces"),
        max_namespaces_per_owner=reader.count("maxNamespacesPerOwner"),
        pod_security=reader.data.get("podSecurity"),
        labels=_metadata_map(reader, "labels"),
        annotations=_metadata_map(reader, "annotations"),
        template=template,
        max_grace_seconds=_grace(reader),
        service_types=reader.strings("serviceTypes"),
        finalizers=reader.strings("finalizers"),
        pool=_pool(reader),
    )


def _pool(reader: _Reader) -> Pool | None:
    """``pool: {size: N, maxAge: 1h}``; ``size: 0`` turns off a pool the defaults give."""
    if not reader.has("pool"):
        return None
    r = reader.child("pool")
    size = r.count("size")
    if size is None:
        raise PolicyError(f"{r.at('size')}: required (0 = no pool)")
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


def _metadata_map(reader: _Reader, key: str) -> Mapping[str, str] | None:
    """Extra labels or annotations for the namespace: no key of a reserved domain."""
    if not reader.has(key):
        return None
    found: dict[str, str] = reader.data[key]
    for name in found:
        prefix = name.rpartition("/")[0]
        if prefix and any(prefix == d or prefix.endswith("." + d) for d in _RESERVED_DOMAINS):
            raise PolicyError(
                f"{reader.at(key)}: {name!r} is reserved (nsprov.io, kubernetes.io and k8s.io "
                "keys are set by nsprov or Kubernetes)"
            )
    return MappingProxyType(dict(found))


def _none(value: Any) -> bool:
    return isinstance(value, str) and value == "none"


def _quantities(value: dict[Any, Any]) -> Mapping[str, str]:
    # YAML reads `pods: 2` as a number; Kubernetes wants the quantity as a string.
    return MappingProxyType({str(name): str(quantity) for name, quantity in value.items()})


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
    elif reader.has("resourceQuota"):
        q = reader.child("resourceQuota")
        quota = _quantities(q.data["hard"])
        _check_quota(quota, q.at("hard"))
    limits: Mapping[str, Mapping[str, str]] | None = None
    if _none(data.get("limitRange")):
        limits = MappingProxyType({})
    elif reader.has("limitRange"):
        lr = reader.child("limitRange")
        if not lr.data:
            raise PolicyError(f"{lr.where}: set one of {', '.join(LIMIT_KEYS)}, or write 'none'")
        limits = MappingProxyType({
            key: _quantities(value) for key, value in lr.data.items() if value is not None
        })  # fmt: skip
        _check_limits(limits, lr.where)
    return TemplateSettings(
        resource_quota=quota,
        limit_range=limits,
        network_policy=data.get("networkPolicy"),
        isolated_egress=data.get("isolatedEgress"),
    )


def _issuer(data: Any, where: str, base: Path, check_files: bool) -> Issuer:
    r = _Reader(data, where)
    ca_file = r.string("caFile")
    ca_path = None
    if ca_file is not None:
        ca_path = Path(ca_file) if Path(ca_file).is_absolute() else base / ca_file
        if check_files and not ca_path.is_file():
            raise PolicyError(f"{r.at('caFile')}: {ca_path} is not a readable file")
    return Issuer(
        name=r.required("name"),
        issuer=r.required("issuer"),
        audience=r.required("audience"),
        jwks_uri=r.string("jwksUri"),
        ca_file=ca_path,
        token_review=r.data.get("tokenReview") is True,
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
    r = _Reader(data, where)
    m = r.child("match")
    owner_text = r.string("owner")
    if m.has("token"):
        if m.has("issuer") or m.has("claims"):
            raise PolicyError(f"{m.where}: either 'token' or 'issuer' with 'claims', not both")
        tokens = m.strings("token") or ()
        match = Match(tokens=tuple(Glob.compile(t) for t in tokens))
        owner_text = owner_text or "{token}"
        if ":" in owner_text:
            # Only issuer owners contain ':', so a token never takes an OIDC identity's owner.
            raise PolicyError(f"{r.at('owner')}: a token tenant's owner must not contain ':'")
        owner = _owner_template(owner_text, r.at("owner"), lambda n: n == "token")
    else:
        if not m.has("issuer"):
            raise PolicyError(f"{m.at('issuer')}: required")
        issuer_name = m.required("issuer")
        if issuer_name not in issuers:
            raise PolicyError(
                f"{m.at('issuer')}: no issuer named {issuer_name!r} "
                f"(issuers: {', '.join(issuers) or 'none'})"
            )
        raw_claims = m.data.get("claims")
        if not raw_claims:
            # Anyone can get a token from a public issuer (any GitHub repository in the world
            # can mint one with audience 'nsprov'): an issuer alone admits strangers.
            raise PolicyError(
                f"{m.at('claims')}: required, at least one claim (an issuer alone admits "
                "every identity it has, e.g. every repository on GitHub)"
            )
        claims = m.child("claims")
        conditions = []
        for claim in raw_claims:
            if not isinstance(claim, str) or not claim or claim == "/":
                raise PolicyError(f"{claims.where}: claim names must be non-empty strings")
            patterns = claims.strings(claim) or ()
            conditions.append(ClaimCondition(claim, tuple(Glob.compile(p) for p in patterns)))
        match = Match(issuer=issuer_name, claims=tuple(conditions))
        owner_text = owner_text or f"{issuer_name}:{{sub}}"
        if not owner_text.startswith(f"{issuer_name}:"):
            raise PolicyError(
                f"{r.at('owner')}: must start with '{issuer_name}:' so owners of different "
                "issuers (and static tokens) can never be the same"
            )
        owner = _owner_template(owner_text, r.at("owner"), lambda n: n != "/")
    return Tenant(name=r.required("name"), match=match, owner=owner, settings=_settings(r))


MAX_POLICY_BYTES = 1024 * 1024
"""The most of a policy file nsprov reads: a ConfigMap holds at most 1 MiB, and without a
bound a wrong path (/dev/zero, a log) would be read until memory runs out."""


def read_policy(source: BinaryIO) -> str:
    """A policy file's text from an open binary file, or PolicyError (too large, not UTF-8)."""
    content = source.read(MAX_POLICY_BYTES + 1)
    if len(content) > MAX_POLICY_BYTES:
        raise PolicyError(f"larger than {MAX_POLICY_BYTES} bytes (a ConfigMap holds at most 1 MiB)")
    return policy_text(content)


def policy_text(content: bytes) -> str:
    """A policy file's bytes as text, or PolicyError: UTF-8, as YAML 1.2 and ConfigMaps have it
    (not the locale's encoding, so a file reads the same in the image and on a laptop)."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise PolicyError(f"not UTF-8 text (byte {exc.start} is {byte:#04x})") from None


def load_yaml(text: str) -> Any:
    """The document of a policy file (None for an empty one), or PolicyError."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}") from None
    except RecursionError:
        # PyYAML's composer recurses once per level: [[[[...]]]] a few thousand deep.
        raise PolicyError("nested too deeply to be a policy (not valid YAML here)") from None


def parse_policy(text: str, base: Path = Path(), *, check_files: bool = True) -> Policy:
    """Parse and validate a policy file's text; relative ``caFile`` paths are under ``base``.

    Its shape first (schema.POLICY: keys, types, bounds), then what needs more
    than one value to judge. ``check_files=False`` skips whether each ``caFile`` is
    readable: offline (``nsprov policy validate``) it names a file where nsprov runs.
    """
    return policy_from(load_yaml(text), base, check_files=check_files)


def policy_from(data: Any, base: Path = Path(), *, check_files: bool = True) -> Policy:
    """The Policy of a loaded policy document (None: an empty file), or PolicyError."""
    data = {} if data is None else data
    POLICY.check(data, "")
    root = _Reader(data, "")
    issuers: dict[str, Issuer] = {}
    urls: set[str] = set()
    for i, raw in enumerate(root.data.get("issuers") or ()):
        issuer = _issuer(raw, f"issuers[{i}]", base, check_files)
        if issuer.name in issuers:
            raise PolicyError(f"issuers[{i}].name: {issuer.name!r} is used twice")
        if issuer.issuer in urls:
            # Tokens are routed to an issuer by their 'iss': it must be unambiguous.
            raise PolicyError(f"issuers[{i}].issuer: {issuer.issuer!r} is listed twice")
        issuers[issuer.name] = issuer
        urls.add(issuer.issuer)
    defaults = _settings(root.child("defaults"))
    tenants: list[Tenant] = []
    names: set[str] = set()
    for i, raw in enumerate(root.data.get("tenants") or ()):
        tenant = _tenant(raw, f"tenants[{i}]", issuers)
        if tenant.name in names:
            raise PolicyError(f"tenants[{i}].name: {tenant.name!r} is used twice")
        names.add(tenant.name)
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


def check_policy(policy: Policy, base: Profile, min_ttl: float, grants: GrantGuard | None) -> None:
    """Every check a (re)load runs after parsing; ``grants=None`` skips the one that needs
    the cluster (is each ClusterRole safe to bind), as ``nsprov policy validate`` does."""
    check_profiles(policy, base, min_ttl)
    if grants is not None:
        refuse_unsafe_grants(policy, base, grants)


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
            with self.path.open("rb") as source:
                text = read_policy(source)
            policy = parse_policy(text, self.path.parent)
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

    def due(self) -> bool:
        """Whether :meth:`current` would look at the file now (and may parse it).

        An async caller asks first and, if so, calls :meth:`current` on a worker thread:
        parsing a large policy takes seconds, which the event loop must not wait out.
        """
        return self._clock() >= self._next_check

    def current(self) -> Policy:
        """The policy in force, after re-reading the file if it changed (at most once a second).

        One caller re-reads; one that comes meanwhile gets the policy in force at once
        rather than waiting for the parse (it may be seconds, and that caller may be the
        event loop).
        """
        if not self._lock.acquire(blocking=False):
            return self._policy
        try:
            now = self._clock()
            if now >= self._next_check:
                self._next_check = now + self._recheck
                policy = self._load(strict=False)
                if policy is not None:
                    self._policy = policy
            return self._policy
        finally:
            self._lock.release()

    def status(self) -> PolicyStatus:
        self.current()
        return PolicyStatus(str(self.path), self._loaded_at, self._error)
