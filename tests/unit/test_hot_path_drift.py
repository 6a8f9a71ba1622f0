"""The hot path's inline copies cannot drift apart (issue 10).

``acquire``, ``acquire_with_agent`` and ``_LeaseContext.__aenter__`` each write the
plain-hit rule inline, and ``release`` repeats the common case of ``_Cache.unpinned``: a shared
helper measurably slows the hot path. These tests compare the copies' syntax trees
(normalized for the names that legitimately differ), so that changing one copy without
the others fails here instead of only in some behaviour test.
"""

from __future__ import annotations

import ast
import inspect
import pathlib
import re
import textwrap

import pytest

from snak_runtime import _binding, _cache, _manager

LOOP_CHECK = "self._loop_ref._thread_id != get_ident()"


def _normalize(code: str) -> str:
    """Names that differ between the copies for good reason: the lease context reaches
    the manager as ``m`` and its arguments as attributes; leases and acquires keep
    separate pin counters."""
    code = re.sub(r"\bm\.", "self.", code)
    # the binding part keeps the reference the facade mirrors for the hot path as ``ref``
    code = code.replace("self.ref._thread_id", "self._loop_ref._thread_id")
    # the cache part's own names for what the facade aliases (the same objects)
    code = code.replace("self.touch(", "self._touch(").replace("self.idle(", "self._idle(")
    code = code.replace("self._cache.", "self.").replace("self._capacity.", "self.capacity.")
    code = code.replace("self.last_pin_gone(", "self._last_pin_gone(")
    code = code.replace("self._user_id", "user_id").replace("self._agent_id", "agent_id")
    return code.replace("lease_pins", "PINS").replace("loose_pins", "PINS")


def _function(source: str, owner: str, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == owner:
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == name:
                    return item
    raise AssertionError(f"{owner}.{name} not found")


def _hit_rule(func: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[bool, list[str], list[str]]:
    """(checks the loop, the plain-hit condition's operands, the hit's counter updates)."""
    checks_loop = False
    for stmt in func.body:
        if isinstance(stmt, ast.If) and _normalize(ast.unparse(stmt.test)) == LOOP_CHECK:
            checks_loop = True  # acquire*: checked before the lookup
        if isinstance(stmt, ast.If) and isinstance(stmt.test, ast.BoolOp) \
                and isinstance(stmt.test.op, ast.Or):
            operands = [_normalize(ast.unparse(v)) for v in stmt.test.values]
            if LOOP_CHECK in operands:  # the lease context: checked inside the condition
                checks_loop = True
                operands.remove(LOOP_CHECK)
            after = stmt.orelse or func.body[func.body.index(stmt) + 1:]
            counts = [
                _normalize(ast.unparse(s)) for s in after if isinstance(s, ast.AugAssign)
            ]
            return checks_loop, operands, counts
    raise AssertionError(f"{func.name}: no plain-hit condition")


def _hit_rules(source: str) -> dict[str, tuple[bool, list[str], list[str]]]:
    return {
        name: _hit_rule(_function(source, owner, name))
        for owner, name in (
            ("AgentRuntimeManager", "acquire"),
            ("AgentRuntimeManager", "acquire_with_agent"),
            ("_LeaseContext", "__aenter__"),
        )
    }


MANAGER_SOURCE = inspect.getsource(_manager)


def test_the_three_plain_hit_copies_are_the_same_rule() -> None:
    rules = _hit_rules(MANAGER_SOURCE)
    first = rules["acquire"]
    assert first[0], "acquire does not check the event loop"
    assert first[1] == [
        "gen is None",
        "agent_id in self._queues",
        "self._now() >= gen.expires_at",
        "user_id is not None and user_id != gen._user_id",
    ]
    for name, rule in rules.items():
        assert rule == first, f"{name}'s plain hit differs from acquire's"


def test_the_slow_paths_check_the_loop_as_the_hot_path_does() -> None:
    check = _function(inspect.getsource(_binding), "_Binding", "check_loop")
    tests = [_normalize(ast.unparse(n.test)) for n in ast.walk(check) if isinstance(n, ast.If)]
    assert tests == [LOOP_CHECK]


def test_the_slow_path_applies_the_same_owner_check() -> None:
    lookup = _function(inspect.getsource(_cache), "_Cache", "lookup")
    owner_checks = [
        _normalize(ast.unparse(node.test)) for node in ast.walk(lookup) if isinstance(node, ast.If)
    ]
    assert _hit_rules(MANAGER_SOURCE)["acquire"][1][-1] in owner_checks


def _after_decrement(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    body = func.body
    for i, stmt in enumerate(body):
        if isinstance(stmt, ast.AugAssign) and ast.unparse(stmt.target) == "self._stats.unpins":
            code = [_normalize(ast.unparse(s)) for s in body[i:]]
            # _unpinned also serves detached generations, which release's inline case
            # excludes up front: that one test is the copies' only difference.
            # and it takes the id from the generation, release from its argument
            return [
                c.replace("if gen.current and ", "if ").replace("gen._agent_id", "agent_id")
                for c in code
            ]
    raise AssertionError(f"{func.name}: no unpin count")


def test_release_repeats_the_common_case_of_unpinned() -> None:
    release = _function(MANAGER_SOURCE, "AgentRuntimeManager", "release")
    unpinned = _function(inspect.getsource(_cache), "_Cache", "unpinned")
    assert _after_decrement(release) == _after_decrement(unpinned)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("or m._now() >= gen.expires_at", "or m._now() > gen.expires_at"),
        ("            m._stats.hits += 1\n", ""),
    ],
)
def test_a_drifted_copy_is_caught(old: str, new: str) -> None:
    """The comparison above can fail: edit only the lease context's copy."""
    start = MANAGER_SOURCE.index("class _LeaseContext")
    assert old in MANAGER_SOURCE[start:]
    drifted = MANAGER_SOURCE[:start] + MANAGER_SOURCE[start:].replace(old, new, 1)
    rules = _hit_rules(textwrap.dedent(drifted))
    assert rules["__aenter__"] != rules["acquire"]


# Where a pin may be taken, and how it is counted in ``_StatsCounter.pinned`` (hits + waiter
# pins - unpins): the inline hits and the slow hits count ``stats.hits`` (the slow ones
# through the cache's ``hit``/``lookup``), a load waiter's pin is the cache's ``pin_waiter``'s.
PIN_SITES = {
    "AgentRuntimeManager.acquire",
    "AgentRuntimeManager.acquire_with_agent",
    "_LeaseContext.__aenter__",
    "_SlowReads.acquire",
    "_SlowReads.lease",
    "_Cache.pin_waiter",
}


def test_every_pin_is_taken_where_pinned_counts_it() -> None:
    """A new way to pin must be added here on purpose, with its count in ``pinned``:
    otherwise ``stats().pinned`` and the shutdown drain silently go wrong."""
    package = pathlib.Path(_manager.__file__).parent
    sites = set()
    for path in package.rglob("*.py"):
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            for node in cls.body:
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for stmt in ast.walk(node):
                    if (
                        isinstance(stmt, ast.AugAssign)
                        and isinstance(stmt.op, ast.Add)
                        and isinstance(stmt.target, ast.Attribute)
                        and stmt.target.attr in ("lease_pins", "loose_pins")
                    ):
                        sites.add(f"{cls.name}.{node.name}")
    assert sites == PIN_SITES
