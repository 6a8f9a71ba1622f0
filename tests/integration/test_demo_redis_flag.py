"""``demo`` touches Redis only when asked (``--redis``), and a missing extra is one line, exit 2
(issue 27: ``REDIS_URL=... demo`` connected, or printed a traceback without the extra)."""

from __future__ import annotations

from pathlib import Path

from redis_server import RedisServer
from test_cli import run_cli

UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1: a connection would warn


def _without_redis(tmp_path: Path) -> str:
    """A PYTHONPATH on which ``import redis`` fails, as without the ``redis`` extra."""
    package = tmp_path / "redis"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('No module named redis')\n")
    return str(tmp_path)


def test_a_redis_url_without_the_flag_is_not_used(tmp_path: Path) -> None:
    result = run_cli("demo", REDIS_URL=UNREACHABLE, PYTHONPATH=_without_redis(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no connection attempt, no warning, no import of redis
    assert "no Redis, no files" in result.stdout


def test_the_flag_without_the_extra_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("demo", "--redis", REDIS_URL=UNREACHABLE, PYTHONPATH=_without_redis(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "snak-runtime demo: error: --redis needs the redis package: "
        "pip install 'snak-runtime[redis]'"
    ]


def test_the_flag_without_a_redis_variable_is_one_line_and_exit_2() -> None:
    result = run_cli("demo", "--redis")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "REDIS_URL" in result.stderr


def test_the_flag_subscribes_to_the_configured_redis(redis_server: RedisServer) -> None:
    result = run_cli("demo", "--redis", REDIS_URL=redis_server.url)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first == (
        "snak_runtime demo: the embedded cache; invalidations from "
        f"redis://127.0.0.1:{redis_server.port}/0 (listening)"
    )
