"""k8s/monitoring checked offline: promtool on the alerts and the dashboard's queries, the
runbook links, and the component rendered onto k8s/ by kustomize."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import build
from tests.monitoring.monitoring import (
    MONITORING,
    REPO,
    RULES_TEST,
    alerts,
    dashboard,
    dashboard_queries,
    tool,
    write_rule_file,
)

RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_URL = "https://github.com/nsprov/nsprov/blob/main/docs/runbooks.md#"
ALERTS = {
    "NsprovNoLeader",
    "NsprovExpiryOverdue",
    "NsprovExpiryLagHigh",
    "NsprovProvisioningErrors",
    "NsprovGrantUnusable",
    "NsprovPolicyRefused",
    "NsprovNamespacesStuckTerminating",
}


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_unit_tests_of_the_alerts_pass(tmp_path: Path) -> None:
    write_rule_file(tmp_path)
    shutil.copy(RULES_TEST, tmp_path)
    checked = _promtool("check", "rules", "nsprov-rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout
    tested = _promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert {a["alert"] for a in alerts()} == ALERTS
    assert fired == ALERTS


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses rule expressions: each query as a recording rule of its own."""
    queries = dashboard_queries()
    rules = [
        {"record": f"nsprov:dashboard_query_{i}", "expr": q} for i, (_, q) in enumerate(queries)
    ]
    (tmp_path / "queries.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]})
    )
    checked = _promtool("check", "rules", "queries.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_has_the_panels_the_issue_names() -> None:
    titles = [panel["title"] for panel in dashboard()["panels"]]
    wanted = {
        "Live namespaces by tenant",
        "Namespaces created per second, by tenant",
        "Create latency",
        "Refusals by reason",
        "Expiry lag",
        "Quota use by tenant",
    }
    assert wanted <= set(titles)
    for panel in dashboard()["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_alert_links_its_runbook_paragraph() -> None:
    anchors = _anchors(RUNBOOKS.read_text())
    for alert in alerts():
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_URL), url
        assert url.removeprefix(RUNBOOK_URL) == alert["alert"].lower()
        assert alert["alert"].lower() in anchors, f"docs/runbooks.md has no ## {alert['alert']}"


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = build.binaries().kubectl
    if not kubectl.exists():
        pytest.skip(f"no kubectl at {kubectl}: make cluster-build")
    result = subprocess.run(
        [str(kubectl), "kustomize", str(directory)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_the_component_on_k8s_scrapes_exactly_the_metrics_port(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    # kustomize refuses absolute paths and paths outside the overlay's tree: link both in.
    (overlay / "k8s").symlink_to(REPO / "k8s")
    (overlay / "kustomization.yaml").write_text("resources: [k8s]\ncomponents: [k8s/monitoring]\n")
    objects = _kustomize(overlay)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    [monitor] = by_kind["ServiceMonitor"]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s for s in by_kind["Service"]
        if s["metadata"]["namespace"] == monitor["metadata"]["namespace"]
        and wanted.items() <= s["metadata"].get("labels", {}).items()
    ]  # fmt: skip
    assert [s["metadata"]["name"] for s in selected] == ["nsprov-metrics"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
    [rule] = by_kind["PrometheusRule"]
    assert rule["spec"] == yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]
    [board] = [c for c in by_kind["ConfigMap"] if c["metadata"]["name"] == "nsprov-dashboard"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["data"]["nsprov.json"] == (MONITORING / "dashboard.json").read_text()


def test_the_base_alone_needs_no_monitoring_crds() -> None:
    kinds = {obj["kind"] for obj in _kustomize(REPO / "k8s")}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
