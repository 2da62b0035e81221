"""Prometheus metrics, in a registry per service instance (tests run several in one process).

No ``*_created`` series: prometheus_client adds one beside every counter, histogram
and summary child (47 of them here), a timestamp no dashboard or alert reads that
doubles the counters' series. The switch is process-wide in prometheus_client
(``disable_created_metrics``), so importing this module turns it off for every
registry in the process; nsprov has no other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nsprov import __version__
from nsprov.provision import bundle, deletion

disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_ZERO = Decimal(0)


Objects = Callable[[], list[dict[str, Any]] | None]
"""A cache's objects, or None while it has not synced (nothing is then reported)."""


@dataclass
class TenantCounts:
    """What the by-tenant gauges report, counted from the caches in one pass each."""

    live: dict[str, int] = field(default_factory=dict)
    """Live (not terminating) managed namespaces by tenant ('' without one)."""
    used: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    """(tenant, resource) -> the sum of the tenant's live namespaces' quota status.used."""
    hard: dict[tuple[str, str], Decimal] = field(default_factory=dict)


def count_by_tenant(
    namespaces: list[dict[str, Any]],
    quotas: list[dict[str, Any]] | None,
    selector: bundle.Selector,
) -> TenantCounts:
    """Live namespaces per tenant and, with ``quotas``, their quotas summed per tenant.

    A quota counts when it is nsprov's (name and label) and its namespace is live and
    managed: the namespace's tenant annotation names the tenant. Quantities are added
    exactly (as Decimals) and parsed once per distinct text, so thousands of quotas
    holding the same few limits cost a dictionary lookup each.
    """
    counts = TenantCounts()
    tenant_of: dict[str, str] = {}
    for namespace in namespaces:
        if bundle.is_terminating(namespace):
            continue
        metadata = namespace["metadata"]
        if bundle.is_pooled(metadata):
            continue  # no tenant's yet: nsprov_pool_ready counts it
        tenant = bundle.tenant_of(metadata) or ""
        tenant_of[metadata["name"]] = tenant
        counts.live[tenant] = counts.live.get(tenant, 0) + 1
    for quota in quotas or ():
        owning = tenant_of.get(quota.get("metadata", {}).get("namespace", ""))
        if owning is None or not bundle.is_nsprov_quota(quota, selector):
            continue
        hard, used = bundle.quota_usage(quota)
        _add(counts.hard, owning, hard)
        _add(counts.used, owning, used)
    return counts


def _add(sums: dict[tuple[str, str], Decimal], tenant: str, quantities: dict[str, str]) -> None:
    for resource, text in quantities.items():
        value = bundle.quantity(text)
        if value is not None:
            key = (tenant, resource)
            sums[key] = sums.get(key, _ZERO) + value


class _ByTenant(Collector):
    """Live namespaces and quota usage by tenant, counted at scrape time from the caches.

    Tenants are few and named by the operator; owners never become a label (there is
    one per repository or branch, without bound). The live count always has the ''
    series, so a sum over tenants is 0, not empty, when nothing is live.
    """

    def __init__(self, namespaces: Objects, quotas: Objects, selector: bundle.Selector) -> None:
        self._namespaces = namespaces
        self._quotas = quotas
        self._selector = selector

    def collect(self) -> Iterator[GaugeMetricFamily]:
        namespaces = self._namespaces()
        if namespaces is None:
            return
        quotas = self._quotas()
        counts = count_by_tenant(namespaces, quotas, self._selector)
        live = GaugeMetricFamily(
            "nsprov_live_namespaces",
            "Namespaces nsprov manages that exist now (not terminating), by tenant ('' without)",
            labels=["tenant"],
        )
        for tenant, count in sorted({"": 0, **counts.live}.items()):
            live.add_metric([tenant], count)
        yield live
        if quotas is None:
            return
        for name, sums, what in (
            ("nsprov_tenant_quota_used", counts.used, "used"),
            ("nsprov_tenant_quota_hard", counts.hard, "hard"),
        ):
            family = GaugeMetricFamily(
                name,
                f"The sum of status.{what} of the ResourceQuotas of a tenant's live namespaces, "
                "by resource, in base units (cores, bytes, objects)",
                labels=["tenant", "resource"],
            )
            for (tenant, resource), value in sorted(sums.items()):
                family.add_metric([tenant, resource], float(value))
            yield family


class _Terminating(Collector):
    """Namespaces being deleted, by tenant and whether they are stuck, at scrape time.

    Counted from the cache on every replica (not only the leader, which reports each
    stuck namespace once with an Event and a log line); ``deletion.is_stuck`` is the
    rule both use. Every tenant with a namespace, live or going, has both series (and
    '' always does), so an alert on ``stuck="true"`` sees 0, not nothing, when all is
    well.
    """

    def __init__(self, namespaces: Objects, stuck_after: float, clock: Callable[[], float]) -> None:
        self._namespaces = namespaces
        self._stuck_after = stuck_after
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        namespaces = self._namespaces()
        if namespaces is None:
            return
        now = self._clock()
        counts: dict[tuple[str, str], int] = {}
        for namespace in namespaces:
            tenant = bundle.tenant_of(namespace["metadata"]) or ""
            for stuck in ("false", "true"):
                counts.setdefault((tenant, stuck), 0)
            if bundle.is_terminating(namespace):
                stuck = "true" if deletion.is_stuck(namespace, now, self._stuck_after) else "false"
                counts[(tenant, stuck)] += 1
        family = GaugeMetricFamily(
            "nsprov_namespaces_terminating",
            "Namespaces nsprov manages whose deletion has begun and that still exist, by tenant "
            "('' without) and stuck (true: still there --stuck-after after deletion began)",
            labels=["tenant", "stuck"],
        )
        for (tenant, stuck), count in sorted({("", "false"): 0, ("", "true"): 0, **counts}.items()):
            family.add_metric([tenant, stuck], count)
        yield family


def most_overdue_seconds(namespaces: list[dict[str, Any]], now: float) -> float:
    """Seconds since the expiry of the managed namespace longest past it whose deletion has
    not begun; 0 when none is overdue.

    A namespace whose deletion has begun is not overdue here: nsprov did its part, and
    what holds it is ``nsprov_namespaces_terminating``'s to report.
    """
    most = 0.0
    for namespace in namespaces:
        if bundle.is_terminating(namespace):
            continue
        expires_at = bundle.expires_at_of(namespace["metadata"])
        if expires_at is not None and now - expires_at > most:
            most = now - expires_at
    return most


class _Overdue(Collector):
    """The expiry lag of namespaces not yet deleted, at scrape time.

    ``nsprov_expiry_lag_seconds`` (the histogram) is observed when a deletion is made,
    so a controller that has stopped deleting (no leader, a lost RBAC verb, a stuck
    worker) observes nothing and looks healthy there. This gauge grows with every
    second an expired namespace stays, from the caches every replica keeps, so an
    alert on it fires however the controller failed.
    """

    def __init__(self, namespaces: Objects, clock: Callable[[], float]) -> None:
        self._namespaces = namespaces
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        namespaces = self._namespaces()
        if namespaces is None:
            return
        yield GaugeMetricFamily(
            "nsprov_expiry_overdue_seconds",
            "Seconds the managed namespace longest past its expiry has been left undeleted "
            "(its deletion not begun); 0 when none is overdue",
            value=most_overdue_seconds(namespaces, self._clock()),
        )


class _PoolReady(Collector):
    """Ready pooled namespaces by the tenant they wait for, at scrape time from the cache.

    Every replica counts (the keeper runs on the leader, claims happen everywhere); every
    tenant with a pooled namespace, ready or being made, has a series, so an empty pool
    reads 0, not nothing.
    """

    def __init__(self, namespaces: Objects) -> None:
        self._namespaces = namespaces

    def collect(self) -> Iterator[GaugeMetricFamily]:
        namespaces = self._namespaces()
        if namespaces is None:
            return
        counts: dict[str, int] = {}
        for namespace in namespaces:
            metadata = namespace["metadata"]
            if not bundle.is_pooled(metadata) or bundle.is_terminating(namespace):
                continue
            tenant = bundle.pool_tenant_of(metadata) or ""
            counts[tenant] = counts.get(tenant, 0) + (1 if bundle.is_pool_ready(metadata) else 0)
        family = GaugeMetricFamily(
            "nsprov_pool_ready",
            "Pooled namespaces ready to be claimed, by the tenant they wait for ('' without)",
            labels=["tenant"],
        )
        for tenant, count in sorted(counts.items()):
            family.add_metric([tenant], count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_* (CPU, memory, open files, start time) of this process, as any exporter.
        ProcessCollector(registry=self.registry)
        build = Info("nsprov_build", "The nsprov release this process runs", registry=self.registry)
        build.info({"version": __version__})
        self.requests = Counter(
            "nsprov_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nsprov_http_request_duration_seconds",
            "HTTP request latency by route and method",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.connections_cut = Counter(
            "nsprov_http_connections_cut",
            "Connections nsprov closed before a request reached the API, by reason "
            "(head_timeout, body_timeout: 408; head_too_large: 431; body_too_large: 413; "
            "malformed: 400; too_many_connections: closed at accept)",
            ["reason"],
            registry=self.registry,
        )
        self.requests_in_flight = Gauge(
            "nsprov_http_requests_in_flight",
            "API requests being handled now (the in-flight limit's count)",
            registry=self.registry,
        )
        self.requests_shed = Counter(
            "nsprov_http_requests_shed",
            "API requests answered 503 + Retry-After because --max-requests-in-flight were "
            "being handled",
            registry=self.registry,
        )
        self.provision_duration = Histogram(
            "nsprov_provision_duration_seconds",
            "Time to provision a namespace (namespace, serviceaccount, binding, token)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.provisioned = Counter(
            "nsprov_namespaces_provisioned",
            # By tenant: tenants are few and named by the operator. Owners are not a label:
            # with OIDC there is one per repository or branch, without bound.
            "Namespaces provisioned, by tenant ('' without a policy file)",
            ["tenant"],
            registry=self.registry,
        )
        self.refused_by_cap = Counter(
            "nsprov_namespaces_refused",
            "Creates refused (429) by a cap, by tenant and cap (owner, tenant, total)",
            ["tenant", "cap"],
            registry=self.registry,
        )
        self.cap_rollbacks = Counter(
            "nsprov_cap_rollbacks",
            "Namespaces created and then deleted because a concurrent create won the cap",
            registry=self.registry,
        )
        self.first_call_wait = Histogram(
            "nsprov_first_call_wait_seconds",
            "Time a create waited for the API server's authorizer to allow the new "
            "ServiceAccount its grant (SubjectAccessReviews; pooled namespaces wait when made)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_call_unready = Counter(
            "nsprov_first_call_unready",
            "Kubeconfigs handed out though the authorizer did not yet allow their grant "
            "within the first-call deadline (or nsprov could not ask)",
            registry=self.registry,
        )
        self.pool_claims = Counter(
            "nsprov_pool_claims",
            "POSTs of a pooled profile, by tenant and result (hit: a ready namespace was "
            "claimed; miss: none was, the namespace was made as without a pool)",
            ["tenant", "result"],
            registry=self.registry,
        )
        self.pool_tokens = Counter(
            "nsprov_pool_tokens",
            "Pooled namespaces' claims by where their token came from (ahead: minted before "
            "the claim, in the background; alongside: minted with the claim's write)",
            ["minted"],
            registry=self.registry,
        )
        self.pool_tokens_held = Gauge(
            "nsprov_pool_tokens_held",
            "Tokens this replica holds, minted ahead for ready pooled namespaces",
            registry=self.registry,
        )
        self.pool_made = Counter(
            "nsprov_pool_made",
            "Pooled namespaces made ready by the leader's pool keeper, by tenant",
            ["tenant"],
            registry=self.registry,
        )
        self.pool_discarded = Counter(
            "nsprov_pool_discarded",
            "Pooled namespaces deleted unclaimed, by reason (stale: its profile changed; "
            "abandoned: left half-made)",
            ["reason"],
            registry=self.registry,
        )
        self.provision_failures = Counter(
            "nsprov_provision_failures",
            "Provisioning attempts that failed and were rolled back",
            registry=self.registry,
        )

        self.expiry_lag = Histogram(
            "nsprov_expiry_lag_seconds",
            "Time from a namespace's expiry instant until the API server accepted its deletion",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.deletions = Counter(
            "nsprov_namespace_deletions",
            "Namespaces deleted, by reason (expired, request)",
            ["reason"],
            registry=self.registry,
        )
        self.repairs = Counter(
            "nsprov_repairs",
            "Objects the controller recreated or replaced, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "nsprov_reconcile_errors", "Reconciles that failed and were retried",
            registry=self.registry,
        )  # fmt: skip
        self.watch_restarts = Counter(
            "nsprov_watch_restarts",
            "Watches restarted, by resource and reason (expired, error)",
            ["resource", "reason"],
            registry=self.registry,
        )
        self.token_file_errors = Counter(
            "nsprov_token_file_errors",
            "Token file versions that could not be used, by reason (malformed, unreadable, "
            "missing: its tokens revoked)",
            ["reason"],
            registry=self.registry,
        )
        self.foreign_objects = Counter(
            "nsprov_foreign_objects_ignored",
            "Objects carrying nsprov's label outside the namespaces it manages, dropped on "
            "arrival (each list or watch event that brought one), by kind",
            ["kind"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "nsprov_queue_depth", "Namespaces waiting to be reconciled", registry=self.registry
        )
        self.policy_reloads = Counter(
            "nsprov_policy_reloads",
            "Policy file loads, by result (success, error: the last good policy stays)",
            ["result"],
            registry=self.registry,
        )
        # Made at the first load: without a policy file there is nothing to be in force,
        # and a 0 there would read as a refused policy (and fire NsprovPolicyRefused).
        self.policy_reload_ok: Gauge | None = None
        self.leader = Gauge(
            "nsprov_leader", "1 while this replica's controller leads", registry=self.registry
        )
        self.leader_election_errors = Counter(
            "nsprov_leader_election_errors",
            "Lease calls that failed, by reason (forbidden, not_found, unauthorized, rejected, "
            "unavailable, unexpected)",
            ["reason"],
            registry=self.registry,
        )
        self.grant_usable = Gauge(
            "nsprov_grant_usable",
            "1 while the grant ClusterRole is readable and safe (else POST and PATCH answer 503)",
            registry=self.registry,
        )

    def policy_reloaded(self, ok: bool) -> None:
        """Count a policy file (re)load and record whether the file in place now is in force."""
        self.policy_reloads.labels(result="success" if ok else "error").inc()
        if self.policy_reload_ok is None:
            self.policy_reload_ok = Gauge(
                "nsprov_policy_last_reload_successful",
                "1 if the policy file as it is now is in force, 0 if it failed to load "
                "(absent without --policy-file)",
                registry=self.registry,
            )
        self.policy_reload_ok.set(1 if ok else 0)

    def foreign_object_ignored(self, kind: str) -> None:
        self.foreign_objects.labels(kind=kind).inc()

    def watch_restarts_for(self, resource: str, reason: str) -> None:
        self.watch_restarts.labels(resource=resource, reason=reason).inc()

    def count_by_tenant_with(
        self, namespaces: Objects, quotas: Objects, selector: bundle.Selector
    ) -> None:
        """Report live namespaces and quota usage by tenant from these caches at each scrape."""
        self.registry.register(_ByTenant(namespaces, quotas, selector))

    def count_pool_with(self, namespaces: Objects) -> None:
        """Report ready pooled namespaces by tenant from this cache at each scrape."""
        self.registry.register(_PoolReady(namespaces))

    def count_terminating_with(
        self, namespaces: Objects, stuck_after: float, clock: Callable[[], float]
    ) -> None:
        """Report namespaces being deleted, stuck or not, from this cache at each scrape."""
        self.registry.register(_Terminating(namespaces, stuck_after, clock))

    def report_overdue_with(self, namespaces: Objects, clock: Callable[[], float]) -> None:
        """Report at each scrape how long the most overdue namespace in this cache has been
        left past its expiry (``clock``: unix seconds, as expiry labels are)."""
        self.registry.register(_Overdue(namespaces, clock))
