"""The by-tenant gauges, counted at scrape time from synthetic informer caches."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import generate_latest

from nsprov.provision import bundle
from nsprov.provision.metrics import Metrics, count_by_tenant

SELECTOR = bundle.Selector.parse("controller.observatorium.io=namespace-provisioner")
LABELS = {SELECTOR.key: SELECTOR.value}


def _namespace(name: str, tenant: str | None, *, terminating: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(LABELS), "annotations": {}}
    if tenant is not None:
        metadata["annotations"][bundle.TENANT_ANNOTATION] = tenant
    if terminating:
        metadata["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return {"metadata": metadata}


def _quota(
    namespace: str,
    hard: dict[str, str],
    used: dict[str, str] | None = None,
    *,
    name: str = bundle.BOUNDS_NAME,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    quota: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or LABELS)},
        "spec": {"hard": dict(hard)},
    }
    if used is not None:  # the quota controller has seen it
        quota["status"] = {"hard": dict(hard), "used": dict(used)}
    return quota


def _samples(metrics: Metrics, name: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(sample.labels.values()): sample.value
        for family in metrics.registry.collect()
        if family.name == name
        for sample in family.samples
    }


def _registered(
    namespaces: list[dict[str, Any]] | None, quotas: list[dict[str, Any]] | None
) -> Metrics:
    metrics = Metrics()
    metrics.count_by_tenant_with(lambda: namespaces, lambda: quotas, SELECTOR)
    return metrics


def test_live_namespaces_by_tenant_leave_out_terminating_ones() -> None:
    metrics = _registered(
        [
            _namespace("np-a", "web"),
            _namespace("np-b", "web"),
            _namespace("np-c", "web", terminating=True),
            _namespace("np-d", "batch"),
            _namespace("np-e", None),
        ],
        [],
    )
    assert _samples(metrics, "nsprov_live_namespaces") == {
        ("",): 1.0,
        ("batch",): 1.0,
        ("web",): 2.0,
    }


def test_the_untenanted_series_is_there_when_nothing_is_live() -> None:
    metrics = _registered([_namespace("np-a", "web", terminating=True)], [])
    assert _samples(metrics, "nsprov_live_namespaces") == {("",): 0.0}
    text = generate_latest(metrics.registry).decode()
    assert 'nsprov_live_namespaces{tenant=""} 0.0' in text


def test_quotas_add_up_per_tenant_in_base_units() -> None:
    namespaces = [
        _namespace("np-a", "web"),
        _namespace("np-b", "web"),
        _namespace("np-c", "batch"),
        _namespace("np-gone", "web", terminating=True),
    ]
    quotas = [
        _quota("np-a", {"requests.cpu": "500m", "requests.memory": "512Mi", "pods": "3"},
               {"requests.cpu": "250m", "requests.memory": "128Mi", "pods": "1"}),
        _quota("np-b", {"requests.cpu": "1", "requests.memory": "1Gi", "pods": "3"},
               {"requests.cpu": "0", "requests.memory": "0", "pods": "2"}),
        _quota("np-c", {"configmaps": "10"}, {"configmaps": "4"}),
        # None of these count: a terminating namespace's, another name, no nsprov label,
        # a namespace nsprov does not manage.
        _quota("np-gone", {"pods": "100"}, {"pods": "100"}),
        _quota("np-a", {"pods": "100"}, {"pods": "100"}, name="someone-elses"),
        _quota("np-b", {"pods": "100"}, {"pods": "100"}, labels={"team": "x"}),
        _quota("kube-system", {"pods": "100"}, {"pods": "100"}),
    ]  # fmt: skip
    metrics = _registered(namespaces, quotas)
    assert _samples(metrics, "nsprov_tenant_quota_hard") == {
        ("batch", "configmaps"): 10.0,
        ("web", "pods"): 6.0,
        ("web", "requests.cpu"): 1.5,
        ("web", "requests.memory"): float(1536 * 2**20),
    }
    assert _samples(metrics, "nsprov_tenant_quota_used") == {
        ("batch", "configmaps"): 4.0,
        ("web", "pods"): 3.0,
        ("web", "requests.cpu"): 0.25,
        ("web", "requests.memory"): float(128 * 2**20),
    }
    text = generate_latest(metrics.registry).decode()
    assert 'nsprov_tenant_quota_used{resource="pods",tenant="web"} 3.0' in text


def test_a_quota_the_controller_has_not_counted_yet_shows_its_limits_and_no_usage() -> None:
    counts = count_by_tenant(
        [_namespace("np-a", "web")], [_quota("np-a", {"pods": "3"}, None)], SELECTOR
    )
    assert counts.hard == {("web", "pods"): 3}
    assert counts.used == {}


def test_an_unparsable_quantity_is_skipped_not_fatal() -> None:
    counts = count_by_tenant(
        [_namespace("np-a", "web")],
        [_quota("np-a", {"pods": "lots", "configmaps": "2"}, {"pods": "1e", "configmaps": "1"})],
        SELECTOR,
    )
    assert counts.hard == {("web", "configmaps"): 2}
    assert counts.used == {("web", "configmaps"): 1}


def test_nothing_is_reported_before_the_caches_have_synced() -> None:
    metrics = _registered(None, None)
    assert _samples(metrics, "nsprov_live_namespaces") == {}
    # Namespaces synced, quotas not yet: the live count only.
    metrics = _registered([_namespace("np-a", "web")], None)
    assert _samples(metrics, "nsprov_live_namespaces") == {("",): 0.0, ("web",): 1.0}
    assert _samples(metrics, "nsprov_tenant_quota_used") == {}
    assert "nsprov_tenant_quota_hard" not in generate_latest(metrics.registry).decode()


def test_five_thousand_namespaces_scrape_well_under_a_second() -> None:
    tenants = [f"team-{i}" for i in range(20)]
    namespaces, quotas = [], []
    for i in range(5000):
        name, tenant = f"np-{i:05d}", tenants[i % len(tenants)]
        namespaces.append(_namespace(name, tenant))
        quotas.append(
            _quota(
                name,
                {"pods": "20", "requests.cpu": "4", "requests.memory": "8Gi", "configmaps": "50"},
                {"pods": str(i % 7), "requests.cpu": f"{i % 9}00m",
                 "requests.memory": f"{i % 5}Gi", "configmaps": str(1 + i % 3)},
            )
        )  # fmt: skip
    metrics = _registered(namespaces, quotas)
    started = time.perf_counter()
    text = generate_latest(metrics.registry).decode()
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"a scrape of 5,000 namespaces took {elapsed:.3f}s"
    assert 'nsprov_live_namespaces{tenant="team-0"} 250.0' in text
    assert 'nsprov_tenant_quota_hard{resource="pods",tenant="team-0"} 5000.0' in text
    assert _samples(metrics, "nsprov_tenant_quota_hard")[("team-3", "requests.memory")] == float(
        250 * 8 * 2**30
    )


# ---- what every registry exposes ------------------------------------------------------------


def _exposed(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_no_created_series_even_for_counters_and_histograms_with_samples() -> None:
    metrics = Metrics()
    metrics.requests.labels("/api/v1/namespaces", "POST", "201").inc()
    metrics.provision_duration.observe(0.2)
    text = _exposed(metrics)
    assert "nsprov_http_requests_total{" in text  # the counter is there ...
    assert "_created" not in text  # ... without its creation timestamp


def test_process_series_and_build_info_with_the_version() -> None:
    from nsprov import __version__

    metrics = Metrics()
    samples = _samples(metrics, "nsprov_build")
    assert samples == {(__version__,): 1.0}
    assert f'nsprov_build_info{{version="{__version__}"}} 1.0' in _exposed(metrics)
    [start] = _samples(metrics, "process_start_time_seconds").values()
    assert 0 < time.time() - start < 86400 * 365
    [resident] = _samples(metrics, "process_resident_memory_bytes").values()
    assert resident > 1_000_000


def _expiring(name: str, expires_at: float, *, terminating: bool = False) -> dict[str, Any]:
    namespace = _namespace(name, None, terminating=terminating)
    namespace["metadata"]["labels"][bundle.EXPIRES_AT_LABEL] = str(int(expires_at))
    return namespace


def test_overdue_is_the_oldest_expired_namespace_not_yet_being_deleted() -> None:
    now = 1_800_000_000.0
    namespaces = [
        _expiring("np-future", now + 60),
        _expiring("np-late", now - 30),
        _expiring("np-later", now - 90),
        _expiring("np-deleting", now - 600, terminating=True),  # nsprov did its part
        _namespace("np-unlabelled", None),  # adoption gives it an expiry
    ]
    metrics = Metrics()
    metrics.report_overdue_with(lambda: namespaces, lambda: now)
    assert _samples(metrics, "nsprov_expiry_overdue_seconds") == {(): 90.0}


def test_overdue_is_zero_when_nothing_is_late_and_absent_before_the_cache_syncs() -> None:
    now = 1_800_000_000.0
    synced: list[dict[str, Any]] | None = None
    metrics = Metrics()
    metrics.report_overdue_with(lambda: synced, lambda: now)
    assert _samples(metrics, "nsprov_expiry_overdue_seconds") == {}
    synced = [_expiring("np-future", now + 60)]
    assert _samples(metrics, "nsprov_expiry_overdue_seconds") == {(): 0.0}


def test_policy_gauge_appears_with_the_first_load_of_a_policy_file() -> None:
    metrics = Metrics()
    assert "nsprov_policy_last_reload_successful" not in _exposed(metrics)
    metrics.policy_reloaded(False)
    assert _samples(metrics, "nsprov_policy_last_reload_successful") == {(): 0.0}
    metrics.policy_reloaded(True)
    assert _samples(metrics, "nsprov_policy_last_reload_successful") == {(): 1.0}
