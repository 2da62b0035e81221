"""What the folders' import rules cannot say: what importing the command loads at once.

The layers themselves (the top over the two wings over the ground floor, the wings
apart, only ``cli`` importing ``app``, the client on its own) are import-linter
contracts in pyproject.toml, checked by ``lint-imports`` in ``make lint``.
import-linter sees every import, wherever it is written; ``nsprov list`` cares
about the ones that run when it starts. Imports inside functions run when the
function does (``serve`` imports the server that way), and ``if TYPE_CHECKING``
blocks never run: those are what the client's command may have.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"
SERVER_LIBRARIES = {"starlette", "uvicorn", "kubernetes", "prometheus_client", "anyio"}


def _source(module: str) -> Path | None:
    path = SERVICE.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    file = path.with_suffix(".py")
    return file if file.is_file() else None


def _with_parents(module: str) -> list[str]:
    """Importing ``nsprov.a.b`` runs ``nsprov/__init__.py`` and ``nsprov/a/__init__.py`` too."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _import_time_imports(module: str) -> tuple[set[str], set[str]]:
    """(nsprov modules, other top-level packages) that importing ``module`` imports at once."""
    own: set[str] = set()
    other: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "nsprov":
                other.add(node.module.split(".")[0])
            else:
                own.add(node.module)
                own.update(
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if _source(f"{node.module}.{a.name}")
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "nsprov":
                    own.add(alias.name)
                else:
                    other.add(alias.name.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    source = _source(module)
    assert source is not None, module
    visit(ast.parse(source.read_text()))
    return own, other


def test_the_client_side_never_imports_the_server_libraries_at_import_time() -> None:
    client = [f"nsprov.client.{p.stem}" for p in (SERVICE / "nsprov" / "client").glob("*.py")]
    seen: set[str] = set()
    todo = [m for start in ("nsprov.cli", "nsprov.launcher", *client) for m in _with_parents(start)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        own, other = _import_time_imports(module)
        assert not other & SERVER_LIBRARIES, (module, other & SERVER_LIBRARIES)
        todo.extend(m for imported in own for m in _with_parents(imported))
    assert "nsprov.app" not in seen


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
