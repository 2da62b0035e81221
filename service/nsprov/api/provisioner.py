"""The only code that writes Kubernetes objects on behalf of a request.

Provisioning is namespace -> (serviceaccount | rolebinding) -> token. Each step
tolerates AlreadyExists, so a retried request with the same Idempotency-Key (or
the controller) can finish a bundle another attempt started. If a step fails,
the namespace this request created is deleted before we answer; should even
that fail, its expiry label (written with the namespace itself) lets the
controller remove it when the TTL runs out.

The kubernetes client blocks, so every call runs on a worker thread; the
threads come from anyio's default limiter, which the app sizes to the client's
connection pool.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import anyio
import anyio.to_thread

from nsprov.api.pooltokens import MintedToken, PoolTokens
from nsprov.core.errors import (
    BadRequest,
    Conflict,
    NotFound,
    ProvisioningFailed,
    TooManyNamespaces,
    Unprocessable,
)
from nsprov.core.kube import Kube, KubeError
from nsprov.core.kubeasync import KubeCalls, ThreadedKube
from nsprov.core.namespacecache import QuotaSource, ReadYourWrites
from nsprov.core.ttl import format_duration
from nsprov.policy.model import Profile
from nsprov.provision import bundle, deletion, firstcall
from nsprov.provision import kubeconfig as kubeconfig_
from nsprov.provision.grant import GrantGuard
from nsprov.provision.metrics import Metrics

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.provisioner")

T = TypeVar("T")
QUOTA_COUNT_SECONDS = 2.0
"""How long provisioning waits for kube-controller-manager to count a new quota's usage."""
QUOTA_POLL_SECONDS = 0.05
_CLAIM_ATTEMPTS = 8
"""Ready pooled namespaces a POST tries to claim before it makes one instead."""
_Objects = list[dict[str, Any]]  # (an alias: inside Provisioner, ``list`` is a method)


_ISO = "%Y-%m-%dT%H:%M:%SZ"
# datetime's first and last second: what it refuses (a year past 9999), _iso still refuses.
_FIRST_SECOND, _LAST_SECOND = -62135596800, 253402300799


def _iso(unix: int | None) -> str | None:
    if unix is None:
        return None
    if _FIRST_SECOND <= unix <= _LAST_SECOND:  # the same text in half the time: no datetime
        return time.strftime(_ISO, time.gmtime(unix))
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime(_ISO)


ACTIVE = "ACTIVE"
MARKED_FOR_DELETION = "MARKED_FOR_DELETION"
"""The state of a namespace whose deletion has begun, until it is gone (the seed's name, and
what DELETE answers): it still holds its cap slot."""


@dataclass(frozen=True)
class NamespaceInfo:
    """What a caller may know about one of its namespaces."""

    name: str
    owner: str
    expires_at: int | None
    created_at: str | None
    terminating: bool
    tenant: str | None = None
    """The policy tenant that made it; None without a policy file (or made before one)."""
    deletion_started_at: str | None = None
    """Being deleted: since when (its deletionTimestamp)."""
    blocked_by: tuple[deletion.Blocker, ...] = ()
    """Being deleted: what the namespace controller says is still in the way."""

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> NamespaceInfo:
        metadata = obj["metadata"]
        terminating = bundle.is_terminating(obj)
        return cls(
            name=metadata["name"],
            owner=bundle.owner_of(metadata) or "",
            expires_at=bundle.expires_at_of(metadata),
            created_at=metadata.get("creationTimestamp"),
            terminating=terminating,
            tenant=bundle.tenant_of(metadata),
            deletion_started_at=metadata.get("deletionTimestamp") if terminating else None,
            blocked_by=deletion.for_caller(deletion.blockers(obj)),
        )

    @property
    def state(self) -> str:
        return MARKED_FOR_DELETION if self.terminating else ACTIVE

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "owner": self.owner,
            "tenant": self.tenant,
            "createdAt": self.created_at,
            "expiresAt": _iso(self.expires_at),
            "state": self.state,
        }
        if self.terminating:
            # Why it still exists: the caller's own objects (a finalizer its job left, say)
            # are often the answer, and until it is gone it holds a cap slot.
            body["deletionStartedAt"] = self.deletion_started_at
            body["blockedBy"] = [blocker.to_json() for blocker in self.blocked_by]
        return body


@dataclass(frozen=True)
class QuotaStatus:
    """A namespace's ResourceQuota as Kubernetes reports it: limits and what is used of them."""

    hard: dict[str, str]
    used: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"hard": dict(self.hard), "used": dict(self.used)}


@dataclass(frozen=True)
class NamespaceStatus:
    """GET of one namespace: what the list says of it, and its quota's usage."""

    info: NamespaceInfo
    quota: QuotaStatus | None
    """None when the namespace has no ResourceQuota of nsprov's."""

    def to_json(self) -> dict[str, Any]:
        return {**self.info.to_json(), "quota": self.quota.to_json() if self.quota else None}


@dataclass(frozen=True)
class Provisioned:
    """A namespace and a kubeconfig for it."""

    name: str
    expires_at: int
    """When the namespace expires (its label)."""
    kubeconfig: dict[str, Any]
    replayed: bool = False
    token_expires_at: int | None = None
    """When the kubeconfig's token expires, as the API server said (None: not said)."""

    @property
    def usable_until(self) -> int:
        """When the kubeconfig stops working: the namespace's end, or the token's if earlier.

        The API server may cut a TokenRequest short (--service-account-max-token-expiration);
        we never promise a client more than the credential it holds can do.
        """
        if self.token_expires_at is None:
            return self.expires_at
        return min(self.expires_at, self.token_expires_at)

    @property
    def expires_at_iso(self) -> str:
        """What X-Expires-At and expiresAt say: when the kubeconfig stops working."""
        return _iso(self.usable_until) or ""

    @property
    def namespace_expires_at_iso(self) -> str:
        return _iso(self.expires_at) or ""


@dataclass
class Provisioner:
    """Provisions, extends and deletes namespaces; each request brings its tenant's Profile
    (grants, template, lifetimes, caps), resolved from the policy that admitted the caller."""

    kube: Kube
    selector: bundle.Selector
    prefix: str
    default_server: str
    ca_data: str | None
    metrics: Metrics
    max_namespaces: int = 0
    """Live namespaces of all tenants together (0 = no cap): --max-namespaces."""
    grants: GrantGuard | None = None
    """Asked before any grant is handed out; None = not checked (unit tests)."""
    clock: Callable[[], float] = time.time
    # The managed Namespaces as this replica's informer sees them (None: no controller,
    # every read goes to the API server). Reads use it once it has synced.
    cache: ReadYourWrites | None = None
    # nsprov's ResourceQuotas as the same replica's informer sees them (None: no controller).
    quotas: QuotaSource | None = None
    first_call_check: bool = True
    """Wait until the authorizer allows a new ServiceAccount its grant (firstcall.py)."""
    pool_tokens: PoolTokens | None = None
    """Tokens minted ahead for ready pooled namespaces (pooltokens.py); None: a claim mints."""
    api: KubeCalls | None = None
    """``kube``'s API server on the event loop (kubeasync.py); None: ``kube`` on threads."""
    _claiming: set[str] = field(default_factory=set, init=False, repr=False)
    """Pooled namespaces this replica's requests are claiming right now: its other requests
    pass them over instead of losing a race (and a TokenRequest) to each other."""

    def __post_init__(self) -> None:
        if self.api is None:
            self.api = ThreadedKube(self.kube)

    @property
    def _api(self) -> KubeCalls:
        assert self.api is not None  # set in __post_init__
        return self.api

    async def aclose(self) -> None:
        """End the event loop's connections to the API server."""
        await self._api.aclose()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    # ---- reading --------------------------------------------------------------------------

    def _synced_cache(self) -> ReadYourWrites | None:
        cache = self.cache
        return cache if cache is not None and cache.synced() else None

    def _remember(self, obj: dict[str, Any]) -> None:
        """Show our own write to our next read, before the informer delivers it."""
        if self.cache is not None:
            self.cache.record(obj)

    async def _managed(self) -> list[dict[str, Any]]:
        """Every namespace carrying the selector label: from the cache once it has synced."""
        cache = self._synced_cache()
        if cache is not None:
            return cache.items()
        query = {"labelSelector": str(self.selector)}
        try:
            listing = await self._api.get(bundle.NAMESPACES_PATH, query=query)
        except KubeError as exc:
            raise _failed("list namespaces", exc) from exc
        items: list[dict[str, Any]] = listing.get("items", [])
        return items

    async def _read(self, name: str) -> dict[str, Any] | None:
        """The namespace ``name`` as the API has it now, or None when there is none."""
        try:
            return await self._api.get(bundle.namespace_path(name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise _failed("read the namespace", exc) from exc

    async def _owned(
        self, owner: str, name: str, *, tenant: str | None = None, cached: bool = False
    ) -> dict[str, Any]:
        """The namespace if it is managed and ``owner``'s; otherwise NotFound, the same for all.

        ``cached`` reads from the informer cache, for answers that only report. PATCH and
        DELETE act on what they read (a resourceVersion or UID precondition), so they read
        the API server: a lagging cache would turn into spurious 409s. A cache miss is
        asked of the API server too: another replica may have created it a moment ago.
        """
        missing = NotFound(f"namespace {name!r} not found")
        if not bundle.is_dns_label(name):
            raise missing
        cache = self._synced_cache() if cached else None
        obj = cache.get(name) if cache is not None else None
        if obj is None:
            obj = await self._read(name)
        if obj is None:
            raise missing
        metadata = obj.get("metadata", {})
        if not bundle.is_managed(metadata, self.selector) or not bundle.belongs_to(
            metadata, owner, tenant
        ):
            raise missing
        return obj

    async def find_by_idempotency_key(
        self, owner: str, key: str, *, tenant: str | None = None
    ) -> list[NamespaceInfo]:
        """The owner's live namespace made with this Idempotency-Key, as a list of 0 or 1.

        A client whose create response was lost (a CI job killed mid-request) knows
        only the key. The name is derived from (owner, key), so this is one read,
        and another owner using the same key derives another name and finds nothing.
        """
        name, idempotency = bundle.idempotent_name(self.prefix, owner, key)
        obj = await self._read(name)
        if obj is None or bundle.is_terminating(obj):
            # Claimed from a pool (the pool's name), a create under the key's name rolled back.
            obj = await self._claimed_by_key(owner, tenant, idempotency)
        if obj is None or bundle.is_terminating(obj):
            return []
        if not self._made_with_key(obj, owner, tenant, idempotency):
            return []
        return [NamespaceInfo.from_object(obj)]

    def _made_with_key(
        self, obj: dict[str, Any], owner: str, tenant: str | None, idempotency: str
    ) -> bool:
        """Whether ``obj`` is the caller's namespace made by a POST with this
        Idempotency-Key's digest."""
        return self._callers_with(obj, owner, tenant, bundle.IDEMPOTENCY_LABEL, idempotency)

    def _callers_with(
        self, obj: dict[str, Any], owner: str, tenant: str | None, label: str, digest: str
    ) -> bool:
        """Whether ``obj`` is managed, the caller's, and labelled ``label=digest``."""
        metadata = obj.get("metadata", {})
        labels = metadata.get("labels") or {}
        return (
            bundle.is_managed(metadata, self.selector)
            and bundle.belongs_to(metadata, owner, tenant)
            and labels.get(label) == digest
        )

    async def list(self, owner: str, *, tenant: str | None = None) -> list[NamespaceInfo]:
        """The owner's namespaces: live, and being deleted until they are gone (they hold
        the owner's cap slots until then, so the owner sees what fills them)."""
        # Filter before building infos: the owner may hold 10 of 5,000 cached namespaces.
        mine = [
            NamespaceInfo.from_object(obj)
            for obj in await self._managed()
            if bundle.belongs_to(obj["metadata"], owner, tenant)
        ]
        return sorted(mine, key=lambda i: i.name)

    async def get(self, owner: str, name: str, *, tenant: str | None = None) -> NamespaceStatus:
        obj = await self._owned(owner, name, tenant=tenant, cached=True)
        return NamespaceStatus(NamespaceInfo.from_object(obj), await self._quota(obj))

    async def _quota(self, namespace: dict[str, Any]) -> QuotaStatus | None:
        """The namespace's ResourceQuota ``namespace-provisioner``, None when it has none.

        Only a namespace whose template calls for a quota is looked up: from the
        informer cache once it has synced; on a miss (or without the cache) with one
        GET, since a namespace provisioned a moment ago may have a quota the cache has
        not seen yet. A quota without nsprov's label is not nsprov's and not shown.
        """
        metadata = namespace["metadata"]
        template = bundle.template_of(metadata)
        if template is None or not template.resource_quota:
            return None
        name = metadata["name"]
        quotas = self.quotas
        quota = None
        if quotas is not None and quotas.synced():
            quota = quotas.get(name, bundle.BOUNDS_NAME)
        if quota is None:
            path = f"{bundle.resource_quotas_path(name)}/{bundle.BOUNDS_NAME}"
            try:
                quota = await self._api.get(path)
            except KubeError as exc:
                if exc.status == 404:
                    return None
                raise _failed("read the namespace's ResourceQuota", exc) from exc
        if not bundle.is_nsprov_quota(quota, self.selector):
            return None
        hard, used = bundle.quota_usage(quota)
        return QuotaStatus(hard, used)

    # ---- provisioning -------------------------------------------------------------------

    async def provision(
        self,
        owner: str,
        ttl: float,
        profile: Profile,
        *,
        server: str | None = None,
        idempotency_key: str | None = None,
        requested_by: str | None = None,
        key: str | None = None,
    ) -> Provisioned:
        started = time.perf_counter()
        tenant = profile.tenant
        self._require_grants(profile.cluster_roles)
        idempotency = None
        keyed = None
        name = None  # a random one, made only if no pooled namespace is claimed
        if key:  # provision_keyed found none: the name is the key's
            name, digest = bundle.keyed_name(self.prefix, owner, key)
            keyed = (key, digest)
        elif idempotency_key:
            name, idempotency = bundle.idempotent_name(self.prefix, owner, idempotency_key)
            existing = await self._replay_keyed(owner, name, idempotency, ttl, profile)
            if existing is not None:
                return await self._complete(existing, server, replayed=True, profile=profile)
        expires_at = math.ceil(self.clock() + ttl)
        if profile.max_lifetime and ttl > profile.max_lifetime:
            over = format_duration(ttl - profile.max_lifetime)
            raise BadRequest(
                f"ttl {format_duration(ttl)} exceeds the total lifetime of "
                f"{format_duration(profile.max_lifetime)} by {over}"
            )
        caps = self._caps(owner, profile)
        if profile.pool_size and not keyed:
            # A preview key's namespace is found by its name, the key's (provision_keyed):
            # a claimed one keeps the pool's name, and the next push would claim another.
            pooled = await self._provision_pooled(
                owner, ttl, profile, caps,
                expires_at=expires_at, server=server, idempotency=idempotency,
                requested_by=requested_by, started=started,
            )  # fmt: skip
            if pooled is not None:
                return pooled
        if name is None:
            name = bundle.random_name(self.prefix)
        manifest = bundle.namespace(
            name,
            selector=self.selector,
            owner=owner,
            template=profile.template,
            expires_at=expires_at,
            idempotency=idempotency,
            requested_ttl=ttl,
            tenant=tenant,
            requested_by=requested_by,
            key=keyed,
        )
        try:
            if caps:
                await self._check_caps(caps, owner, tenant, idempotency)  # from the cache
            created = await self._api.post(bundle.NAMESPACES_PATH, manifest)
            self._remember(created)
        except KubeError as exc:
            if exc.status == 409 and idempotency:
                # A concurrent request with the same key won the race: finish its bundle.
                existing = await self._replay_keyed(owner, name, idempotency, ttl, profile)
                if existing is not None:
                    return await self._complete(existing, server, replayed=True, profile=profile)
            if exc.status == 409 and keyed:
                raise _KeyTaken from None
            raise _failed("create the namespace", exc) from exc
        passed = await self._hold_caps(created, caps) if caps else frozenset()
        if idempotency and profile.pool_size:
            # A concurrent POST with this key may have claimed a pooled namespace instead.
            try:
                earlier = await self._earlier_with_key(created, owner, tenant, idempotency, passed)
            except BaseException:
                await self._roll_back(created)  # cannot tell whether it is the key's one
                raise
            if earlier is not None:
                await self._roll_back(created)
                earlier = self._replay_of(earlier, owner, idempotency, ttl, tenant)
                return await self._complete(earlier, server, replayed=True, profile=profile)
        try:
            result = await self._complete(created, server, replayed=False, profile=profile)
        except BaseException:
            self.metrics.provision_failures.inc()
            await self._roll_back(created)
            raise
        self.metrics.provision_duration.observe(time.perf_counter() - started)
        self.metrics.provisioned.labels(tenant=tenant or "").inc()
        log.info(
            "provisioned namespace=%s owner=%s expires_at=%d tenant=%s requested_by=%s",
            name, owner, expires_at, tenant or "-", requested_by or "-",
            # The same as fields for --log-format=json; the text line is unchanged.
            extra={"event": "provisioned", "namespace": name, "owner": owner,
                   "expires_at": expires_at, "tenant": tenant, "requested_by": requested_by},
        )  # fmt: skip
        return result

    # ---- claiming from a pool (pool.py makes what is claimed) -----------------------------

    async def _provision_pooled(
        self,
        owner: str,
        ttl: float,
        profile: Profile,
        caps: Sequence[_Cap],
        *,
        expires_at: int,
        server: str | None,
        idempotency: str | None,
        requested_by: str | None,
        started: float,
    ) -> Provisioned | None:
        """A pooled namespace claimed for this request, or None: then it is made as without
        a pool (the pool is empty, or every ready one was claimed by someone else first).

        The claim is the one write (bundle.claim_patch), its token minted ahead
        (pooltokens.py) or alongside; what follows is what a create does after its
        namespace exists: the caps judged by a consistent read, the Idempotency-Key's one
        namespace. The first-call check was done when the namespace was made ready, long
        before (docs/pools.md says why that is safe).
        """
        tenant = profile.tenant
        if caps:
            await self._check_caps(caps, owner, tenant, idempotency)
        won = await self._claim(
            owner, ttl, profile, expires_at=expires_at, idempotency=idempotency,
            requested_by=requested_by,
        )  # fmt: skip
        self.metrics.pool_claims.labels(tenant=tenant or "", result="hit" if won else "miss").inc()
        if won is None:
            return None
        claimed, (token, token_expires_at) = won
        name = claimed["metadata"]["name"]
        passed = await self._hold_caps(claimed, caps) if caps else frozenset()
        if idempotency:
            try:
                earlier = await self._earlier_with_key(claimed, owner, tenant, idempotency, passed)
            except BaseException:
                await self._roll_back(claimed)  # cannot tell whether it is the key's one
                raise
            if earlier is not None:
                await self._roll_back(claimed)
                earlier = self._replay_of(earlier, owner, idempotency, ttl, tenant)
                return await self._complete(earlier, server, replayed=True, profile=profile)
        self.metrics.provision_duration.observe(time.perf_counter() - started)
        self.metrics.provisioned.labels(tenant=tenant or "").inc()
        log.info(
            "provisioned namespace=%s owner=%s expires_at=%d tenant=%s requested_by=%s pool=hit",
            name, owner, expires_at, tenant or "-", requested_by or "-",
        )  # fmt: skip
        config = kubeconfig_.build(
            server=server or self.default_server, ca_data=self.ca_data, namespace=name, token=token
        )
        return Provisioned(
            name=name, expires_at=expires_at, kubeconfig=config, token_expires_at=token_expires_at
        )

    def _pool_hash(self, profile: Profile) -> str:
        """The hash of ``profile``'s pooled namespaces now (pool.profile_hash, the keeper's)."""
        grants = self.grants
        prints = [grants.fingerprint(r) if grants else "" for r in profile.cluster_roles]
        return bundle.pool_hash(profile.tenant, profile.template, prints)

    def _claimable(self, profile: Profile, expires_at: int) -> Iterator[dict[str, Any]]:
        """Ready pooled namespaces of ``profile``'s current hash, in random order, that this
        replica's requests are not claiming and that can live until ``expires_at`` within
        the tenant's maxLifetime (which counts from creation).

        From the cache's index of one pool (at most its size), each checked only as it is
        taken: a claim looks at the few it tries, never at every managed namespace (with
        a few hundred cached, the pass over all of them was a third of nsprov's CPU per
        claim under a burst).
        """
        cache = self._synced_cache()
        if cache is None:
            return  # no controller on this replica to see them with
        pool, now = self._pool_hash(profile), self.clock()
        candidates = cache.ready_pooled(pool)
        random.shuffle(candidates)
        for ns in candidates:
            metadata = ns["metadata"]
            if metadata["name"] in self._claiming:
                continue
            if bundle.ready_pool_of(ns) != pool:
                continue  # claimed by our own write, which the cache has not caught up with
            if bundle.is_terminating(ns) or (bundle.expires_at_of(metadata) or 0) <= now + 5:
                continue  # about to expire: the controller may be deleting it
            created = bundle.created_at_of(metadata)
            if profile.max_lifetime and (created is None or created + profile.max_lifetime
                                         < expires_at):  # fmt: skip
                continue
            yield ns

    async def _claim(
        self,
        owner: str,
        ttl: float,
        profile: Profile,
        *,
        expires_at: int,
        idempotency: str | None,
        requested_by: str | None,
    ) -> tuple[dict[str, Any], tuple[str, int | None]] | None:
        """Claim one ready pooled namespace with one conditional write, and its token; None
        if none is won.

        Candidates are tried in random order, so replicas (and this replica's concurrent
        requests) claiming at once rarely pick the same one; a 409 means another got it
        (or it changed: stale, expiring) and the next is tried. The token is one this
        replica minted ahead (pooltokens.py), taken out before the write; without one, the
        TokenRequest runs alongside the claim, not after it. Either way a token for a
        namespace whose claim was lost is dropped unused, never leaves this process, and
        is worth nothing once its namespace is gone.
        """
        for candidate in itertools.islice(self._claimable(profile, expires_at), _CLAIM_ATTEMPTS):
            metadata = candidate["metadata"]
            name = metadata["name"]
            patch = bundle.claim_patch(
                metadata, owner=owner, tenant=profile.tenant, expires_at=expires_at,
                requested_ttl=ttl, idempotency=idempotency, requested_by=requested_by,
            )  # fmt: skip
            ahead = self.pool_tokens.take(name, expires_at) if self.pool_tokens else None
            claimed: dict[str, Any] | BaseException
            minted: MintedToken | BaseException
            self._claiming.add(name)  # the event loop is one thread: no lock needed
            try:
                if ahead is not None:
                    claimed, minted = await self._claimed(name, patch), ahead
                else:
                    claimed, minted = await self._claim_and_mint(name, patch, expires_at)
            finally:
                self._claiming.discard(name)
            if isinstance(claimed, KubeError) and claimed.status in (404, 409):
                continue
            if isinstance(claimed, KubeError):
                raise _failed("claim a pooled namespace", claimed) from claimed
            if isinstance(claimed, BaseException):
                raise claimed
            self._remember(claimed)
            if isinstance(minted, BaseException):
                self.metrics.provision_failures.inc()
                await self._roll_back(claimed)
                if isinstance(minted, KubeError):
                    raise _failed("request a token", minted) from minted
                raise minted
            # A won claim only: a lost one handed out no token.
            self.metrics.pool_tokens.labels(minted="ahead" if ahead else "alongside").inc()
            return claimed, (minted.token, minted.expires_at)
        return None

    async def _claimed(self, name: str, patch: dict[str, Any]) -> dict[str, Any] | BaseException:
        """The claim's write: the namespace as written, or what it raised."""
        try:
            return await self._api.merge_patch(bundle.namespace_path(name), patch)
        except Exception as exc:
            return exc

    async def _claim_and_mint(
        self, name: str, patch: dict[str, Any], expires_at: int
    ) -> tuple[dict[str, Any] | BaseException, MintedToken | BaseException]:
        """The claim's write and a TokenRequest side by side (no token was minted ahead)."""
        seconds = bundle.token_seconds(expires_at - self.clock())
        claimed, answer = await asyncio.gather(
            self._claimed(name, patch),
            self._mint(bundle.token_path(name), bundle.token_request(seconds)),
        )
        if isinstance(answer, BaseException):
            return claimed, answer
        status = answer["status"]
        return claimed, MintedToken(
            str(status["token"]), bundle.unix_time(status.get("expirationTimestamp"))
        )

    async def _mint(self, path: str, body: dict[str, Any]) -> dict[str, Any] | BaseException:
        try:
            return await self._api.post(path, body)
        except Exception as exc:
            return exc

    async def _replay_keyed(
        self, owner: str, name: str, idempotency: str, ttl: float, profile: Profile
    ) -> dict[str, Any] | None:
        """The namespace an earlier request with this key made, or None (``_replayable``).

        With a pool, one key may have several namespaces for a moment: a claim (with the
        pool's name) and creates under the key's name, all but the first written about to
        be rolled back (``_earlier_with_key``). A replay that finds any of them, in the
        cache or by the key's name, answers the first written, found by one consistent
        LIST: the cache may hold this replica's own writes ahead of the watch, and a GET
        by name finds a create that lost to a claim and is not rolled back yet.
        """
        tenant = profile.tenant
        if not profile.pool_size:
            return await self._replayable(owner, name, idempotency, ttl, tenant)
        if not self._cached_with_key(owner, tenant, idempotency):
            try:
                if await self._replayable(owner, name, idempotency, ttl, tenant) is None:
                    # A first request; or the cache lags a claim, and the check after
                    # this request's own write finds it.
                    return None
            except Conflict:
                pass  # a create under the key's name that lost to a claim and is going
        listed = await self._listed_with_key(owner, tenant, idempotency)
        first = _first_made(_with_key(listed, owner, tenant, idempotency))
        if first is None:
            # None live: one being deleted (a claim keeps the pool's name) is the 409 it is
            # without a pool, never a second namespace for the key; one rolled back was
            # handed to nobody (a retry after a 429) and is not the key's.
            going = (ns for ns in listed if bundle.is_terminating(ns))
            first = next((ns for ns in going if not bundle.is_rolled_back(ns)), None)
        found = name if first is None else first["metadata"]["name"]
        return await self._replayable(owner, found, idempotency, ttl, tenant)

    def _cached_with_key(self, owner: str, tenant: str | None, idempotency: str) -> bool:
        """Whether the cache holds a namespace of the caller's with this key's digest, live
        or being deleted but not rolled back (a claimed one keeps its pooled name, so only its
        label finds it)."""
        cache = self._synced_cache()
        return cache is not None and any(
            self._made_with_key(ns, owner, tenant, idempotency) and not bundle.is_rolled_back(ns)
            for ns in cache.items()
        )

    async def _claimed_by_key(
        self, owner: str, tenant: str | None, idempotency: str
    ) -> dict[str, Any] | None:
        """The caller's live namespace claimed from a pool with this key's digest (it has the
        pool's name, not the key's): one consistent LIST by the key's label."""
        listed = await self._listed_with_key(owner, tenant, idempotency)
        return _first_made(_with_key(listed, owner, tenant, idempotency))

    async def _listed_with_key(self, owner: str, tenant: str | None, idempotency: str) -> _Objects:
        """The caller's namespaces with this key's digest, live or being deleted: one
        consistent LIST by the key's label."""
        selector = f"{self.selector},{bundle.IDEMPOTENCY_LABEL}={idempotency}"
        return [
            ns
            for ns in await self._list_consistently(selector)
            if self._made_with_key(ns, owner, tenant, idempotency)
        ]

    async def _earlier_with_key(
        self,
        ours: dict[str, Any],
        owner: str,
        tenant: str | None,
        idempotency: str,
        passed: frozenset[str] = frozenset(),
    ) -> dict[str, Any] | None:
        """Another namespace for the same Idempotency-Key written before ``ours``, else None.

        With a pool, one key's namespace has two ways to come about (a claim, whose name is
        the pool's, or a create under the key's name), so the name alone no longer makes
        the API server the lock. A consistent LIST by the key's label does: the earliest
        write (lowest resourceVersion) keeps its namespace, every later one is rolled back
        and replays it. ``passed``: names the caps' LIST saw written before ``ours``
        (_hold_caps), earlier still if their revision moved since (an extend). One changed
        before any LIST of ours ranks after it: a window of milliseconds left open.
        """
        mine = ours["metadata"]["name"]
        listed = await self._listed_with_key(owner, tenant, idempotency)
        others = [
            obj
            for obj in _with_key(listed, owner, tenant, idempotency)
            if obj["metadata"]["name"] != mine
            and (_revision(obj) < _revision(ours) or obj["metadata"]["name"] in passed)
        ]
        return _first_made(others)

    async def _replayable(
        self, owner: str, name: str, idempotency: str, ttl: float, tenant: str | None
    ) -> dict[str, Any] | None:
        """The namespace a replayed request made, or None if there is none yet.

        A replay answers what the first request would have: never a kubeconfig for a
        namespace that is gone or going (409), never one for a different ttl (422).
        """
        obj = await self._read(name)
        if obj is None:
            return None
        return self._replay_of(obj, owner, idempotency, ttl, tenant)

    def _replay_of(
        self, obj: dict[str, Any], owner: str, idempotency: str, ttl: float, tenant: str | None
    ) -> dict[str, Any]:
        """``obj`` if a replayed request may be answered it; else 409 or 422 (_replayable).
        Also for a POST that lost its key to an earlier write: it is a replay too."""
        if not self._made_with_key(obj, owner, tenant, idempotency):
            raise Conflict("Idempotency-Key clashes with a namespace nsprov cannot reuse")
        metadata = obj["metadata"]
        if bundle.is_terminating(obj):
            raise Conflict("the namespace for this Idempotency-Key is being deleted")
        expires_at = bundle.expires_at_of(metadata)
        if expires_at is not None and expires_at <= self.clock():
            raise Conflict(
                f"the namespace for this Idempotency-Key expired at {_iso(expires_at)}; "
                "use a new key for a new namespace"
            )
        recorded = bundle.requested_ttl_of(metadata)
        if recorded is not None and recorded != ttl:
            raise Unprocessable(
                f"this Idempotency-Key was first used with ttl {format_duration(recorded)}, "
                f"not {format_duration(ttl)}; repeat the same request or use a new key"
            )
        return obj

    # ---- preview keys ---------------------------------------------------------------------

    async def provision_keyed(
        self,
        owner: str,
        key: str,
        ttl: float,
        profile: Profile,
        *,
        server: str | None = None,
        requested_by: str | None = None,
    ) -> tuple[Provisioned, bool]:
        """The owner's live namespace for ``key``, extended, or a new one; True when new.

        The name is derived from (owner, key) (bundle.keyed_name), so of concurrent
        creates with one key exactly one creates; the others run into AlreadyExists and
        take the existing namespace instead. An existing one gets ``ttl`` from now,
        never less than it has, never past its tenant's maxLifetime from creation (a
        pull request's next push still gets its namespace, for the time that is left),
        and a fresh kubeconfig.
        """
        name, digest = bundle.keyed_name(self.prefix, owner, key)
        for _ in range(_KEYED_ATTEMPTS):
            existing = await self._keyed(owner, key, name, digest, profile.tenant)
            if existing is None:
                try:
                    created = await self.provision(
                        owner, ttl, profile, server=server, requested_by=requested_by, key=key
                    )
                except _KeyTaken:
                    continue  # a concurrent create with this key won: take its namespace
                return created, True
            reused = await self._extend_keyed(existing, ttl, profile, server)
            if reused is not None:
                return reused, False
        raise Conflict(f"the namespace for key {key!r} changed meanwhile; retry")

    async def delete_keyed(self, owner: str, key: str, *, tenant: str | None = None) -> str:
        """Delete the owner's namespace for ``key``; its name. NotFound when there is none."""
        name, digest = bundle.keyed_name(self.prefix, owner, key)
        obj = await self._read(name)
        if obj is None or not self._made_with_digest(obj, owner, tenant, digest):
            raise NotFound(f"no namespace for key {key!r}")
        await self.delete(owner, name, tenant=tenant)
        return name

    async def _keyed(
        self, owner: str, key: str, name: str, digest: str, tenant: str | None
    ) -> dict[str, Any] | None:
        """The live namespace for the key, None when there is none; Conflict while one goes.

        A namespace being deleted (or expired, which the controller is about to delete)
        still holds the key's name: the caller is told to retry, not handed a dying one.
        """
        obj = await self._read(name)
        if obj is None:
            return None
        if not self._made_with_digest(obj, owner, tenant, digest):
            raise Conflict(f"key {key!r} clashes with a namespace nsprov cannot reuse")
        expires_at = bundle.expires_at_of(obj["metadata"])
        if bundle.is_terminating(obj) or (expires_at is not None and expires_at <= self.clock()):
            raise Conflict(f"the namespace for key {key!r} is being deleted; retry once it is gone")
        return obj

    def _made_with_digest(
        self, obj: dict[str, Any], owner: str, tenant: str | None, digest: str
    ) -> bool:
        """Whether ``obj`` is the caller's namespace for the preview key of this digest."""
        return self._callers_with(obj, owner, tenant, bundle.KEY_LABEL, digest)

    async def _extend_keyed(
        self, obj: dict[str, Any], ttl: float, profile: Profile, server: str | None
    ) -> Provisioned | None:
        """``obj`` with its expiry moved to now + ttl (see provision_keyed) and a fresh
        kubeconfig; None when it changed since it was read (the caller reads it again)."""
        metadata = obj["metadata"]
        name = metadata["name"]
        current = bundle.expires_at_of(metadata) or 0
        expires_at = math.ceil(self.clock() + ttl)
        created = bundle.created_at_of(metadata)
        if profile.max_lifetime and created is not None:
            expires_at = min(expires_at, created + math.floor(profile.max_lifetime))
        if expires_at > current:
            patch = {
                "metadata": {
                    "resourceVersion": metadata["resourceVersion"],
                    "labels": {bundle.EXPIRES_AT_LABEL: str(expires_at)},
                }
            }
            try:
                obj = await self._api.merge_patch(bundle.namespace_path(name), patch)
            except KubeError as exc:
                if exc.status == 409:
                    return None
                raise _failed("extend the namespace", exc) from exc
            self._remember(obj)
        log.info(
            "reused namespace=%s owner=%s expires_at=%d (preview key)",
            name, bundle.owner_of(metadata), max(expires_at, current),
        )  # fmt: skip
        return await self._complete(obj, server, replayed=False, profile=profile)

    def _caps(self, owner: str, profile: Profile) -> Sequence[_Cap]:
        """The caps a create by ``owner`` of ``profile``'s tenant must stay within."""
        tenant = profile.tenant
        label = f"tenant {tenant!r}" if tenant else "no tenant"
        caps: list[_Cap] = []
        if profile.max_namespaces_per_owner is not None:
            caps.append(
                _Cap(
                    "owner",
                    profile.max_namespaces_per_owner,
                    f"the limit of {profile.max_namespaces_per_owner} namespaces per owner "
                    f"({label}) is reached",
                    f"{self.selector},{bundle.OWNER_HASH_LABEL}={bundle.owner_hash(owner)}",
                    lambda m: bundle.owner_of(m) == owner,
                    tenant,
                )
            )
        if profile.max_namespaces is not None and tenant:
            caps.append(
                _Cap(
                    "tenant",
                    profile.max_namespaces,
                    f"the limit of {profile.max_namespaces} namespaces of tenant "
                    f"{tenant!r} is reached",
                    f"{self.selector},{bundle.TENANT_LABEL}={tenant}",
                    lambda m: bundle.tenant_of(m) == tenant,
                    tenant,
                )
            )
        if self.max_namespaces:
            caps.append(
                _Cap(
                    "total",
                    self.max_namespaces,
                    f"the limit of {self.max_namespaces} namespaces (all tenants "
                    "together) is reached",
                    # Pooled namespaces count in no caller's cap, this one included: the
                    # pool sizes bound them (policy.MAX_POOL_SIZE each).
                    f"{self.selector},!{bundle.POOL_LABEL}",
                    lambda m: not bundle.is_pooled(m),
                    tenant,
                )
            )
        return caps

    async def _check_caps(
        self,
        caps: Sequence[_Cap],
        owner: str = "",
        tenant: str | None = None,
        idempotency: str | None = None,
    ) -> None:
        """429 when a cap is full; a namespace being deleted fills its slot until it is gone.

        Were the slot free when deletion begins, a tenant that fills each namespace with
        objects whose finalizers nobody removes could hold any number of them, Terminating
        for good, however small its cap. The caller's live namespace for this
        Idempotency-Key is not counted: the request is its replay (``_same_key``).
        """
        managed = [
            obj
            for obj in await self._managed()
            if not bundle.is_rolled_back(obj)
            and not (idempotency and _is_keys(obj, owner, tenant, idempotency))
        ]
        for cap in caps:
            counted = [obj for obj in managed if cap.counts(obj["metadata"])]
            if len(counted) >= cap.limit:
                self._refused(cap, counted)

    def _refused(self, cap: _Cap, counted: Sequence[dict[str, Any]]) -> NoReturn:
        self.metrics.refused_by_cap.labels(tenant=cap.tenant or "", cap=cap.kind).inc()
        raise TooManyNamespaces(cap.detail + _going(counted))

    async def _hold_caps(self, created: dict[str, Any], caps: Sequence[_Cap]) -> frozenset[str]:
        """Keep ``created`` only if it is within the caps by a consistent read; else 429.
        The names of the key's earlier namespaces it passed over (``_same_key``), which the
        key's check then hands over even if changed since (extended: a newer revision).

        The check before creating reads a cache, and requests on other replicas (or
        on this one, concurrently) pass it together. So, once created, the namespace
        is judged against a LIST from the API server (no resourceVersion: a quorum
        read, which sees every create that finished before it): it stays only if
        fewer than the cap of the namespaces listed (live or being deleted: a slot
        is free when its namespace is gone) were created before it.
        "Before" is the create's resourceVersion (an etcd revision, unique and
        increasing in commit order), so every request judges by the same order and
        the first ``cap`` creates win whatever the timing; a loser is deleted before
        its caller hears 429, and no caller ever holds a namespace above the cap.

        A namespace changed since its create (extended, or deleted) has a newer
        resourceVersion; its creationTimestamp, if an earlier second, still ranks it
        ahead. One that was created within the same second as ``created`` and
        extended or deleted between
        ``created``'s create and this LIST is not counted: a window of milliseconds
        the caps accept. The cost (one LIST per cap) falls on capped requests only.
        """
        name = created["metadata"]["name"]
        passed: set[str] = set()
        try:
            for cap in caps:
                listed = []
                for obj in await self._list_consistently(cap.label_selector):
                    if not cap.counts(obj["metadata"]) or bundle.is_rolled_back(obj):
                        continue
                    if _same_key(obj, created):
                        if _revision(obj) < _revision(created):
                            passed.add(obj["metadata"]["name"])
                    else:
                        listed.append(obj)
                ahead = _ahead_of(created, listed)
                if len(ahead) >= cap.limit:
                    self._refused(cap, ahead)
        except BaseException:
            # Over the cap, or we cannot tell: either way this caller gets no namespace.
            self.metrics.cap_rollbacks.inc()
            await self._roll_back(created)
            raise
        log.debug("namespace=%s is within the caps", name)
        return frozenset(passed)

    async def _list_consistently(self, label_selector: str) -> _Objects:
        query = {"labelSelector": label_selector}
        try:
            listing = await self._api.get(bundle.NAMESPACES_PATH, query=query)
        except KubeError as exc:
            raise _failed("list namespaces", exc) from exc
        items: _Objects = listing.get("items", [])
        return items

    def _require_grants(self, roles: tuple[str, ...]) -> None:
        if self.grants is not None:
            self.grants.require(roles)

    async def _complete(
        self,
        namespace: dict[str, Any],
        server: str | None,
        *,
        replayed: bool,
        profile: Profile,
    ) -> Provisioned:
        """The rest of the bundle as the namespace's own template says, then a token.

        The ServiceAccount, RoleBindings and bounds (quota, limits, network policy) are
        created concurrently, and all of them before the token: a kubeconfig never
        exists for a namespace without its quota. A namespace made before templates
        (no record) gets its one RoleBinding, as it always did.
        """
        metadata = namespace["metadata"]
        name = metadata["name"]
        expires_at = bundle.expires_at_of(metadata) or math.ceil(self.clock())
        template = bundle.template_of(metadata) or bundle.legacy_template(
            metadata, profile.cluster_roles[0]
        )
        self._require_grants(template.cluster_roles)
        try:
            await asyncio.gather(
                self._create(
                    bundle.service_accounts_path(name),
                    bundle.service_account(name, self.selector),
                    "create the ServiceAccount",
                ),
                *(
                    self._create_quota(wanted)
                    if wanted.kind == "resourcequota"
                    else self._create(wanted.collection, wanted.body, _what(wanted))
                    for wanted in bundle.wanted_objects(name, self.selector, template)
                ),
            )
            (token, token_expires_at), _ = await asyncio.gather(
                self._token(name, expires_at),
                self._first_call_ready(name, template.cluster_roles),
            )
        except ProvisioningFailed:
            if replayed:
                await self._refuse_if_going(name)  # refused for it: no new content
            raise
        if replayed:
            # The first request may still be judging it (its caps, its key) and roll it
            # back while this answer is made: never a kubeconfig for a namespace going.
            await self._refuse_if_going(name)
        config = kubeconfig_.build(
            server=server or self.default_server, ca_data=self.ca_data, namespace=name, token=token
        )
        if token_expires_at is not None and token_expires_at < expires_at:
            log.warning(
                "namespace=%s token expires at %d, before the namespace (%d): the API server "
                "caps token lifetimes (--service-account-max-token-expiration)",
                name, token_expires_at, expires_at,
            )  # fmt: skip
        return Provisioned(
            name=name,
            expires_at=expires_at,
            kubeconfig=config,
            replayed=replayed,
            token_expires_at=token_expires_at,
        )

    async def _refuse_if_going(self, name: str) -> None:
        """409 when the replayed namespace ``name`` is gone, being deleted or rolled back."""
        now = await self._read(name)
        if now is None or bundle.is_terminating(now) or bundle.is_marked_rolled_back(now):
            raise Conflict("the namespace for this Idempotency-Key is being deleted")

    async def _first_call_ready(self, name: str, roles: Sequence[str]) -> None:
        """Return once the authorizer allows the ServiceAccount its grants (firstcall.py), or
        its deadline passed: so the job's first call is not a 403. Runs alongside the
        TokenRequest; a grant with no rules has nothing to wait for."""
        if self.grants is None or not self.first_call_check:
            return
        accesses = [a for a in (self.grants.access(role) for role in roles) if a is not None]
        if not accesses:
            return
        started = time.perf_counter()
        allowed = await self._call(firstcall.wait_until_allowed, self.kube, name, accesses)
        self.metrics.first_call_wait.observe(time.perf_counter() - started)
        if not allowed:
            self.metrics.first_call_unready.inc()

    async def _create(self, path: str, body: dict[str, Any], what: str) -> None:
        try:
            await self._api.create(path, body)
        except KubeError as exc:
            raise _failed(what, exc) from exc

    async def _create_quota(self, wanted: bundle.Wanted) -> None:
        """Create the ResourceQuota and put it in force before the kubeconfig exists.

        Kubernetes enforces a quota only once its status is filled in (bundle.quota_in_force):
        nsprov writes ``status.hard`` itself, so the quota binds (fail-closed) from the
        first instant, then waits a moment (``QUOTA_COUNT_SECONDS`` at most) for the
        resource-quota controller to count the namespace, so the job's first creates are
        not refused as "status unknown for quota". If the controller is slower, the
        kubeconfig is handed out anyway: the quota still binds, creates wait for it.
        """
        path = f"{wanted.collection}/{wanted.name}"
        try:
            quota = await self._api.post(wanted.collection, wanted.body)
        except KubeError as exc:
            if exc.status != 409:
                raise _failed(_what(wanted), exc) from exc
            try:  # a replayed request: it exists (and may still need its status)
                quota = await self._api.get(path)
            except KubeError as exc:
                raise _failed("read the ResourceQuota", exc) from exc
        body = bundle.quota_in_force(quota)
        if body is not None:
            try:
                quota = await self._api.replace(
                    bundle.resource_quota_status_path(wanted.body["metadata"]["namespace"]), body
                )
            except KubeError as exc:
                if exc.status != 409:  # 409: the quota controller wrote it first
                    raise _failed("put the ResourceQuota in force", exc) from exc
        deadline = time.monotonic() + QUOTA_COUNT_SECONDS
        while not bundle.quota_counted(quota):
            if time.monotonic() >= deadline:
                log.warning(
                    "namespace=%s quota not counted by kube-controller-manager within %.0fs; "
                    "creates it covers are refused until it is",
                    wanted.body["metadata"]["namespace"], QUOTA_COUNT_SECONDS,
                )  # fmt: skip
                return
            await anyio.sleep(QUOTA_POLL_SECONDS)
            try:
                quota = await self._api.get(path)
            except KubeError as exc:
                # The quota is in force already; the wait only spares the job a refusal.
                log.warning("namespace=%s could not read its quota (%s); not waiting for "
                            "its count", wanted.body["metadata"]["namespace"], exc)  # fmt: skip
                return

    async def _token(self, name: str, expires_at: int) -> tuple[str, int | None]:
        """A token for the namespace's ServiceAccount, and when it really expires.

        We ask for the namespace's remaining life, but the API server may grant less.
        """
        seconds = bundle.token_seconds(expires_at - self.clock())
        path = bundle.token_path(name)
        try:
            response = await self._api.post(path, bundle.token_request(seconds))
        except KubeError as exc:
            raise _failed("request a token", exc) from exc
        status = response["status"]
        token: str = status["token"]
        return token, bundle.unix_time(status.get("expirationTimestamp"))

    async def _roll_back(self, namespace: dict[str, Any]) -> None:
        name = namespace["metadata"]["name"]
        try:
            # Shielded: a client that hangs up mid-request must not cancel the cleanup.
            with anyio.CancelScope(shield=True):
                namespace = await self._mark_rolled_back(namespace)
                self._remember(await self._delete_namespace(namespace))
        except Exception:
            log.exception("rollback of namespace=%s failed; its TTL will remove it", name)
        else:
            log.warning("rolled back half-provisioned namespace=%s", name)

    async def _mark_rolled_back(self, namespace: dict[str, Any]) -> dict[str, Any]:
        """Say on the namespace that nobody was handed it, so that while it is being deleted
        it holds no cap slot: a burst of one owner's concurrent creates, all but one rolled
        back, otherwise held the tenant's (and the total) slots for the namespace
        controller's seconds, and every other owner got 429. Only nsprov may write the
        annotation (nsprov-protect). If the write fails, the namespace is deleted anyway
        and holds its slot until it is gone, as any other."""
        metadata = namespace["metadata"]
        patch = {
            "metadata": {
                "resourceVersion": metadata.get("resourceVersion"),
                "annotations": {bundle.ROLLED_BACK_ANNOTATION: "true"},
            }
        }
        try:
            patched: dict[str, Any] = await self._api.merge_patch(
                bundle.namespace_path(metadata["name"]), patch
            )
        except Exception as exc:  # never in the way of the delete
            log.warning("namespace=%s not marked rolled back (%s)", metadata["name"], exc)
            return namespace
        return patched

    async def _delete_namespace(self, namespace: dict[str, Any]) -> dict[str, Any]:
        """Delete exactly this namespace; the API answers with it, now terminating."""
        metadata = namespace["metadata"]
        return await self._api.delete(
            bundle.namespace_path(metadata["name"]), bundle.delete_exactly(metadata["uid"])
        )

    # ---- changing -------------------------------------------------------------------------

    async def delete(self, owner: str, name: str, *, tenant: str | None = None) -> None:
        obj = await self._owned(owner, name, tenant=tenant)
        if bundle.is_terminating(obj):
            return  # already on its way out: the caller's wish is granted
        try:
            self._remember(await self._delete_namespace(obj))
        except KubeError as exc:
            if exc.status in (404, 409):  # gone, or replaced by another object since the read
                raise NotFound(f"namespace {name!r} not found") from None
            raise _failed("delete the namespace", exc) from exc
        self.metrics.deletions.labels(reason="request").inc()
        log.info("deleted namespace=%s owner=%s reason=request", name, owner,
                 extra={"event": "deleted", "namespace": name, "owner": owner,
                        "reason": "request"})  # fmt: skip

    async def extend(
        self, owner: str, name: str, ttl: float, profile: Profile, *, server: str | None
    ) -> Provisioned:
        obj = await self._owned(owner, name, tenant=profile.tenant)
        if bundle.is_terminating(obj):
            raise Conflict(f"namespace {name!r} is being deleted")
        current = bundle.expires_at_of(obj["metadata"])
        if current is not None and current <= self.clock():
            # The controller may be deleting it right now; extending would race that.
            raise Conflict(f"namespace {name!r} has expired")
        expires_at = math.ceil(self.clock() + ttl)
        self._check_lifetime(obj["metadata"], expires_at, profile.max_lifetime)
        patch = {
            "metadata": {
                # The resourceVersion turns the patch into a compare-and-swap.
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "labels": {bundle.EXPIRES_AT_LABEL: str(expires_at)},
            }
        }
        try:
            patched = await self._api.merge_patch(bundle.namespace_path(name), patch)
        except KubeError as exc:
            if exc.status == 409:
                raise Conflict(f"namespace {name!r} changed meanwhile; retry") from None
            raise _failed("extend the namespace", exc) from exc
        self._remember(patched)
        log.info("extended namespace=%s owner=%s expires_at=%d", name, owner, expires_at,
                 extra={"event": "extended", "namespace": name, "owner": owner,
                        "expires_at": expires_at})  # fmt: skip
        return await self._complete(patched, server, replayed=False, profile=profile)

    def _check_lifetime(self, metadata: dict[str, Any], expires_at: int, lifetime: float) -> None:
        """BadRequest when ``expires_at`` is past creation + ``lifetime``, saying by how much."""
        created = bundle.created_at_of(metadata)
        if not lifetime or created is None:
            return
        latest = created + math.floor(lifetime)
        if expires_at > latest:
            raise BadRequest(
                f"the new expiry {_iso(expires_at)} is {format_duration(expires_at - latest)} "
                f"past the total lifetime of {format_duration(lifetime)} from creation "
                f"(the latest possible expiry is {_iso(latest)})"
            )


_KEYED_ATTEMPTS = 3
"""Reads of a keyed namespace before provision_keyed gives up on one that keeps changing."""


class _KeyTaken(Exception):
    """A keyed create ran into AlreadyExists: a concurrent create with the key won."""


@dataclass(frozen=True)
class _Cap:
    """One cap on namespaces, live or being deleted: which count, how to list them consistently."""

    kind: str
    """owner, tenant or total: the metric's label."""
    limit: int
    detail: str
    label_selector: str
    counts: Callable[[dict[str, Any]], bool]
    """Whether a namespace (its metadata) counts against this cap."""
    tenant: str | None


def _what(wanted: bundle.Wanted) -> str:
    if wanted.kind == "rolebinding":
        return f"bind ClusterRole {wanted.body['roleRef']['name']!r}"
    return f"create the {wanted.body['kind']}"


def _revision(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion", ""))
    except ValueError:
        return 0  # not etcd-backed: rank it first, which errs towards refusing


def _with_key(namespaces: _Objects, owner: str, tenant: str | None, idempotency: str) -> _Objects:
    """The caller's live namespaces made or claimed with this Idempotency-Key's digest."""
    return [ns for ns in namespaces if _is_keys(ns, owner, tenant, idempotency)]


def _is_keys(ns: dict[str, Any], owner: str, tenant: str | None, idempotency: str) -> bool:
    """Whether ``ns`` is a live namespace of the caller's made or claimed with this
    Idempotency-Key's digest (one being deleted, or marked for a rollback, lost a race for
    the key or failed)."""
    return (
        (ns["metadata"].get("labels") or {}).get(bundle.IDEMPOTENCY_LABEL) == idempotency
        and not bundle.is_terminating(ns)
        and not bundle.is_marked_rolled_back(ns)
        and bundle.belongs_to(ns["metadata"], owner, tenant)
    )


def _same_key(obj: dict[str, Any], created: dict[str, Any]) -> bool:
    """Whether ``obj`` is a live namespace of ``created``'s caller for the same
    Idempotency-Key. It holds no cap slot against ``created``: with a pool, the first of
    the key's writes keeps its namespace and every later one is rolled back and answered
    it (``_earlier_with_key``, after the caps, told which written before ``created`` were
    passed over), so one key never holds two slots, and a request at its cap is answered
    its key's namespace, as a replay is, not refused. One written after ``created`` is
    rolled back by its own check, though a claim's older creationTimestamp would rank it
    ahead. One being deleted holds its slot as any other."""
    metadata = created["metadata"]
    digest = (metadata.get("labels") or {}).get(bundle.IDEMPOTENCY_LABEL)
    owner = bundle.owner_of(metadata)
    if not digest or owner is None or obj["metadata"]["name"] == metadata["name"]:
        return False
    return _is_keys(obj, owner, bundle.tenant_of(metadata), digest)


def _first_made(namespaces: _Objects) -> dict[str, Any] | None:
    """The one written first (lowest resourceVersion): the one a race for a key keeps, so a
    replay never picks a loser that is about to be rolled back."""
    return min(namespaces, key=_revision) if namespaces else None


def _ahead_of(created: dict[str, Any], listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The namespaces in ``listed``, live or being deleted, created before ``created``.

    One being deleted still holds its slot. A loser of a cap race rolled back a moment
    ago was created after the winners, so it never ranks ahead of them.
    """
    metadata = created["metadata"]
    name, revision = metadata["name"], _revision(created)
    second = metadata.get("creationTimestamp") or ""
    return [
        obj
        for obj in listed
        if obj["metadata"]["name"] != name
        and (_revision(obj) < revision or (obj["metadata"].get("creationTimestamp") or "") < second)
    ]


def _going(counted: Sequence[dict[str, Any]]) -> str:
    """What a 429's detail adds when namespaces being deleted hold some of the slots."""
    going = sum(1 for obj in counted if bundle.is_terminating(obj))
    if not going:
        return ""
    if going == 1:
        return "; 1 of them is being deleted and holds its slot until it is gone"
    return f"; {going} of them are being deleted and hold their slots until they are gone"


def _failed(what: str, exc: KubeError) -> ProvisioningFailed:
    # The raw Kubernetes message goes to the log only; the client gets what failed.
    log.error("could not %s: %s", what, exc)
    if exc.status == 403:
        return ProvisioningFailed(f"could not {what}: the provisioner is not allowed to")
    return ProvisioningFailed(f"could not {what} (Kubernetes answered {exc.status})")
