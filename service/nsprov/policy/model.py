"""What a policy is: trusted OIDC issuers, tenants, and which tenant admits which identity.

A policy is a tree of frozen dataclasses (read from a file by ``policy.file``),
only ever read, so a request thread can hold on to the policy it started with
while the file is reloaded.

Matching follows Vault's bound claims: every condition of a tenant must hold, a
value is an exact string or a glob, a list means any of. Globs are
case-sensitive and treat ``/`` as a separator, as in paths: ``*`` and ``?`` never
match ``/``, ``**`` matches anything. ``acme/web-*`` therefore admits
``acme/web-app`` but not ``acme/web-app/../other``, and ``refs/heads/**`` admits
every branch. A claim is named by its top-level name (``repository``) or by a
JSON pointer (``/kubernetes.io/namespace``) for nested claims, because claim
names themselves contain dots.

Owners decide isolation, so they must never collide: an issuer tenant's owner
always starts with ``<issuer name>:`` and token names cannot contain ``:``, so
``github:acme/web`` can only ever be a GitHub identity, never a token named so,
and never another issuer's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nsprov.core.settings import Settings
from nsprov.provision.template import Template

# `{claim}` or `{/json/pointer}` in an owner template.
PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
# What a claim may contribute to an owner: safe in an annotation, a log line and a URL path.
_OWNER_PART = re.compile(r"[A-Za-z0-9._@/:+=~-]{1,200}")
MAX_OWNER_LENGTH = 256


# ---- the model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Issuer:
    """An OIDC issuer whose ID tokens nsprov accepts as bearer tokens."""

    name: str
    """Short name tenants refer to (``match.issuer``) and owners start with."""
    issuer: str
    """The exact ``iss`` of its tokens; discovery is at ``<issuer>/.well-known/...``."""
    audience: str
    """The ``aud`` a token must carry: a token minted for another service is refused."""
    jwks_uri: str | None = None
    """Where its keys are, for issuers without a discovery document."""
    ca_file: Path | None = None
    """CA bundle to verify its TLS certificate with (default: the system's)."""
    token_review: bool = False
    """Also ask the managed cluster (TokenReview), so a deleted pod's token is refused."""


@dataclass(frozen=True)
class Glob:
    """An exact string or a glob (``*``/``?`` stop at ``/``, ``**`` does not)."""

    pattern: str
    _regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        parts = []
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                parts.append(".*")
                i += 2
            elif pattern[i] == "*":
                parts.append("[^/]*")
                i += 1
            elif pattern[i] == "?":
                parts.append("[^/]")
                i += 1
            else:
                parts.append(re.escape(pattern[i]))
                i += 1
        return cls(pattern, re.compile("".join(parts), re.DOTALL))

    def matches(self, value: str) -> bool:
        return self._regex.fullmatch(value) is not None


@dataclass(frozen=True)
class ClaimCondition:
    """One bound claim: the claim's value must match one of ``patterns``."""

    claim: str
    patterns: tuple[Glob, ...]

    def holds(self, claims: Mapping[str, Any]) -> bool:
        values = claim_strings(lookup_claim(claims, self.claim))
        return any(p.matches(v) for p in self.patterns for v in values)


@dataclass(frozen=True)
class Match:
    """Who a tenant admits: an issuer's tokens with these claims, or static tokens by name."""

    issuer: str | None = None
    claims: tuple[ClaimCondition, ...] = ()
    tokens: tuple[Glob, ...] = ()


@dataclass(frozen=True)
class OwnerTemplate:
    """``github:{repository}``: literal text and claim placeholders."""

    template: str
    placeholders: tuple[str, ...]


@dataclass(frozen=True)
class TemplateSettings:
    """A ``template:`` as written: None = the defaults' (or the flags') value.

    An empty mapping is an explicit "none" (``resourceQuota: none``), so a tenant can
    drop a quota the defaults give everyone.
    """

    resource_quota: Mapping[str, str] | None = None
    limit_range: Mapping[str, Mapping[str, str]] | None = None
    network_policy: str | None = None
    isolated_egress: bool | None = None


MAX_POOL_SIZE = 100
"""Ready namespaces one profile may keep: pooled namespaces count in no caller's caps, so
their total is bounded here (and by the number of tenants), not by --max-namespaces."""


@dataclass(frozen=True)
class Pool:
    """``pool: {size: N, maxAge: 1h}``: ready namespaces the leader keeps for a profile."""

    size: int
    """0 = no pool (a tenant can turn off the pool the defaults give everyone)."""
    max_age: float = 3600.0
    """A pooled namespace not claimed by then expires (it is made anew): a crashed or
    removed nsprov never leaves one for good."""


@dataclass(frozen=True)
class TenantSettings:
    """What a tenant gets, as written; None = the defaults' value (then the flags')."""

    cluster_roles: tuple[str, ...] | None = None
    ttl: float | None = None
    max_ttl: float | None = None
    max_lifetime: float | None = None
    max_namespaces: int | None = None
    max_namespaces_per_owner: int | None = None
    pod_security: str | None = None
    labels: Mapping[str, str] | None = None
    annotations: Mapping[str, str] | None = None
    template: TemplateSettings = field(default_factory=TemplateSettings)
    max_grace_seconds: int | None = None
    """``maxGracePeriod``, in whole seconds."""
    service_types: tuple[str, ...] | None = None
    finalizers: tuple[str, ...] | None = None
    """Replaces the defaults' list (it does not add to it): a tenant can be given fewer."""
    pool: Pool | None = None


@dataclass(frozen=True)
class Profile:
    """What one tenant's requests get, resolved: tenant setting, else defaults, else flags."""

    tenant: str | None
    """The tenant's name; None without a policy file."""
    template: Template
    ttl: float
    max_ttl: float
    max_lifetime: float
    """0 = no limit."""
    max_namespaces: int | None
    """Namespaces of this tenant, live or being deleted, all its owners together (None = no
    cap; 0 = none at all: a policy's ``maxNamespaces: 0`` closes a tenant, it does not lift
    its cap)."""
    max_namespaces_per_owner: int | None
    pool: Pool | None = None
    """Ready namespaces kept for this profile; None (or size 0) = none, every POST makes one."""

    @property
    def cluster_roles(self) -> tuple[str, ...]:
        return self.template.cluster_roles

    @property
    def pool_size(self) -> int:
        return self.pool.size if self.pool is not None else 0


def flags_profile(settings: Settings) -> Profile:
    """What everyone gets without a policy file (and what a policy's settings fall back to):
    the flags. ``--max-namespaces`` is not here: it caps all tenants together, always."""
    return Profile(
        tenant=None,
        template=Template(
            cluster_roles=(settings.cluster_role,), pod_security=settings.pod_security
        ),
        ttl=settings.ttl,
        max_ttl=settings.max_ttl,
        max_lifetime=settings.max_lifetime,
        max_namespaces=None,
        # The flag's 0 means "no cap", as it always did.
        max_namespaces_per_owner=settings.max_namespaces_per_owner or None,
        pool=Pool(settings.pool_size, settings.pool_max_age) if settings.pool_size else None,
    )


def _pick(*values: Any) -> Any:
    """The first value that is set (None = not set); None when none is."""
    return next((v for v in values if v is not None), None)


def resolve(base: Profile, defaults: TenantSettings, tenant: Tenant | None) -> Profile:
    """The profile of ``tenant`` (None: the defaults alone) on top of the flags' ``base``."""
    own = tenant.settings if tenant is not None else TenantSettings()
    mine, dflt, flags = own.template, defaults.template, base.template
    template = Template(
        cluster_roles=_pick(own.cluster_roles, defaults.cluster_roles, flags.cluster_roles),
        pod_security=_pick(own.pod_security, defaults.pod_security, flags.pod_security),
        resource_quota=_pick(mine.resource_quota, dflt.resource_quota, flags.resource_quota),
        limit_range=_pick(mine.limit_range, dflt.limit_range, flags.limit_range),
        network_policy=_pick(mine.network_policy, dflt.network_policy, flags.network_policy),
        isolated_egress=_pick(mine.isolated_egress, dflt.isolated_egress, flags.isolated_egress),
        # Labels and annotations add up: the defaults' (a cost centre for all), then the
        # tenant's, which win on the same key.
        labels=MappingProxyType({**flags.labels, **(defaults.labels or {}), **(own.labels or {})}),
        annotations=MappingProxyType(
            {**flags.annotations, **(defaults.annotations or {}), **(own.annotations or {})}
        ),
        max_grace_seconds=_pick(
            own.max_grace_seconds, defaults.max_grace_seconds, flags.max_grace_seconds
        ),
        service_types=_pick(own.service_types, defaults.service_types, flags.service_types),
        finalizers=_pick(own.finalizers, defaults.finalizers, flags.finalizers),
    )
    return Profile(
        tenant=tenant.name if tenant is not None else base.tenant,
        template=template,
        ttl=_pick(own.ttl, defaults.ttl, base.ttl),
        max_ttl=_pick(own.max_ttl, defaults.max_ttl, base.max_ttl),
        max_lifetime=_pick(own.max_lifetime, defaults.max_lifetime, base.max_lifetime),
        max_namespaces=_pick(own.max_namespaces, defaults.max_namespaces, base.max_namespaces),
        max_namespaces_per_owner=_pick(
            own.max_namespaces_per_owner,
            defaults.max_namespaces_per_owner,
            base.max_namespaces_per_owner,
        ),
        pool=_pick(own.pool, defaults.pool, base.pool),
    )


@dataclass(frozen=True)
class Tenant:
    name: str
    match: Match
    owner: OwnerTemplate
    settings: TenantSettings


@dataclass(frozen=True)
class Policy:
    issuers: tuple[Issuer, ...] = ()
    defaults: TenantSettings = field(default_factory=TenantSettings)
    tenants: tuple[Tenant, ...] = ()

    def issuer_named(self, name: str) -> Issuer | None:
        return next((i for i in self.issuers if i.name == name), None)

    def issuer_for(self, iss: str) -> Issuer | None:
        """The trusted issuer whose ``issuer`` is exactly ``iss``."""
        return next((i for i in self.issuers if i.issuer == iss), None)

    def tenant_named(self, name: str) -> Tenant | None:
        return next((t for t in self.tenants if t.name == name), None)

    def profiles(self, base: Profile) -> list[tuple[str, Profile]]:
        """The defaults' profile and each tenant's, resolved on ``base``, each with where it
        comes from as a policy error names it ("defaults", "tenant 'web'")."""
        found = [("defaults", resolve(base, self.defaults, None))]
        found += [(f"tenant {t.name!r}", resolve(base, self.defaults, t)) for t in self.tenants]
        return found

    def pooled_profiles(self, base: Profile) -> list[Profile]:
        """The profiles requests get (each tenant's) that keep a pool; the defaults' own
        profile is no tenant's, so a pool there is each tenant's, never one of its own."""
        if not self.tenants:
            return []
        return [p for _, p in self.profiles(base)[1:] if p.pool_size > 0]

    def cluster_roles(self, base: Profile) -> list[str]:
        """Every ClusterRole this policy may bind (each is checked before it is handed out)."""
        roles = [role for _, profile in self.profiles(base) for role in profile.cluster_roles]
        return list(dict.fromkeys(roles))


@dataclass(frozen=True)
class Principal:
    """Who authenticated: an issuer's verified claims, or the name of a static token."""

    issuer: Issuer | None
    token: str | None
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class Admission:
    tenant: Tenant
    owner: str


class NoTenant(Exception):
    """Authenticated, but no tenant admits this identity; ``detail`` says what was checked."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# ---- claims -------------------------------------------------------------------------------


def lookup_claim(claims: Mapping[str, Any], name: str) -> Any:
    """A top-level claim by name, or a nested one by JSON pointer (``/kubernetes.io/pod/name``)."""
    if not name.startswith("/"):
        return claims.get(name)
    value: Any = claims
    for token in name[1:].split("/"):
        key = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def claim_strings(value: Any) -> list[str]:
    """The strings a claim value is compared as: a string, a number or boolean as JSON
    spells it, or the strings of a list (any of them may match); nothing else."""
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def render_owner(template: OwnerTemplate, values: Mapping[str, Any]) -> str | None:
    """The owner for these claims, or None when a placeholder's claim is missing or unsafe."""

    def part(match: re.Match[str]) -> str:
        value = lookup_claim(values, match.group(1))
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not _OWNER_PART.fullmatch(text):
            raise LookupError(match.group(1))
        return text

    try:
        owner = PLACEHOLDER.sub(part, template.template)
    except LookupError:
        return None
    return owner if len(owner) <= MAX_OWNER_LENGTH else None


def _describe(principal: Principal, claims_checked: list[str]) -> str:
    if principal.issuer is None:
        return f"token {principal.token!r}"
    shown = []
    for name in claims_checked:
        value = lookup_claim(principal.claims, name)
        shown.append(f"{name}={_short(value)}" if value is not None else f"{name} (absent)")
    checked = "; claims checked: " + ", ".join(shown) if shown else ""
    return f"issuer {principal.issuer.name!r} (sub={_short(principal.claims.get('sub'))}){checked}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def admit(policy: Policy, principal: Principal) -> Admission:
    """The first tenant that admits ``principal``, and its owner; NoTenant otherwise."""
    checked: list[str] = []
    for tenant in policy.tenants:
        match = tenant.match
        if principal.issuer is not None:
            if match.issuer != principal.issuer.name:
                continue
            for condition in match.claims:
                if condition.claim not in checked:
                    checked.append(condition.claim)
            if not all(c.holds(principal.claims) for c in match.claims):
                continue
            owner = render_owner(tenant.owner, principal.claims)
            if owner is None:
                for name in tenant.owner.placeholders:
                    if name not in checked:
                        checked.append(name)
                continue
        else:
            assert principal.token is not None
            if not any(g.matches(principal.token) for g in match.tokens):
                continue
            owner = render_owner(tenant.owner, {"token": principal.token})
            if owner is None:
                continue
        return Admission(tenant, owner)
    raise NoTenant(f"no tenant admits this identity: {_describe(principal, checked)}")
