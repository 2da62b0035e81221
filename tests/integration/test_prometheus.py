"""A real Prometheus scrapes a running nsprov and evaluates k8s/monitoring against it.

Debian's Prometheus binary runs on a loopback port with its data in tmp_path,
scraping nsprov's internal listener every second and loading the PrometheusRule's
rules. Every dashboard query and every alert expression then goes through
Prometheus' query API (it must parse there, not only in promtool), and every metric
name in them must be one nsprov's /metrics declares: a renamed metric breaks this
test rather than a dashboard nobody looks at until an outage. On a healthy nsprov no
alert may be pending or firing.

nsprov runs with ``--log-format=json`` here, so the JSON lines of a real process
(uvicorn's, the controller's, the access log) are checked too.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from nsprov import __version__
from tests.cluster.controlplane import free_port
from tests.integration.conftest import CONFIGMAP_GRANT, SELECTOR, Cluster
from tests.integration.service import RunningService, running_service
from tests.monitoring.monitoring import (
    alerts,
    dashboard_queries,
    metric_names,
    tool,
    write_rule_file,
)
from tests.support import wait_until

POLICY = f"""
tenants:
  - name: team-a
    match: {{token: alice}}
    clusterRole: {CONFIGMAP_GRANT}
    template:
      resourceQuota: {{hard: {{pods: "3", configmaps: "10"}}}}
"""

SELECTOR_KEY, SELECTOR_VALUE = SELECTOR.split("=")


@dataclass
class Prometheus:
    url: str
    log_path: Path

    def query(self, expr: str) -> dict[str, Any]:
        """The query API's answer (instant, now); a parse error is its 400, returned."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body: dict[str, Any] = response.json()
        return body

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def service(
    cluster: Cluster, grants: None, clean_namespaces: None, tmp_path: Path
) -> Iterator[RunningService]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    args = [f"--policy-file={policy}", "--log-format=json"]
    with running_service(cluster.kubeconfig, tmp_path / "nsprov", args) as running:
        yield running


def _rule_states(prometheus: Prometheus) -> dict[str, str]:
    groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    return {rule["name"]: rule["state"] for group in groups for rule in group["rules"]}


@pytest.fixture
def prometheus(service: RunningService, tmp_path: Path) -> Iterator[Prometheus]:
    with scraping(service, tmp_path) as running:
        yield running


@contextlib.contextmanager
def scraping(service: RunningService, tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus on a loopback port, scraping ``service`` every second, with the rules."""
    binary = tool("prometheus")
    rules = write_rule_file(tmp_path)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                # The job a ServiceMonitor on the nsprov-metrics Service gets.
                "job_name": "nsprov-metrics",
                "static_configs": [{"targets": [service.internal_url.removeprefix("http://")]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = Prometheus(f"http://127.0.0.1:{port}", log_path)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited {process.returncode}:\n{running.log()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{running.url}/-/ready", timeout=2).status_code == 200
            return False

        wait_until(ready, timeout=30, message="prometheus /-/ready")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _declared_names(service: RunningService) -> set[str]:
    """The series names nsprov's /metrics declares (``# TYPE``), a histogram's three each.

    From the TYPE lines rather than the samples: a labelled counter nothing has
    counted yet (no refusal so far) is declared without a sample, and a query of it
    is still right.
    """
    text = httpx.get(f"{service.internal_url}/metrics", timeout=5).text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            suffixes = {
                "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("", "_sum", "_count"),
            }.get(kind, ("",))
            names.update(name + suffix for suffix in suffixes)
    return names


def _provision(service: RunningService) -> str:
    with service.client() as http:
        response = http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=service.auth())
    assert response.status_code == 201, response.text
    return response.headers["X-Namespace"]


def _value(prometheus: Prometheus, expr: str) -> list[dict[str, Any]]:
    answer = prometheus.query(expr)
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_prometheus_scrapes_nsprov_and_every_query_and_alert_holds(
    service: RunningService, prometheus: Prometheus
) -> None:
    _provision(service)
    # A scrape after the create: the counters, the histogram and the tenant's gauges
    # then have samples (the live gauge counts the namespace once the watch saw it).
    wait_until(
        lambda: _value(prometheus, 'max by (tenant) (nsprov_live_namespaces{tenant="team-a"})'),
        timeout=30,
        message="team-a's live namespace in Prometheus",
    )
    [build] = _value(prometheus, "nsprov_build_info")
    assert build["metric"]["version"] == __version__
    assert build["metric"]["job"] == "nsprov-metrics"
    assert _value(prometheus, "process_resident_memory_bytes")
    assert not _value(prometheus, '{__name__=~".+_created", job="nsprov-metrics"}')

    declared = _declared_names(service)
    expressions = [(f"alert {a['alert']}", a["expr"]) for a in alerts()]
    expressions += [(f"panel {title}", query) for title, query in dashboard_queries()]
    for where, expr in expressions:
        _value(prometheus, expr)  # parses, and evaluates, in Prometheus itself
        unknown = metric_names(expr) - declared
        assert not unknown, f"{where} names what nsprov does not expose: {sorted(unknown)}"

    # Data, not only syntax: the dashboard's live count and create rate see the create.
    [live] = _value(prometheus, 'max by (tenant) (nsprov_live_namespaces{tenant="team-a"})')
    assert float(live["value"][1]) == 1
    wait_until(
        lambda: _value(prometheus, "sum by (tenant) (nsprov_namespaces_provisioned_total) > 0"),
        timeout=10,
        message="the create counted in Prometheus",
    )

    # The rules as Prometheus loaded them: each evaluated without error, none active.
    def evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if any(rule["lastEvaluation"].startswith("0001-") for rule in rules):
            return None
        return rules

    rules = wait_until(evaluated, timeout=15, message="every rule evaluated")
    assert {rule["name"] for rule in rules} == {a["alert"] for a in alerts()}
    for rule in rules:
        assert rule["health"] == "ok", rule

    def active() -> list[str]:
        return [rule["name"] for rule in evaluated() or rules if rule["state"] != "inactive"]

    # Before the first scrape, absent(nsprov_leader) held: an evaluation later it may not.
    wait_until(lambda: not active(), timeout=15, message="no alert active")
    assert not active(), f"alerts active on a healthy nsprov: {active()}"


def test_json_logs_of_a_real_process_are_one_object_a_line(service: RunningService) -> None:
    # The list also shows an earlier test's namespace while it is being deleted.
    name = _provision(service)
    with service.client() as http:
        listed = http.get("/api/v1/namespaces", headers=service.auth()).json()["items"]
        assert name in [item["name"] for item in listed]
        deleted = http.delete(f"/api/v1/namespaces/{name}", headers=service.auth())
    assert deleted.status_code == 202, deleted.text
    wait_until(
        lambda: '"DELETE"' in service.log(), timeout=10, message="the access line of the delete"
    )
    entries = []
    for line in service.log().splitlines():
        entry = json.loads(line)  # every line, uvicorn's included
        assert {"time", "level", "logger", "message", "request_id"} <= entry.keys(), line
        entries.append(entry)
    accessed = [e for e in entries if e["logger"] == "nsprov.access"]
    assert [(e["method"], e["route"], e["status"]) for e in accessed] == [
        ("POST", "/api/v1/namespaces", 201),
        ("GET", "/api/v1/namespaces", 200),
        ("DELETE", "/api/v1/namespaces/{name}", 202),
    ]
    access = accessed[0]
    assert (access["owner"], access["tenant"]) == ("alice", "team-a")
    assert access["request_id"] != "-"
    # The namespace's life as fields, in the lines of the requests that made and ended it.
    events = {entry["event"]: entry for entry in entries if entry.get("namespace") == name}
    assert events.keys() == {"provisioned", "deleted"}
    made, gone = events["provisioned"], events["deleted"]
    assert (made["owner"], made["tenant"]) == ("alice", "team-a")
    assert made["request_id"] == access["request_id"]
    assert isinstance(made["expires_at"], int)
    assert (gone["owner"], gone["reason"]) == ("alice", "request")


def test_a_stalled_controller_trips_the_leader_and_expiry_alerts(
    cluster: Cluster, grants: None, clean_namespaces: None, tmp_path: Path
) -> None:
    """Another holder keeps the Lease, so nsprov never leads, and a namespace expired ten
    minutes ago stays: the rules' conditions hold in Prometheus (the alerts go pending;
    their ``for`` is longer than a test should wait, and promtool covers the firing)."""
    coordination = client.CoordinationV1Api(cluster.api)
    core = client.CoreV1Api(cluster.api)
    lease = f"nsprov-stalled-{secrets.token_hex(4)}"
    coordination.create_namespaced_lease(
        "default",
        client.V1Lease(
            metadata=client.V1ObjectMeta(name=lease),
            spec=client.V1LeaseSpec(
                holder_identity="someone-else",
                lease_duration_seconds=3600,
                acquire_time=datetime.now(UTC),
                renew_time=datetime.now(UTC),
            ),
        ),
    )
    expired = f"np-overdue-{secrets.token_hex(4)}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=expired,
                labels={
                    SELECTOR_KEY: SELECTOR_VALUE,
                    # Past NsprovExpiryOverdue's 5 minutes.
                    "nsprov.io/expires-at": str(int(time.time()) - 600),
                },
            )
        )
    )
    args = [f"--leader-elect-lease-name={lease}"]
    try:
        with (
            running_service(cluster.kubeconfig, tmp_path / "nsprov", args) as service,
            scraping(service, tmp_path) as prometheus,
        ):
            [overdue] = wait_until(
                lambda: _value(prometheus, "max by (job) (nsprov_expiry_overdue_seconds) > 0"),
                timeout=30,
                message="the overdue namespace in Prometheus",
            )
            assert 600 <= float(overdue["value"][1]) < 900
            assert _value(prometheus, "sum by (job) (nsprov_leader) < 1")
            wanted = {"NsprovNoLeader": "pending", "NsprovExpiryOverdue": "pending"}
            seen: list[dict[str, str]] = []

            def pending() -> dict[str, str] | None:
                seen.append(_rule_states(prometheus))
                return seen[-1] if wanted.items() <= seen[-1].items() else None

            try:
                states = wait_until(pending, timeout=15, message="the two alerts pending")
            except AssertionError:
                raise AssertionError(f"rule states: {seen[-1]}") from None
            others = {name: state for name, state in states.items() if name not in wanted}
            assert set(others.values()) == {"inactive"}, others
            assert core.read_namespace(expired).metadata.deletion_timestamp is None
    finally:
        coordination.delete_namespaced_lease(lease, "default")
