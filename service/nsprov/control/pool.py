"""The pool keeper: ready namespaces made in advance, so a POST only has to claim one.

A create makes four objects in a row (namespace, ServiceAccount, RoleBindings, token)
plus a tenant's bounds, and then waits for the authorizer to know the fresh binding;
it can never beat the raw API. A pooled profile's POST instead claims a namespace the
leader made earlier, with one conditional write, and mints the token (provisioner.py).

What the keeper makes is inside the same trust model as every other namespace: it
carries nsprov's selector label (so the admission policies guard it, and the
controller repairs and expires it), the template's record and bounds, an expiry of
the pool's ``maxAge`` (a crash never leaves one for good) and no owner and no token
(a binding without a token grants nobody anything). It carries no owner and no tenant
label either, so no caller sees it and none of a caller's caps counts it; its total
is bounded by the pool sizes (policy.MAX_POOL_SIZE each).

Each pooled namespace is made for one profile: its hash (bundle.pool_hash: tenant,
template, the grants' rules) is on it. When the policy, a grant or the template
changes, the profile's hash changes, and the keeper deletes the pooled namespaces of
the old hash (with a resourceVersion precondition, so one claimed meanwhile is never
hit); a request computes the new hash and never claims one of them.

A namespace is claimable only once it is whole: every object exists, the quota is in
force and counted, and the authorizer allows the ServiceAccount its grant
(firstcall.py); then the keeper writes ``nsprov.io/pool-ready``. One that never gets
there (the keeper crashed while making it) is deleted after ``ABANDONED_SECONDS``.

The keeper runs on the leader only (like the reconcile workers), from the Namespace
informer's view, woken by each namespace event (a claim) and once a second; it refills
once the events pause (REFILL_QUIET_SECONDS), so a burst of claims is not slowed by
its own refill competing for the same API server.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from nsprov.control.watch import Informer
from nsprov.core.errors import NsprovError
from nsprov.core.kube import Kube, KubeError
from nsprov.policy.model import Profile
from nsprov.provision import bundle, firstcall
from nsprov.provision.grant import GrantGuard
from nsprov.provision.metrics import Metrics

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.pool")

ABANDONED_SECONDS = 60.0
"""A pooled namespace still not ready this long after its creation, and not being made by
this keeper, was left half-made (a crash, a lost lead): it is deleted and made anew."""
QUOTA_COUNT_SECONDS = 5.0
"""How long the keeper waits for kube-controller-manager to count a new quota's usage."""
_TICK_SECONDS = 1.0
REFILL_QUIET_SECONDS = 0.2
"""The keeper refills once claims have paused this long (or a tick has passed): a burst of
claims is served first, and not slowed by refills competing for the same API server."""


def profile_hash(profile: Profile, grants: GrantGuard | None) -> str:
    """The hash a pooled namespace of ``profile`` carries now (the API wing computes the
    same from the same pieces: bundle.pool_hash)."""
    prints = [grants.fingerprint(r) if grants else "" for r in profile.cluster_roles]
    return bundle.pool_hash(profile.tenant, profile.template, prints)


class PoolKeeper:
    """Keeps ``profile.pool.size`` ready namespaces for each pooled profile, while leading."""

    def __init__(
        self,
        kube: Kube,
        *,
        selector: bundle.Selector,
        prefix: str,
        namespaces: Informer,
        profiles: Callable[[], list[Profile]],
        metrics: Metrics,
        grants: GrantGuard | None = None,
        workers: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.selector = selector
        self.prefix = prefix
        self.namespaces = namespaces
        self.profiles = profiles
        self.metrics = metrics
        self.grants = grants
        self.clock = clock
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, "pool-make")
        self._making: dict[str, str] = {}  # name -> hash, while this keeper makes it
        # Hashes this keeper has kept a pool for. A keeper that keeps no pool now deletes
        # only pooled namespaces of those: one started with pools off (or a test's second
        # nsprov on the same cluster) leaves others to their expiry rather than guess.
        self._kept: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._keeping = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start_keeping(self) -> None:
        """Called when this replica becomes leader."""
        self._keeping.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pool-keeper", daemon=True)
            self._thread.start()
        self.wake()

    def stop_keeping(self) -> None:
        """Called when the lead is lost: nothing new is started (makes in flight finish)."""
        self._keeping.clear()

    def stop(self) -> None:
        self._keeping.clear()
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def wake(self) -> None:
        """Look again now (a namespace event: a pooled namespace may have been claimed)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(_TICK_SECONDS)
            self._settle()
            if not self._keeping.is_set() or not self.namespaces.synced.is_set():
                continue
            try:
                self.keep()
            except Exception:
                log.exception("pool keeper pass failed; again in %.0fs", _TICK_SECONDS)

    def _settle(self) -> None:
        """Wait until no namespace event came for REFILL_QUIET_SECONDS, a tick at most."""
        deadline = time.monotonic() + _TICK_SECONDS
        while self._wake.is_set() and time.monotonic() < deadline:
            self._wake.clear()
            if self._stopping.wait(REFILL_QUIET_SECONDS):
                return

    # ---- one pass -------------------------------------------------------------------------

    def wanted(self) -> dict[str, Profile]:
        """hash -> profile, for each pooled profile whose grants may be handed out now."""
        found: dict[str, Profile] = {}
        for profile in self.profiles():
            if profile.pool_size <= 0:
                continue
            if self.grants is not None and any(
                self.grants.refusal(role) is not None for role in profile.cluster_roles
            ):
                continue  # nothing is made with a grant that is missing or unsafe
            found[profile_hash(profile, self.grants)] = profile
        return found

    def keep(self) -> None:
        """Delete stale and abandoned pooled namespaces; start making what each pool lacks."""
        wanted = self.wanted()
        self._kept.update(wanted)
        now = self.clock()
        with self._lock:
            making = dict(self._making)
        have: dict[str, set[str]] = {h: set() for h in wanted}
        for name, making_for in making.items():
            have.setdefault(making_for, set()).add(name)
        for ns in self.namespaces.items():
            metadata = ns["metadata"]
            pool = bundle.pool_of(metadata)
            if pool is None or bundle.is_terminating(ns):
                continue
            name = metadata["name"]
            if pool not in wanted:
                if wanted or pool in self._kept:
                    self._discard(ns, "stale")
            elif (
                name not in making
                and not bundle.is_pool_ready(metadata)
                and ((bundle.created_at_of(metadata) or now) + ABANDONED_SECONDS < now)
            ):
                self._discard(ns, "abandoned")
            else:
                have[pool].add(name)
        for pool, profile in wanted.items():
            for _ in range(profile.pool_size - len(have[pool])):
                self._start_making(profile, pool)

    def _start_making(self, profile: Profile, pool: str) -> None:
        name = bundle.random_name(self.prefix)
        with self._lock:
            self._making[name] = pool
        try:
            self._executor.submit(self._make_safely, name, profile, pool)
        except RuntimeError:  # shut down
            with self._lock:
                self._making.pop(name, None)

    def _discard(self, ns: dict[str, Any], reason: str) -> None:
        """Delete a pooled namespace exactly as seen: claimed since, it is left alone (409)."""
        metadata = ns["metadata"]
        try:
            self.kube.delete(
                bundle.namespace_path(metadata["name"]),
                bundle.delete_exactly(metadata["uid"], metadata.get("resourceVersion")),
            )
        except KubeError as exc:
            if exc.status in (404, 409):
                return
            raise
        self.metrics.pool_discarded.labels(reason=reason).inc()
        log.info("deleted pooled namespace=%s reason=%s", metadata["name"], reason)

    # ---- making one -----------------------------------------------------------------------

    def _make_safely(self, name: str, profile: Profile, pool: str) -> None:
        try:
            if self._keeping.is_set():
                self.make(name, profile, pool)
        except (KubeError, NsprovError) as exc:
            log.warning("could not make pooled namespace=%s: %s", name, exc)
        except Exception:
            log.exception("making pooled namespace=%s crashed", name)
        finally:
            with self._lock:
                self._making.pop(name, None)
            self.wake()

    def make(self, name: str, profile: Profile, pool: str) -> None:
        """Make one pooled namespace whole, then mark it ready; delete it if that fails."""
        assert profile.pool is not None
        expires_at = math.ceil(self.clock() + profile.pool.max_age)
        manifest = bundle.pooled_namespace(
            name,
            selector=self.selector,
            template=profile.template,
            tenant=profile.tenant,
            expires_at=expires_at,
            pool=pool,
        )
        created = self.kube.post(bundle.NAMESPACES_PATH, manifest)
        try:
            self._fill(name, profile)
            self.kube.merge_patch(
                bundle.namespace_path(name), bundle.pool_ready_patch(created["metadata"])
            )
        except BaseException:
            try:
                self.kube.delete(
                    bundle.namespace_path(name), bundle.delete_exactly(created["metadata"]["uid"])
                )
            except (KubeError, NsprovError) as exc:
                log.warning("could not delete half-made pooled namespace=%s (%s); its expiry "
                            "will", name, exc)  # fmt: skip
            raise
        self.metrics.pool_made.labels(tenant=profile.tenant or "").inc()
        log.debug("pooled namespace=%s ready tenant=%s", name, profile.tenant or "-")

    def _fill(self, name: str, profile: Profile) -> None:
        """The ServiceAccount and what the template calls for, the quota in force and
        counted, and the grant known to the authorizer."""
        template = profile.template
        self.kube.create(
            bundle.service_accounts_path(name), bundle.service_account(name, self.selector)
        )
        for wanted in bundle.wanted_objects(name, self.selector, template):
            if wanted.kind == "resourcequota":
                self._quota(name, wanted)
            else:
                self.kube.create(wanted.collection, wanted.body)
        if self.grants is not None:
            accesses = [a for a in map(self.grants.access, template.cluster_roles) if a]
            if accesses:
                firstcall.wait_until_allowed(self.kube, name, accesses)

    def _quota(self, name: str, wanted: bundle.Wanted) -> None:
        path = f"{wanted.collection}/{wanted.name}"
        try:
            quota = self.kube.post(wanted.collection, wanted.body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            quota = self.kube.get(path)
        body = bundle.quota_in_force(quota)
        if body is not None:
            try:
                quota = self.kube.replace(bundle.resource_quota_status_path(name), body)
            except KubeError as exc:
                if exc.status != 409:
                    raise
        deadline = time.monotonic() + QUOTA_COUNT_SECONDS
        while not bundle.quota_counted(quota) and time.monotonic() < deadline:
            if self._stopping.wait(0.05):
                return
            quota = self.kube.get(path)
