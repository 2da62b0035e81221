"""The package's layers only import downward, and the two wings never import each other.

HTTP request -> auth -> handler -> provisioner -> Kubernetes is one wing, the
controller the other; both stand on the ground floor (bundle, kube, errors, ...)
and share nothing else. This test is the import linter that keeps it so.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "service" / "nsprov"

GROUND = {
    "bundle", "errors", "grant", "kube", "kubeconfig", "metrics", "namespacecache", "paging",
    "requestid", "settings",
    "ttl", "workqueue",
}  # fmt: skip
API_WING = {"api", "auth", "openapi", "provisioner"}
CONTROLLER_WING = {"controller", "leader", "watch"}
TOP = {"app", "cli"}


def _imports(module: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "nsprov":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("nsprov."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("nsprov."))
    return found - {"__version__"}


def _graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_every_module_has_a_floor() -> None:
    assert set(_graph()) == GROUND | API_WING | CONTROLLER_WING | TOP


def test_ground_floor_imports_only_ground_floor() -> None:
    for module, deps in _graph().items():
        if module in GROUND:
            assert deps <= GROUND, (module, deps - GROUND)


def test_wings_never_import_each_other_or_the_top() -> None:
    for module, deps in _graph().items():
        if module in API_WING:
            assert not deps & (CONTROLLER_WING | TOP), (module, deps)
        if module in CONTROLLER_WING:
            assert not deps & (API_WING | TOP), (module, deps)


def test_only_cli_imports_app() -> None:
    assert [m for m, deps in _graph().items() if "app" in deps] == ["cli"]
