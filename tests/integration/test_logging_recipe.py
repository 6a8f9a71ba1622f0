"""The logging recipe of docs/observing.md (issue 27): under uvicorn and in a plain script, the
library's start-up line (INFO, logger snak_runtime...) and its warnings print with level and
name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "observing.md").read_text(encoding="utf-8")  # it was the README's
# What a line must look like: a level and the logger's name before the message.
START_UP = re.compile(
    r"^\S+ \S+ INFO +snak_runtime\._config: snak_runtime limits: max_entries=64", re.M
)
WARNING = re.compile(r"^\S+ \S+ WARNING +snak_runtime\.\S+: ", re.M)


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
        check=False, env={"PATH": "/usr/bin:/bin", **env},
    )


def _page_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", PAGE, re.S)
    (block,) = [str(b) for b in blocks if marker in b]
    return block


# A manager built with a limit above the guard: the INFO start-up line and a WARNING (capped).
USE_IT = "\nfrom snak_runtime import AgentRuntimeManager\nAgentRuntimeManager()\n"


def test_the_scripts_recipe_shows_the_start_up_line_and_levels() -> None:
    recipe = _page_block("logging.basicConfig")
    result = _python(recipe + USE_IT, AGENT_RUNTIME_CACHE_MAX_ENTRIES="100000")
    assert result.returncode == 0, result.stderr
    assert START_UP.search(result.stderr), result.stderr
    assert WARNING.search(result.stderr), result.stderr  # the cap warning: level and name


def test_the_uvicorn_log_config_shows_the_start_up_line_and_levels() -> None:
    code = (
        "import json, logging.config\n"
        "logging.config.dictConfig(json.load(open('examples/uvicorn_logging.json')))\n"
        + USE_IT
    )
    result = _python(code, AGENT_RUNTIME_CACHE_MAX_ENTRIES="100000")
    assert result.returncode == 0, result.stderr
    assert START_UP.search(result.stderr), result.stderr
    assert WARNING.search(result.stderr), result.stderr
    assert "--log-config examples/uvicorn_logging.json" in PAGE
