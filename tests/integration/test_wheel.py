"""The package as applications install it: a wheel, installed (not editable) into a fresh venv.

The container ships as ``snak_runtime.containers``; nothing named ``containers`` may land at the
top level of site-packages, where it would shadow the ``containers.py`` of every flat
dependency-injector application (and the ``containers`` project on the package index).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_OURS = ("AGENT_RUNTIME_", "AGENT_CFG_", "GUARDS_CONFIG_PATH", "REDIS_")

pytestmark = pytest.mark.slow  # builds a wheel and a venv: the full suite (--full)

# An application's own module, named as dependency-injector's examples name it.
_APP_CONTAINERS = '''
"""The application's own container module."""
from dependency_injector import providers
from dependency_injector.containers import DeclarativeContainer

from snak_runtime.containers import RuntimeContainer

MARKER = "the application's containers.py"


class AppContainer(DeclarativeContainer):
    runtime = providers.Container(RuntimeContainer)
'''

_APP_MAIN = """
import containers
import snak_runtime
from snak_runtime.containers import RuntimeContainer

assert containers.MARKER == "the application's containers.py", containers.__file__
manager = containers.AppContainer().runtime.manager()
assert manager.max_entries == 64, manager.max_entries
print("site", snak_runtime.__file__)
print("ok", RuntimeContainer.__module__)
"""

_APP_TYPED = """
from snak_runtime.containers import RuntimeContainer

wrong: int = RuntimeContainer()
"""


@dataclass(frozen=True, slots=True)
class Installed:
    wheel: Path
    python: Path
    scripts: Path
    site_packages: Path
    app: Path  # a folder with the application's own containers.py


def _run(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_OURS) and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=840,  # pip wheel on a loaded machine; below the 900 s hang guard
        check=False,
    )
    if check:
        assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Build the wheel and its dependencies' wheels, then install offline into a new venv."""
    work = tmp_path_factory.mktemp("wheel")
    wheelhouse = work / "wheelhouse"
    # Dependencies come from pip's cache when present (the registry otherwise); the install
    # below is then offline (--no-index) from that wheelhouse.
    # The build backend from this environment (the dev extra pins the floor), so no isolated
    # build environment is set up for it.
    _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation",
        "-w", wheelhouse, ROOT,
        cwd=work,
    )  # fmt: skip
    (wheel,) = wheelhouse.glob("snak_runtime-*.whl")
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    python = venv / "bin" / "python"
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "-q",
        "--no-index", "--find-links", wheelhouse, "snak-runtime",
        cwd=work,
    )  # fmt: skip
    site = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=work)
        .stdout.strip()
    )
    app = work / "app"
    app.mkdir()
    (app / "containers.py").write_text(_APP_CONTAINERS)
    (app / "main.py").write_text(_APP_MAIN)
    (app / "typed.py").write_text(_APP_TYPED)
    yield Installed(wheel=wheel, python=python, scripts=venv / "bin", site_packages=site, app=app)


def test_wheel_ships_the_container_inside_snak_runtime(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        top_level = {name.split("/", 1)[0] for name in names}
        record = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        declared = wheel.read(record).decode().split()
    assert "snak_runtime/containers/__init__.py" in names
    assert "snak_runtime/containers/runtime.py" in names
    assert "snak_runtime/py.typed" in names
    assert "snak_runtime/tools/_cli.py" in names  # the command line, beside the runtime
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"snak_runtime"}
    assert declared == ["snak_runtime"]


def test_nothing_named_containers_in_site_packages(installed: Installed) -> None:
    entries = {p.name for p in installed.site_packages.iterdir()}
    assert "snak_runtime" in entries
    assert not {"containers", "containers.py"} & entries
    assert (installed.site_packages / "snak_runtime" / "py.typed").is_file()
    assert (installed.site_packages / "snak_runtime" / "containers" / "__init__.py").is_file()
    assert not (installed.site_packages / "snak_runtime" / "containers").is_symlink()


def test_application_with_its_own_containers_module(installed: Installed) -> None:
    result = _run(installed.python, "main.py", cwd=installed.app)
    lines = result.stdout.splitlines()
    site_line = next(line for line in lines if line.startswith("site "))
    # The installed copy, not the source tree this test runs from.
    assert Path(site_line.removeprefix("site ")).is_relative_to(installed.site_packages)
    assert "ok snak_runtime.containers.runtime" in lines


@pytest.mark.parametrize("how", ["module", "script"])
def test_cli_runs_from_a_folder_with_containers_py(installed: Installed, how: str) -> None:
    command = (
        [installed.python, "-m", "snak_runtime"]
        if how == "module"
        else [installed.scripts / "snak-runtime"]
    )
    result = _run(*command, "config", cwd=installed.app)
    assert "snak_runtime effective limits" in result.stdout
    assert "max_entries" in result.stdout


def test_installed_package_is_typed(installed: Installed, tmp_path: Path) -> None:
    """mypy reads the installed package's annotations (py.typed covers the container)."""
    result = _run(
        sys.executable, "-m", "mypy", "--strict", "--no-incremental",
        "--cache-dir", tmp_path / "mypy-cache",
        "--python-executable", installed.python, "typed.py",
        cwd=installed.app, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'expression has type "RuntimeContainer", variable has type "int"' in result.stdout
    assert "missing library stubs or py.typed" not in result.stdout

