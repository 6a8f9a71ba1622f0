"""The operator's hard ceilings (``GuardConfig``) and the guards file they are read from.

A guards file is operator input the library does not control (CONTRACT §12): it is read only
when it is a regular file of at most ``MAX_GUARDS_FILE_BYTES``, never read whole before that
is known, and every value it supplies is held under a sanity ceiling, so that neither a
mistyped path (``/dev/zero``, a FIFO, a directory, a log file) nor a mistyped number (``1e26``
entries) can hang, exhaust or crash a process at start.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Final, overload

_MAX_ENTRIES_KEY = "agent_runtime.cache.max_entries"
_MAX_TTL_KEY = "agent_runtime.cache.max_ttl_ms"
# Optional: a guards file without it (every snak guards file so far) sets no per-user ceiling.
_MAX_PER_USER_KEY = "agent_runtime.cache.max_entries_per_user"
_CACHE_SECTION = "agent_runtime.cache"

MAX_GUARDS_FILE_BYTES: Final = 1024 * 1024
"""Largest guards file read (1 MiB; snak's whole default file is under 2 KB)."""
MAX_GUARD_ENTRIES: Final = 1_000_000
"""Ceiling of ``max_entries`` and ``max_entries_per_user``: far above any cache of live agents,
far below sizes that overflow a policy's arithmetic (``1e26`` crashed the manager)."""
MAX_GUARD_MS: Final = 30 * 24 * 60 * 60 * 1000
"""Ceiling of every millisecond value of a guard (30 days)."""

# Each guard field, its dotted key in the file, and its sanity ceiling.
_LIMITS: Final = (
    ("max_entries", _MAX_ENTRIES_KEY, MAX_GUARD_ENTRIES),
    ("max_ttl_ms", _MAX_TTL_KEY, MAX_GUARD_MS),
    ("max_entries_per_user", _MAX_PER_USER_KEY, MAX_GUARD_ENTRIES),
)


class GuardConfigError(ValueError):
    """Raised when a guards file cannot supply the cache limits; names the file and the key."""


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _too_large(value: int, ceiling: int) -> str:
    shown = str(value) if value < 10**30 else f"a {len(str(value))}-digit number"
    return f"must be at most {ceiling}, got {shown}"


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """Hard ceilings set by the operator: nothing configured can exceed them."""

    max_entries: int = 64
    max_ttl_ms: int = 300_000
    # Ceiling of the per-user quota (``max_entries_per_user``); None: no ceiling.
    max_entries_per_user: int | None = None
    # Where the values came from, for log and source text only: not part of equality or hash.
    source: str | None = field(default=None, kw_only=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_ttl_ms"):
            value = getattr(self, name)
            if not _is_positive_int(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        per_user = self.max_entries_per_user
        if per_user is not None and not _is_positive_int(per_user):
            raise ValueError(
                f"max_entries_per_user must be a positive integer or None, got {per_user!r}"
            )
        for name, _, ceiling in _LIMITS:
            value = getattr(self, name)
            if value is not None and value > ceiling:
                raise ValueError(f"{name} {_too_large(value, ceiling)}")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> GuardConfig:
        """Read the cache limits from a snak guards JSON file.

        ``max_entries`` and ``max_ttl_ms`` are required, ``max_entries_per_user`` is
        optional (absent: no per-user ceiling). Other sections are ignored. Only a regular
        file of at most 1 MiB is read. Any problem raises GuardConfigError whose message
        contains the file path and the dotted key that could not be read.
        """
        shown = os.fspath(path)
        raw = _read_small_regular_file(shown)
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise GuardConfigError(
                f"guards file {shown}: invalid JSON at line {exc.lineno} column {exc.colno}"
                f" ({exc.msg}); cannot read {_CACHE_SECTION}"
            ) from exc
        except (ValueError, RecursionError) as exc:  # bad encoding, absurd number or nesting
            raise GuardConfigError(
                f"guards file {shown}: invalid JSON ({str(exc)[:200]}); cannot read "
                f"{_CACHE_SECTION}"
            ) from exc
        max_entries = _positive_int_at(document, _MAX_ENTRIES_KEY, shown)
        max_ttl_ms = _positive_int_at(document, _MAX_TTL_KEY, shown)
        per_user = _positive_int_at(document, _MAX_PER_USER_KEY, shown, optional=True)
        found = (max_entries, max_ttl_ms, per_user)
        for value, (_, key, ceiling) in zip(found, _LIMITS, strict=True):
            if value is not None and value > ceiling:
                raise GuardConfigError(f"guards file {shown}: {key} {_too_large(value, ceiling)}")
        return cls(
            max_entries=max_entries,
            max_ttl_ms=max_ttl_ms,
            max_entries_per_user=per_user,
            source=f"file {shown}",
        )


def _read_small_regular_file(shown: str) -> bytes:
    """The bytes of ``shown`` if it is a regular file of at most 1 MiB, else GuardConfigError.

    Opened non-blocking (a FIFO would block ``open()`` until a writer came) and checked on the
    open descriptor (no race between a check and the read); at most one byte more than the
    limit is read, so a file that grows meanwhile is refused, not read whole.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(shown, flags)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise GuardConfigError(
            f"guards file {shown}: cannot read {_CACHE_SECTION}: {reason}"
        ) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise GuardConfigError(
                f"guards file {shown}: {kind}; cannot read {_CACHE_SECTION} (give the path of "
                "a JSON file)"
            )
        chunks: list[bytes] = []
        left = MAX_GUARDS_FILE_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 65_536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise GuardConfigError(
            f"guards file {shown}: cannot read {_CACHE_SECTION}: {reason}"
        ) from exc
    finally:
        os.close(fd)
    if left <= 0:
        raise GuardConfigError(
            f"guards file {shown}: larger than {MAX_GUARDS_FILE_BYTES} bytes; cannot read "
            f"{_CACHE_SECTION} (a guards file is a small JSON document)"
        )
    return b"".join(chunks)


def _json_text(value: object) -> str:
    """Show a JSON value as JSON (true, 64.0, "64"), so the message matches the file."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**60:
        return f"a {len(str(abs(value)))}-digit number"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return _json_text(value)


@overload
def _positive_int_at(document: Any, key: str, shown: str) -> int: ...


@overload
def _positive_int_at(document: Any, key: str, shown: str, *, optional: bool) -> int | None: ...


def _positive_int_at(
    document: Any, key: str, shown: str, *, optional: bool = False
) -> int | None:
    """The positive integer at dotted ``key``; an ``optional`` key may be absent (None)."""
    node: Any = document
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(node, dict):
            where = ".".join(walked) if walked else "the top level"
            raise GuardConfigError(
                f"guards file {shown}: {key}: {where} must be a JSON object, got {_json_kind(node)}"
            )
        walked.append(part)
        if part not in node:
            if optional:
                return None
            raise GuardConfigError(f"guards file {shown}: {key} is missing")
        node = node[part]
    if not _is_positive_int(node):
        raise GuardConfigError(
            f"guards file {shown}: {key} must be a positive integer, got {_json_kind(node)}"
        )
    value: int = node
    return value


def load_guards(path: str | None) -> GuardConfig:
    """Guard limits for the container: built-in defaults when no path is configured."""
    return GuardConfig() if not path else GuardConfig.from_file(path)
