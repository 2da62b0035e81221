"""Reconcile provisioned namespaces: expire what is due, repair what a tenant broke.

The original provisioner kept its TTL timers in memory, so every restart leaked
the namespaces it had made. Here all state is in the cluster: the expiry is a
label on the Namespace, written with it. The controller lists and watches what
carries nsprov's label, and for each namespace decides from what it sees
(level-based), never from what it remembers:

- expired: delete the Namespace, with a UID precondition so a namespace of the
  same name created since is never hit;
- otherwise: make sure the ServiceAccount and what the namespace's recorded
  template calls for (its RoleBindings, ResourceQuota, LimitRange and
  NetworkPolicy) exist and are right, remove those of nsprov's objects the
  template no longer calls for (after a roll-out), and schedule a wake-up at the
  expiry instant.
- without an expiry label (every namespace the original Go tool made, which
  kept its timers in memory): adopt it, by writing the label as its
  creationTimestamp + the adoption ttl; its next event judges it like any other.
  An adopted namespace has no owner, so no API caller can see it, and nothing
  in it is repaired: nsprov only takes over its end.
- being deleted: followed until it is gone. One still there ``stuck_after``
  seconds after its deletion began is reported once (deletion.py says what holds
  it): an Event and a log line; the gauge counts it at every scrape. nsprov removes
  no finalizer: what holds a namespace is a tenant's object or a cluster's API, and
  an operator decides what to do about it.

Caches (informers) run on every replica, so /readyz and metrics work
everywhere; the reconcile workers run only while this replica leads. They hold
the kinds nsprov makes, and only in the namespaces it manages (watch.py says
why and how). The seed's list of watched kinds named Roles too, because the Go
tool made a Role from its ``--role`` file; nsprov binds ClusterRoles and makes
no Role, so it watches none.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from nsprov.control.namespacescope import NamespaceScope
from nsprov.control.watch import (
    LIMIT_RANGES,
    NAMESPACES,
    NETWORK_POLICIES,
    RESOURCE_QUOTAS,
    ROLE_BINDINGS,
    SERVICE_ACCOUNTS,
    Informer,
    Resource,
    wait_synced,
)
from nsprov.core.errors import GrantUnusable, NsprovError
from nsprov.core.kube import Kube, KubeError
from nsprov.core.workqueue import RetryBucket, WorkQueue, retry_delay
from nsprov.provision import bundle, deletion
from nsprov.provision.grant import GrantGuard, bind_refusal
from nsprov.provision.metrics import Metrics

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.controller")

_RETRY_SECONDS = (1.0, 30.0)  # backoff of a failed reconcile: first, maximum
# Retries of all keys together: a burst of 100, then 10 a second (client-go's defaults).
_RETRY_RATE, _RETRY_BURST = 10.0, 100
# How long losing the lead (or stopping) waits for reconciles in flight to finish before
# the Lease is released; a reconcile is a few calls, each bounded by the request timeout.
DRAIN_SECONDS = 30.0
# The provisioner creates the ServiceAccount and RoleBinding right after the Namespace,
# whose watch event usually arrives first. Repairs of a namespace wait this long after
# its ADDED event, so the controller does not race the provisioner (and call its work a
# repair). creationTimestamp has whole seconds only, too coarse to measure this by.
SETTLE_SECONDS = 1.0


class Controller:
    def __init__(
        self,
        kube: Kube,
        *,
        selector: bundle.Selector,
        cluster_role: str,
        metrics: Metrics,
        resync_seconds: float = 300.0,
        adopt_seconds: float = 86400.0,
        workers: int = 2,
        clock: Callable[[], float] = time.time,
        grants: GrantGuard | None = None,
        stuck_after_seconds: float = 600.0,
        instance: str = "nsprov",
    ) -> None:
        self.kube = kube
        # Asked before a RoleBinding is (re-)created: a grant that is missing or turned
        # unsafe is not handed out by a repair either (None: not checked, unit tests).
        self.grants = grants
        self.selector = selector
        self.cluster_role = cluster_role
        self.metrics = metrics
        self.resync_seconds = resync_seconds
        self.adopt_seconds = adopt_seconds
        self.workers = workers
        self.clock = clock
        self.queue = WorkQueue(clock=clock)
        self._failures: dict[str, int] = {}
        self._deleted: set[str] = set()  # UIDs we deleted, until their DELETED event
        self._added_at: dict[str, float] = {}  # UID -> when its ADDED event arrived
        # A namespace still being deleted this long after its deletion began is stuck.
        self.stuck_after_seconds = stuck_after_seconds
        # Who reports (an Event's reportingInstance): the pod's name in a cluster.
        self.instance = instance
        self._reported_stuck: set[str] = set()  # UIDs reported stuck, until their DELETED event
        self._reconciling = threading.Event()
        self._retry_bucket = RetryBucket(_RETRY_RATE, _RETRY_BURST)
        # Guards the start of each reconcile against stop_reconciling, which waits for
        # _in_flight to drop to zero: no write after the lead is given up.
        self._flight = threading.Condition()
        self._in_flight = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        on_restart = metrics.watch_restarts_for
        # Indexed by the pool a namespace is ready in: a claim picks from one pool's few, in
        # constant time, instead of passing over every managed namespace per request.
        self.namespaces = Informer(
            kube, NAMESPACES, str(selector), self._on_namespace, on_restart,
            index=bundle.ready_pool_of,
        )  # fmt: skip
        # The namespaces whose objects the other caches keep: those the first one holds.
        self.scope = NamespaceScope()

        def namespaced(resource: Resource) -> Informer:
            return Informer(
                kube, resource, str(selector), self._on_namespaced, on_restart,
                scope=self.scope, after=self.namespaces.synced,
                on_foreign=metrics.foreign_object_ignored,
            )  # fmt: skip

        self.service_accounts = namespaced(SERVICE_ACCOUNTS)
        self.role_bindings = namespaced(ROLE_BINDINGS)
        self.resource_quotas = namespaced(RESOURCE_QUOTAS)
        self.limit_ranges = namespaced(LIMIT_RANGES)
        self.network_policies = namespaced(NETWORK_POLICIES)
        # The informer that holds each kind a template can call for.
        self._caches = {
            "rolebinding": self.role_bindings,
            "resourcequota": self.resource_quotas,
            "limitrange": self.limit_ranges,
            "networkpolicy": self.network_policies,
        }
        self.informers = [
            self.namespaces,
            self.service_accounts,
            self.role_bindings,
            self.resource_quotas,
            self.limit_ranges,
            self.network_policies,
        ]
        metrics.queue_depth.set_function(lambda: len(self.queue))
        metrics.count_by_tenant_with(
            _synced_items(self.namespaces), _synced_items(self.resource_quotas), selector
        )
        metrics.count_terminating_with(_synced_items(self.namespaces), stuck_after_seconds, clock)
        metrics.report_overdue_with(_synced_items(self.namespaces), clock)
        metrics.count_pool_with(_synced_items(self.namespaces))
        # Told of every Namespace event (the pool keeper: a claim is one).
        self.namespace_listeners: list[Callable[[], None]] = []

    # ---- events -> queue ------------------------------------------------------------------

    def _on_namespace(self, kind: str, obj: dict[str, Any]) -> None:
        uid = obj["metadata"].get("uid", "")
        if kind == "ADDED":
            self._added_at[uid] = self.clock()
        elif kind == "DELETED":
            self._deleted.discard(uid)
            self._added_at.pop(uid, None)
            self._reported_stuck.discard(uid)
        # The namespaced caches keep objects of exactly the namespaces this one holds.
        if kind == "DELETED":
            self.scope.lost(obj["metadata"]["name"])
        else:
            self.scope.saw(obj["metadata"]["name"])
        self.queue.add(obj["metadata"]["name"])
        for listener in self.namespace_listeners:
            listener()

    def _on_namespaced(self, kind: str, obj: dict[str, Any]) -> None:
        namespace = obj["metadata"].get("namespace")
        if namespace:
            self.queue.add(namespace)

    # ---- lifecycle ------------------------------------------------------------------------

    def start_informers(self) -> None:
        self.scope.start()
        for informer in self.informers:
            informer.start()

    def synced(self) -> bool:
        return all(informer.synced.is_set() for informer in self.informers)

    def wait_synced(self, timeout: float) -> bool:
        return wait_synced(self.informers, timeout)

    def start_reconciling(self) -> None:
        """Called when this replica becomes leader (or at start without leader election)."""
        self._reconciling.set()
        self.metrics.leader.set(1)
        if not self._threads:
            for i in range(self.workers):
                self._spawn(self._work, f"reconcile-{i}")
            self._spawn(self._resync, "resync")
        self._enqueue_all()

    def stop_reconciling(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Called when leadership is lost (before the Lease is released): no reconcile
        starts after this is called, and those in flight have finished when it returns
        (or ``drain_seconds`` have passed), so a successor never races one of ours.
        """
        with self._flight:
            self._reconciling.clear()
            drained = self._flight.wait_for(lambda: self._in_flight == 0, drain_seconds)
        self.metrics.leader.set(0)
        if not drained:
            log.warning("%d reconcile(s) still running after %.0fs; stepping down anyway",
                        self._in_flight, drain_seconds)  # fmt: skip

    def stop(self) -> None:
        self.stop_reconciling()
        self._stopping.set()
        self.queue.shutdown()
        for informer in self.informers:
            informer.stop()
        self.scope.stop()
        for thread in self._threads:
            thread.join(timeout=10)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _enqueue_all(self) -> None:
        """Every namespace; those expired already first, the longest overdue first.

        A new leader (after a takeover or an API server outage) may find a backlog of
        expiries: worked off in the cache's order, the first to expire could wait behind
        all the others (a chaos run saw 9.5 s with 100 overdue); in expiry order, each
        waits only for those due before it.
        """
        now = self.clock()

        def overdue_first(ns: dict[str, Any]) -> tuple[int, float]:
            expires_at = bundle.expires_at_of(ns["metadata"])
            if expires_at is not None and expires_at <= now:
                return (0, expires_at)
            return (1, 0.0)

        for ns in sorted(self.namespaces.items(), key=overdue_first):
            self.queue.add(ns["metadata"]["name"])

    def _resync(self) -> None:
        # The safety net: even if an event or a deadline were lost, every namespace is
        # looked at again within one resync period.
        while not self._stopping.wait(self.resync_seconds):
            if self._reconciling.is_set():
                self._enqueue_all()

    def _work(self) -> None:
        # Until every cache has synced, a missing object may only be unseen yet, so no key
        # is taken off the queue before then (client-go's WaitForCacheSync): a key taken
        # early would have to be dropped, and nothing would queue it again.
        while not self.wait_synced(1.0):
            if self._stopping.is_set():
                return
        while True:
            name = self.queue.get()
            if name is None:
                return
            try:
                with self._flight:
                    # Not leading: dropped; start_reconciling queues every namespace again.
                    leading = self._reconciling.is_set()
                    if leading:
                        self._in_flight += 1
                if leading:
                    try:
                        self.reconcile(name)
                    finally:
                        with self._flight:
                            self._in_flight -= 1
                            self._flight.notify_all()
                self._failures.pop(name, None)
            except (NsprovError, KubeError) as exc:
                self._retry_later(name, exc)
            except Exception as exc:
                log.exception("reconcile of namespace=%s crashed", name)
                self._retry_later(name, exc)
            finally:
                self.queue.done(name)

    def _retry_later(self, name: str, exc: Exception) -> None:
        attempts = self._failures.get(name, 0) + 1
        self._failures[name] = attempts
        first, maximum = _RETRY_SECONDS
        delay = max(
            retry_delay(attempts, first=first, maximum=maximum), self._retry_bucket.reserve()
        )
        log.warning("reconcile of namespace=%s failed (%s); again in %.0fs", name, exc, delay)
        self.metrics.reconcile_errors.inc()
        self.queue.add_at(name, self.clock() + delay)

    # ---- reconcile ------------------------------------------------------------------------

    def reconcile(self, name: str) -> None:
        namespace = self.namespaces.get("", name)
        if namespace is None:
            return
        metadata = namespace["metadata"]
        if not bundle.is_managed(metadata, self.selector):
            return  # the cache only holds labelled namespaces; this is a guard, not a path
        if bundle.is_terminating(namespace):
            self._follow_deletion(namespace)
            return
        if metadata.get("uid") in self._deleted:
            return  # our delete is done; the cache has not seen it yet
        expires_at = bundle.expires_at_of(metadata)
        if expires_at is None:
            self._adopt(namespace)
            return
        now = self.clock()
        if now >= expires_at:
            self._expire(namespace, expires_at, now)
            return
        if bundle.owner_of(metadata) is None and not bundle.is_pooled(metadata):
            # Adopted: its objects are whatever the tool that made it left; not ours to repair.
            # (A pooled namespace has no owner either until it is claimed, but nsprov made
            # it: it is repaired like any other, and expires at its pool's maxAge.)
            self.queue.add_at(name, expires_at)
            return
        settled_at = self._added_at.get(metadata["uid"], 0.0) + SETTLE_SECONDS
        if now < settled_at:
            self.queue.add_at(name, settled_at)
            return
        self._ensure_service_account(name)
        template = bundle.template_of(metadata)
        if template is None:
            # Made before templates: its one RoleBinding, nothing added, nothing taken away.
            legacy = bundle.legacy_template(metadata, self.cluster_role)
            self._ensure(bundle.wanted_objects(name, self.selector, legacy)[0], name)
        else:
            wanted = bundle.wanted_objects(name, self.selector, template)
            refused: list[GrantUnusable] = []
            for item in wanted:
                try:
                    self._ensure(item, name)
                except GrantUnusable as exc:  # the bounds are repaired all the same
                    refused.append(exc)
            self._remove_unwanted(name, wanted)
            if refused:
                raise refused[0]  # retried with backoff, until the grant is usable
        self.queue.add_at(name, expires_at)

    def _follow_deletion(self, namespace: dict[str, Any]) -> None:
        """Wake up when a namespace being deleted turns stuck; report it then, once.

        Its events (the namespace controller updates its conditions) and every resync
        bring it back here; the wake-up is at the stuck instant, not a poll.
        """
        metadata = namespace["metadata"]
        if metadata.get("uid") in self._reported_stuck:
            return
        when = deletion.stuck_at(metadata, self.stuck_after_seconds)
        if when is None:
            log.warning("namespace=%s is being deleted since an unreadable deletionTimestamp %r",
                        metadata["name"], metadata.get("deletionTimestamp"))  # fmt: skip
            return
        if self.clock() < when:
            self.queue.add_at(metadata["name"], when)
            return
        self._report_stuck(namespace)

    def _report_stuck(self, namespace: dict[str, Any]) -> None:
        """One Event on the namespace and one log line naming what holds it.

        The Event's name derives from the namespace's UID: a 409 means it was reported
        already (before a restart, or by a former leader), and then it is not logged
        again either. A refused Event (403: an installation without the events Role)
        does not keep the log line back; an unreachable API server does, and the
        reconcile is retried.
        """
        metadata = namespace["metadata"]
        name, uid = metadata["name"], metadata.get("uid", "")
        now = self.clock()
        found = deletion.blockers(namespace)
        event = deletion.stuck_event(namespace, found, now=now, instance=self.instance)
        recorded = "recorded"
        try:
            self.kube.post(deletion.EVENTS_PATH, event)
        except KubeError as exc:
            if exc.status == 409:
                self._reported_stuck.add(uid)
                return
            if exc.status >= 500 or exc.status == 429:
                raise
            recorded = f"refused ({exc.status} {exc.reason})"
        self._reported_stuck.add(uid)
        started = deletion.started_at(metadata) or now
        log.warning(
            "stuck namespace=%s tenant=%s owner=%s deleting_seconds=%.0f deletion_started_at=%s "
            "event=%s blocked_by=%s",
            name, bundle.tenant_of(metadata) or "-", bundle.owner_of(metadata) or "-",
            now - started, metadata.get("deletionTimestamp"), recorded, deletion.describe(found),
        )  # fmt: skip

    def _adopt(self, namespace: dict[str, Any]) -> None:
        """Give a managed namespace without a (valid) expiry one: creation + adopt_seconds."""
        metadata = namespace["metadata"]
        name = metadata["name"]
        created = bundle.created_at_of(metadata)
        if created is None:
            log.warning("namespace=%s has no expiry and no creationTimestamp; leaving it", name)
            return
        expires_at = created + math.ceil(self.adopt_seconds)
        had = (metadata.get("labels") or {}).get(bundle.EXPIRES_AT_LABEL)
        patch = {
            "metadata": {
                # Compare-and-swap: if anyone wrote the namespace since, its next event decides.
                "resourceVersion": metadata.get("resourceVersion"),
                "labels": {bundle.EXPIRES_AT_LABEL: str(expires_at)},
            }
        }
        try:
            self.kube.merge_patch(bundle.namespace_path(name), patch)
        except KubeError as exc:
            if exc.status in (404, 409):
                return
            raise
        self.metrics.repairs.labels(kind="adoption").inc()
        log.info(
            "adopted namespace=%s reason=%s expires_at=%d created_at=%d",
            name, "no-expiry-label" if had is None else "invalid-expiry-label", expires_at, created,
        )  # fmt: skip

    def _expire(self, namespace: dict[str, Any], expires_at: int, now: float) -> None:
        metadata = namespace["metadata"]
        name = metadata["name"]
        try:
            self.kube.delete(
                bundle.namespace_path(name),
                # The version we judged: a namespace extended since is not deleted.
                bundle.delete_exactly(metadata["uid"], metadata.get("resourceVersion")),
            )
        except KubeError as exc:
            if exc.status in (404, 409):  # gone, or changed since: its next event says what now
                return
            raise
        self._deleted.add(metadata["uid"])
        lag = max(0.0, self.clock() - expires_at)
        self.metrics.expiry_lag.observe(lag)
        self.metrics.deletions.labels(reason="expired").inc()
        owner = bundle.owner_of(metadata)
        log.info(
            "deleted namespace=%s owner=%s reason=expired expires_at=%d lag_seconds=%.3f",
            name, owner, expires_at, lag,
            extra={"event": "deleted", "namespace": name, "owner": owner, "reason": "expired",
                   "expires_at": expires_at, "lag_seconds": round(lag, 3)},
        )  # fmt: skip

    def _create(self, path: str, body: dict[str, Any], kind: str, namespace: str) -> None:
        if kind == "resourcequota":
            if not self._create_quota(path, body, namespace):
                return
        elif not self.kube.create(path, body):
            # Exists but not in our cache: either our own create racing the watch, or an
            # object without nsprov's label, which we never touch.
            return
        self.metrics.repairs.labels(kind=kind).inc()
        log.info("repaired namespace=%s kind=%s action=created", namespace, kind)

    def _create_quota(self, path: str, body: dict[str, Any], namespace: str) -> bool:
        """Re-create the ResourceQuota and put it in force at once (bundle.quota_in_force),
        as provisioning does; False when it exists already."""
        try:
            quota = self.kube.post(path, body)
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        self._put_quota_in_force(quota, namespace)
        return True

    def _put_quota_in_force(self, quota: dict[str, Any], namespace: str) -> None:
        """Make a created or replaced quota's limits bind now, not once kube-controller-manager
        has counted them (bundle.quota_in_force), as provisioning does."""
        in_force = bundle.quota_in_force(quota)
        if in_force is None:
            return
        try:
            self.kube.replace(bundle.resource_quota_status_path(namespace), in_force)
        except KubeError as exc:
            if exc.status not in (404, 409):  # gone, or the quota controller was first
                raise

    def _ensure_service_account(self, namespace: str) -> None:
        if self.service_accounts.get(namespace, bundle.SERVICE_ACCOUNT) is not None:
            return
        self._create(
            bundle.service_accounts_path(namespace),
            bundle.service_account(namespace, self.selector),
            "serviceaccount",
            namespace,
        )

    def _ensure(self, wanted: bundle.Wanted, namespace: str) -> None:
        """Create ``wanted`` if it is missing; put it back if it was changed."""
        existing = self._caches[wanted.kind].get(namespace, wanted.name)
        if existing is None:
            self._require_grant(wanted)
            self._create(wanted.collection, wanted.body, wanted.kind, namespace)
            return
        if bundle.is_right(existing, wanted):
            return
        path = f"{wanted.collection}/{wanted.name}"
        if wanted.kind == "rolebinding":
            # roleRef is immutable: a changed binding can only be replaced.
            refusal = self._grant_refusal(wanted) or bind_refusal(
                self.kube, wanted.body["roleRef"]["name"]
            )
            if refusal is not None and self._usable_binding(existing, wanted):
                # The record names a grant this controller cannot bind (a roll-out run as
                # another identity, say): deleting first would leave the job without its
                # grant until someone fixes it. The binding it has stays for now.
                role = existing["roleRef"]["name"]
                raise GrantUnusable(f"keeping RoleBinding {wanted.name} to {role!r}: {refusal}")
            self._delete(path, existing)
            log.info("repaired namespace=%s kind=rolebinding action=deleted-drifted", namespace)
            if refusal is not None:
                raise GrantUnusable(f"not binding it again: {refusal}")
            self._create(wanted.collection, wanted.body, wanted.kind, namespace)
            return
        # Put back in place (never delete and re-create: a job must not have one moment
        # without its quota). The resourceVersion makes it a compare-and-swap.
        body = {**wanted.body, "metadata": {**wanted.body["metadata"],
                                            "resourceVersion": existing["metadata"].get(
                                                "resourceVersion")}}  # fmt: skip
        try:
            replaced = self.kube.replace(path, body)
        except KubeError as exc:
            if exc.status in (404, 409):
                return  # gone or changed since: its event brings it back here
            raise
        if wanted.kind == "resourcequota":
            self._put_quota_in_force(replaced, namespace)
        self.metrics.repairs.labels(kind=wanted.kind).inc()
        log.info("repaired namespace=%s kind=%s action=replaced", namespace, wanted.kind)

    def _require_grant(self, wanted: bundle.Wanted) -> None:
        """GrantUnusable if ``wanted`` binds a ClusterRole nsprov may not hand out now.

        A RoleBinding that exists stays (nsprov cannot take back what a role grants by
        not repairing it), but one that is gone is not made again while its role is
        missing, unreadable or unsafe, as provisioning would not bind it either.
        """
        refusal = self._grant_refusal(wanted)
        if refusal is not None:
            raise GrantUnusable(f"not binding it again: {refusal}")

    def _grant_refusal(self, wanted: bundle.Wanted) -> str | None:
        if wanted.kind != "rolebinding" or self.grants is None:
            return None
        return self.grants.refusal(wanted.body["roleRef"]["name"])

    def _usable_binding(self, existing: dict[str, Any], wanted: bundle.Wanted) -> bool:
        """Whether a drifted binding may stay until its replacement can be made: it binds
        the right subjects to a ClusterRole nsprov would hand out (a binding that lets in
        someone else, or grants an unsafe role, always goes at once)."""
        ref = existing.get("roleRef") or {}
        if existing.get("subjects") != wanted.body["subjects"] or ref.get("kind") != "ClusterRole":
            return False
        return self.grants is not None and self.grants.refusal(str(ref.get("name"))) is None

    def _remove_unwanted(self, namespace: str, wanted: list[bundle.Wanted]) -> None:
        """Delete nsprov's objects the template no longer calls for (a roll-out dropped them).

        Only objects in the caches are considered, and the caches hold only what carries
        nsprov's label; of those, only the names nsprov gives (a few lookups, not a scan
        of thousands of cached objects): nothing else is touched.
        """
        keep = {(w.kind, w.name) for w in wanted}
        for kind, name, collection in bundle.nsprov_object_names(namespace):
            existing = self._caches[kind].get(namespace, name)
            if existing is None or (kind, name) in keep:
                continue
            self._delete(f"{collection}/{name}", existing)
            self.metrics.repairs.labels(kind=kind).inc()
            log.info("repaired namespace=%s kind=%s name=%s action=deleted-unwanted",
                     namespace, kind, name)  # fmt: skip

    def _delete(self, path: str, existing: dict[str, Any]) -> None:
        try:
            self.kube.delete(path, bundle.delete_exactly(existing["metadata"]["uid"]))
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise


def _synced_items(informer: Informer) -> Callable[[], list[dict[str, Any]] | None]:
    """The informer's objects for a scrape, or None until its first list has landed."""
    return lambda: informer.items() if informer.synced.is_set() else None
