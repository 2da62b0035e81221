"""k8s/monitoring as data: the alert rules, the dashboard's queries, where promtool is.

Shared by tests/monitoring (promtool, offline) and tests/integration/test_prometheus.py
(a real Prometheus scraping nsprov), so both judge the same expressions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "k8s" / "monitoring"
RULES_TEST = Path(__file__).with_name("nsprov-rules.test.yaml")

# Grafana's variables, as Prometheus itself cannot read them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m"}


def rule_groups() -> dict[str, Any]:
    """The PrometheusRule's spec: a Prometheus rule file's content (``groups:``)."""
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    groups: dict[str, Any] = rule["spec"]
    return groups


def alerts() -> list[dict[str, Any]]:
    return [r for group in rule_groups()["groups"] for r in group["rules"] if "alert" in r]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text())
    return loaded


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables replaced) of every dashboard target."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def write_rule_file(directory: Path) -> Path:
    """The PrometheusRule's spec as ``nsprov-rules.yaml`` in ``directory`` (the name the
    promtool tests' ``rule_files`` give)."""
    path = directory / "nsprov-rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    return path


def tool(name: str) -> str:
    """A Prometheus binary, or skip: .ci/run installs Debian's ``prometheus`` package."""
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not found: apt-get install prometheus (.ci/run does, as root)")
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects, as PromQL's grammar reads it.

    Every selector must name its metric: one matching ``{__name__=~...}`` could not be
    checked against what nsprov exposes.
    """
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)
        for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None:
                walk(child)
        for arg in getattr(node, "args", None) or ():
            walk(arg)

    walk(promql_parser.parse(expr))
    return names
