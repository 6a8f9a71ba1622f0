"""What pyproject.toml declares is what CI tests: every floor is in .ci/floors.txt, and the lint
and type tools are pinned (``==``), not floors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\\-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)")
_PIN = re.compile(r"^([A-Za-z0-9_.\\-]+)\s*==\s*([0-9][^,;\s]*)$")
# Tools pinned with == in the dev extra: upgraded on purpose, never floors (the floors step
# does not lint).
# The docs tools (the docs extra) are pinned too, for the same reason.
PINNED_TOOLS = {"ruff", "mypy"} | {
    "mkdocs", "mkdocs-material", "mkdocstrings", "mkdocstrings-python", "griffelib",
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _release(version: str) -> str:
    """PEP 440 pads releases with zeros: 1.24 == 1.24.0."""
    parts = version.split(".")
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return ".".join(parts)


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [
        *project["build-system"]["requires"],
        *project["project"]["dependencies"],
        *(r for extra in project["project"]["optional-dependencies"].values() for r in extra),
    ]


def _declared_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for requirement in _requirements():
        match = _PIN.match(requirement)
        if match is not None:
            pins[_normal(match.group(1))] = match.group(2)
    return pins


def _declared_floors() -> dict[str, str]:
    floors: dict[str, str] = {}
    for requirement in _requirements():
        match = _REQUIREMENT.match(requirement)
        if match is None:
            # the extras' alias, or a pinned tool
            assert requirement.startswith("snak-runtime[") or _PIN.match(requirement), requirement
            continue
        name, version = _normal(match.group(1)), _release(match.group(2))
        assert floors.setdefault(name, version) == version, f"{name}: two floors"
    return floors


def _pinned_floors() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_normal(name)] = _release(version)
    return pins


def test_floors_file_pins_every_declared_floor() -> None:
    declared = _declared_floors()
    assert {"dependency-injector", "pydantic-settings", "redis", "uvicorn"} <= set(declared)
    bench_only = {"matplotlib"}  # the bench extra is not installed by the floors run
    assert _pinned_floors() == {k: v for k, v in declared.items() if k not in bench_only}


def test_lint_and_type_tools_are_pinned_not_floored() -> None:
    assert set(_declared_pins()) == PINNED_TOOLS
    assert not PINNED_TOOLS & set(_pinned_floors())


def test_ci_runs_the_suite_against_the_floors() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in script  # a failing step fails the run
    assert "-c .ci/floors.txt" in script
    assert "run_pytest .ci-floors-venv/bin/python\n" in script  # the fast suite, at the floors
    assert "run_pytest python --full\n" in script  # the full suite, once, at the newest
