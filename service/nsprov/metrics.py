"""Prometheus metrics, in a registry per service instance (tests run several in one process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _LiveNamespaces(Collector):
    """Counts live managed namespaces at scrape time, from whatever source can count them."""

    def __init__(self, count: Callable[[], int | None]) -> None:
        self._count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value = self._count()
        if value is not None:
            yield GaugeMetricFamily(
                "nsprov_live_namespaces", "Namespaces nsprov manages that exist now", value=value
            )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.queue_depth = Gauge(
            "nsprov_queue_depth", "Namespaces waiting to be reconciled", registry=self.registry
        )
        self.policy_reloads = Counter(
            "nsprov_policy_reloads",
            "Policy file loads, by result (success, error: the last good policy stays)",
            ["result"],
            registry=self.registry,
        )
        self.policy_reload_ok = Gauge(
            "nsprov_policy_last_reload_successful",
            "1 if the policy file as it is now is in force, 0 if it failed to load",
            registry=self.registry,
        )
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
        self.policy_reload_ok.set(1 if ok else 0)

    def watch_restarts_for(self, resource: str, reason: str) -> None:
        self.watch_restarts.labels(resource=resource, reason=reason).inc()

    def count_live_namespaces_with(self, count: Callable[[], int | None]) -> None:
        self.registry.register(_LiveNamespaces(count))
