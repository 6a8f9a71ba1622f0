"""The documentation cannot drift from the code (issue 27): its Python blocks run here.

Every ```python block of README.md and docs/**/*.md is executed, in a module of its own,
unless the line before it is ``<!-- fragment -->``: a fragment (a piece that names the
reader's own objects, or needs Redis or a network) is compiled, and every name it imports is
imported and looked up, so a renamed or removed public name fails here. Every block, run or
not, is also type-checked with ``mypy --strict`` (one run over all of them), with the names a
fragment leaves to the reader (``manager``, ``db``) taken as ``Any`` and top-level ``await``
allowed. A block that only
includes a file (``--8<-- "examples/..."``) is checked to include a file that exists; the
examples themselves run in ``test_examples.py``. The ``config`` sample of the configuration
page is compared with what the command prints today.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import os
import re
import shlex
import subprocess
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from snak_runtime._options import OPTIONS
from snak_runtime.tools._cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
FRAGMENT = "<!-- fragment -->"
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$')
FENCE = re.compile(r"^(\s*)```(\S*)")


@dataclass(frozen=True, slots=True)
class Block:
    path: str
    line: int
    source: str
    fragment: bool

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _blocks(language: str = "python") -> list[Block]:
    found = []
    for page in _pages():
        lines = page.read_text().splitlines()
        index = 0
        while index < len(lines):
            opened = FENCE.match(lines[index])
            if opened is None:
                index += 1
                continue
            indent, info = opened.groups()
            start = index
            index += 1
            body = []
            while index < len(lines) and not lines[index].strip().startswith("```"):
                body.append(lines[index][len(indent):] if lines[index].startswith(indent)
                            else lines[index])
                index += 1
            index += 1  # the closing fence
            if info != language:
                continue
            before = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
            found.append(Block(str(page.relative_to(ROOT)), start + 1, "\n".join(body) + "\n",
                               before == FRAGMENT))
    return found


BLOCKS = _blocks()
INCLUDES = [b for b in BLOCKS if SNIPPET.match(b.source.strip())]
RUNNABLE = [b for b in BLOCKS if not b.fragment and b not in INCLUDES]
FRAGMENTS = [b for b in BLOCKS if b.fragment]


def _compile(block: Block) -> types.CodeType:
    code: types.CodeType = compile(
        block.source, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    return code


def test_the_pages_have_blocks_of_each_kind() -> None:
    assert RUNNABLE and FRAGMENTS and INCLUDES
    assert any(b.path == "README.md" for b in RUNNABLE), "the README's example runs"


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_a_block_runs(block: Block) -> None:
    code = _compile(block)
    module = types.ModuleType(f"_docs_block_{block.line}")

    def run() -> None:
        result = eval(code, module.__dict__)
        if asyncio.iscoroutine(result):  # a block with a top-level await
            asyncio.run(result)

    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        # In a thread of its own: a block's asyncio.run() sets (and at its end clears) the
        # current event loop of its thread, which here would drop, unclosed, the loop
        # pytest-asyncio leaves current in the test thread (a leak at the floors).
        _in_a_thread(run)
    finally:
        del sys.modules[module.__name__]


def _in_a_thread(call: Callable[[], None]) -> None:
    failures: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # re-raised in the test's thread
            failures.append(exc)

    thread = threading.Thread(target=target, name="docs-block")
    thread.start()
    thread.join()
    if failures:
        raise failures[0]


@pytest.mark.parametrize("block", FRAGMENTS, ids=lambda b: b.id)
def test_a_fragment_compiles_and_its_imports_exist(block: Block) -> None:
    tree = ast.parse(block.source)
    _compile(block)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or _is_module(
                    f"{node.module}.{alias.name}"
                ), f"{block.id}: {node.module} has no {alias.name}"


def _is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("block", INCLUDES, ids=lambda b: b.id)
def test_an_included_file_exists(block: Block) -> None:
    match = SNIPPET.match(block.source.strip())
    assert match is not None
    assert (ROOT / match.group(1)).is_file(), block.id


def test_the_readme_links_into_the_docs_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(((?:docs/|CHANGELOG)[^)#]*)", text)
    assert targets
    for target in targets:
        assert (ROOT / target).exists(), target


def test_the_readme_stays_a_first_read() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "## Differences from the original" in text


def test_the_config_sample_is_what_config_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    sample = re.search(r"```text\n\$ (.*?python -m snak_runtime config)\n(.*?)```", page, re.S)
    assert sample is not None
    command, shown = sample.groups()
    for option in OPTIONS:
        monkeypatch.delenv(option.variable, raising=False)
    for word in shlex.split(command):
        if "=" not in word:
            break
        name, _, value = word.partition("=")
        monkeypatch.setenv(name, value)
    assert cli_main(["config"]) == 0
    assert capsys.readouterr().out == shown


def test_every_block_type_checks(tmp_path: Path) -> None:
    blocks = [b for b in BLOCKS if b not in INCLUDES]
    for number, block in enumerate(blocks):
        (tmp_path / f"block_{number:03d}.py").write_text(f"# {block.id}\n{block.source}")
    environment = {**os.environ, "MYPYPATH": str(ROOT)}  # the editable install hides the source
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--cache-dir", str(tmp_path / ".mypy_cache"), "--python-version", "3.11",
         "--disable-error-code", "name-defined", "--disable-error-code", "top-level-await",
         "--config-file", os.devnull, "."],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600, check=False,
    )
    def where(found: re.Match[str]) -> str:  # a block's line back to its page's line
        block = blocks[int(found.group(1))]
        return f"{block.path}:{block.line + int(found.group(2)) - 1}:"

    assert checked.returncode == 0, re.sub(r"block_(\d+)\.py:(\d+):", where, checked.stdout)
