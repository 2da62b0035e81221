"""The package's layers only import downward, and the two wings never import each other.

HTTP request -> auth -> handler -> provisioner -> Kubernetes is one wing, the
controller the other; both stand on the ground floor (bundle, kube, errors, ...)
and share nothing else. This test is the import linter that keeps it so.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "service" / "nsprov"

GROUND = {
    "bundle", "deletion", "errors", "firstcall", "grant", "kube", "kubeconfig", "metrics",
    "namespacecache", "paging", "policy", "policyfile", "requestid", "settings", "template",
    "ttl", "workqueue",
}  # fmt: skip
API_WING = {"api", "auth", "identity", "oidc", "openapi", "pooltokens", "provisioner"}
CONTROLLER_WING = {"controller", "leader", "namespacescope", "pool", "watch"}
TOP = {"app", "cli", "httplimits", "launcher", "rollout"}
# The client (``pip install nsprov`` without the server extra): talks HTTP, never Kubernetes.
CLIENT = {"client", "client_cli", "client_diagnostics", "client_http", "client_run"}
CLIENT_MAY_IMPORT = CLIENT | {"errors", "ttl"}
SERVER_LIBRARIES = {"starlette", "uvicorn", "kubernetes", "prometheus_client", "anyio"}


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
    assert set(_graph()) == GROUND | API_WING | CONTROLLER_WING | TOP | CLIENT


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


def test_client_imports_only_the_client_and_pure_ground() -> None:
    for module, deps in _graph().items():
        if module in CLIENT:
            assert deps <= CLIENT_MAY_IMPORT, (module, deps - CLIENT_MAY_IMPORT)
    entry_points = CLIENT | {"cli", "launcher"}
    assert not any(deps & CLIENT for m, deps in _graph().items() if m not in entry_points)


def _import_time_imports(module: str) -> tuple[set[str], set[str]]:
    """(nsprov modules, other top-level packages) that importing ``module`` imports at once.

    Imports inside functions run when the function does (``serve`` imports the
    server that way), and ``if TYPE_CHECKING`` blocks never run: both are skipped.
    """
    own: set[str] = set()
    other: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "nsprov":
                other.add(parts[0])
            elif len(parts) > 1:
                own.add(parts[1])
            else:
                own.update(a.name for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "nsprov":
                    own.add(parts[1])
                else:
                    other.add(parts[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse((PACKAGE / f"{module}.py").read_text()))
    return own, other


def test_the_client_side_never_imports_the_server_libraries_at_import_time() -> None:
    seen: set[str] = set()
    todo = ["cli", "launcher", *CLIENT]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        own, other = _import_time_imports(module)
        assert not other & SERVER_LIBRARIES, (module, other & SERVER_LIBRARIES)
        todo.extend(own)
    assert "app" not in seen


def test_importing_the_command_loads_no_server_library() -> None:
    """The same, measured: what ``nsprov list`` has in sys.modules before it runs."""
    probe = (
        "import sys, nsprov.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe, *sorted(SERVER_LIBRARIES)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert loaded == "[]"
