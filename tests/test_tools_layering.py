"""The tools (CLI, simulator, traces) sit beside the runtime: the dependency points one way.

Nothing in the runtime imports ``snak_runtime.tools`` (checked on the source, so a lazy
import inside a function counts too), and importing the runtime loads none of it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "snak_runtime"
TOOLS = PACKAGE / "tools"


def _runtime_modules() -> list[Path]:
    """Every module of the runtime: the package and the container, without the tools and the
    ``python -m`` entry (which is the tools' door)."""
    found = {
        path.resolve()
        for folder in (PACKAGE, ROOT / "containers")
        for path in folder.rglob("*.py")
    }
    return sorted(
        path for path in found
        if not path.is_relative_to(TOOLS.resolve()) and path.name != "__main__.py"
    )


def _imported(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = (
        path.parent.relative_to(ROOT).parts
        if path.parent.resolve() != (ROOT / "containers").resolve()
        else ("snak_runtime", "containers")
    )
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_scan_sees_the_runtime_and_resolves_relative_imports() -> None:
    modules = {path.relative_to(ROOT).as_posix() for path in _runtime_modules()}
    assert {"snak_runtime/_manager.py", "snak_runtime/metrics/otel.py",
            "containers/runtime.py"} <= modules
    assert not any(module.startswith("snak_runtime/tools/") for module in modules)
    assert "snak_runtime._config" in _imported(TOOLS / "_cli.py")
    assert "snak_runtime._manager" in _imported(PACKAGE / "metrics" / "otel.py")
    assert "snak_runtime.tools._cli" in _imported(PACKAGE / "__main__.py")


@pytest.mark.parametrize(
    "path", _runtime_modules(), ids=lambda path: path.relative_to(ROOT).as_posix()
)
def test_no_runtime_module_imports_the_tools(path: Path) -> None:
    tools = sorted(
        name for name in _imported(path)
        if name == "snak_runtime.tools" or name.startswith("snak_runtime.tools.")
    )
    assert not tools, f"{path.relative_to(ROOT)} imports {tools}"


def test_importing_the_runtime_loads_no_tool() -> None:
    code = (
        "import sys, snak_runtime, snak_runtime.containers, snak_runtime.metrics\n"
        "import snak_runtime.invalidation, snak_runtime.testing\n"
        "snak_runtime.AgentRuntimeManager()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('snak_runtime.tools'))\n"
        "assert not loaded, loaded\n"
        "import snak_runtime.tools\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('snak_runtime.tools.'))\n"
        "assert not loaded, loaded  # the package itself imports nothing\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=ROOT)
