"""Guard limits, environment settings and their resolution (CONTRACT §2)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from snak_runtime._config import (
    GuardConfig,
    GuardConfigError,
    ResolvedLimits,
    load_guards,
    resolve_limits,
    resolve_seed_ttl_ms,
)
from snak_runtime._settings import RuntimeCacheSettings

SEED_GUARDS = Path("/work/shared/seed/default.guards.json")
MAX_VAR = "AGENT_RUNTIME_CACHE_MAX_ENTRIES"
MS_VAR = "AGENT_RUNTIME_CACHE_TTL_MS"
S_VAR = "AGENT_RUNTIME_CACHE_TTL_SECONDS"
PATH_VAR = "GUARDS_CONFIG_PATH"
LOGGER = "snak_runtime._config"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (MAX_VAR, MS_VAR, S_VAR, PATH_VAR):
        monkeypatch.delenv(name, raising=False)
    yield


def resolve_env(guards: GuardConfig | None = None) -> ResolvedLimits:
    return resolve_limits(guards or GuardConfig(), RuntimeCacheSettings())


def warning_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]


# GuardConfig values


def test_guard_defaults() -> None:
    g = GuardConfig()
    assert (g.max_entries, g.max_ttl_ms) == (64, 300_000)


def test_guard_is_frozen_and_hashable() -> None:
    g = GuardConfig(max_entries=3, max_ttl_ms=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.max_entries = 4  # type: ignore[misc]
    assert hash(g) == hash(GuardConfig(max_entries=3, max_ttl_ms=10))
    assert {g, GuardConfig(max_entries=3, max_ttl_ms=10)} == {g}


@pytest.mark.parametrize("value", [1, 2, 10**6])
@pytest.mark.parametrize("name", ["max_entries", "max_ttl_ms"])
def test_guard_accepts_positive_int(name: str, value: int) -> None:
    kwargs: dict[str, object] = {name: value}
    assert getattr(GuardConfig(**kwargs), name) == value  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, True, False, 1.5, 64.0, "64", None])
@pytest.mark.parametrize("name", ["max_entries", "max_ttl_ms"])
def test_guard_rejects_non_positive_or_non_int(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be a positive integer, got ") as info:
        GuardConfig(**{name: value})  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


def test_guard_error_message_example() -> None:
    with pytest.raises(ValueError, match=r"^max_entries must be a positive integer, got 0$"):
        GuardConfig(max_entries=0)


# GuardConfig.from_file


def test_from_file_reads_seed_guards() -> None:
    g = GuardConfig.from_file(SEED_GUARDS)
    assert (g.max_entries, g.max_ttl_ms) == (64, 300_000)
    assert g == GuardConfig()
    assert GuardConfig.from_file(str(SEED_GUARDS)) == g


def test_from_file_ignores_other_sections(tmp_path: Path) -> None:
    p = tmp_path / "g.json"
    doc = {
        "global": {"max_users": "x"},
        "agent_runtime": {"cache": {"max_entries": 7, "max_ttl_ms": 9}, "other": []},
    }
    p.write_text(json.dumps(doc))
    assert GuardConfig.from_file(p) == GuardConfig(max_entries=7, max_ttl_ms=9)


def _cache_doc(**cache: object) -> str:
    return json.dumps(
        {"agent_runtime": {"cache": {"max_entries": 64, "max_ttl_ms": 1000, **cache}}}
    )


ENTRIES_KEY = "agent_runtime.cache.max_entries"
TTL_KEY = "agent_runtime.cache.max_ttl_ms"


@pytest.mark.parametrize(
    ("content", "key", "detail"),
    [
        pytest.param(None, "agent_runtime.cache", "No such file", id="missing-file"),
        pytest.param(
            '{"agent_runtime": ', "agent_runtime.cache", "invalid JSON at line 1", id="bad-json"
        ),
        pytest.param(
            "{\n  'a': 1\n}", "agent_runtime.cache", "line 2 column 3", id="bad-json-line"
        ),
        pytest.param(
            "[1, 2]", ENTRIES_KEY, "top level must be a JSON object, got an array", id="list"
        ),
        pytest.param('"x"', ENTRIES_KEY, 'top level must be a JSON object, got "x"', id="string"),
        pytest.param('{"global": {}}', ENTRIES_KEY, "is missing", id="no-agent-runtime"),
        pytest.param(
            '{"agent_runtime": []}',
            ENTRIES_KEY,
            "agent_runtime must be a JSON object",
            id="ar-list",
        ),
        pytest.param(
            '{"agent_runtime": {"cache": 5}}',
            ENTRIES_KEY,
            "agent_runtime.cache must be",
            id="cache-int",
        ),
        pytest.param(
            json.dumps({"agent_runtime": {"cache": {"max_ttl_ms": 1}}}),
            ENTRIES_KEY,
            "is missing",
            id="no-entries",
        ),
        pytest.param(
            json.dumps({"agent_runtime": {"cache": {"max_entries": 1}}}),
            TTL_KEY,
            "is missing",
            id="no-ttl",
        ),
        pytest.param(
            _cache_doc(max_entries=0), ENTRIES_KEY, "positive integer, got 0", id="entries-0"
        ),
        pytest.param(
            _cache_doc(max_entries=-5), ENTRIES_KEY, "positive integer, got -5", id="entries-neg"
        ),
        pytest.param(
            _cache_doc(max_entries=True),
            ENTRIES_KEY,
            "positive integer, got true",
            id="entries-true",
        ),
        pytest.param(
            _cache_doc(max_entries=64.0),
            ENTRIES_KEY,
            "positive integer, got 64.0",
            id="entries-float",
        ),
        pytest.param(
            _cache_doc(max_entries="64"),
            ENTRIES_KEY,
            'positive integer, got "64"',
            id="entries-str",
        ),
        pytest.param(
            _cache_doc(max_entries=None),
            ENTRIES_KEY,
            "positive integer, got null",
            id="entries-null",
        ),
        pytest.param(_cache_doc(max_ttl_ms=0), TTL_KEY, "positive integer, got 0", id="ttl-0"),
        pytest.param(_cache_doc(max_ttl_ms=-5), TTL_KEY, "positive integer, got -5", id="ttl-neg"),
        pytest.param(
            _cache_doc(max_ttl_ms=True), TTL_KEY, "positive integer, got true", id="ttl-true"
        ),
        pytest.param(
            _cache_doc(max_ttl_ms=64.0), TTL_KEY, "positive integer, got 64.0", id="ttl-float"
        ),
        pytest.param(
            _cache_doc(max_ttl_ms="64"), TTL_KEY, 'positive integer, got "64"', id="ttl-str"
        ),
    ],
)
def test_from_file_errors_name_path_and_key(
    tmp_path: Path, content: str | None, key: str, detail: str
) -> None:
    p = tmp_path / "guards.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(GuardConfigError) as info:
        GuardConfig.from_file(p)
    message = str(info.value)
    assert message.startswith(f"guards file {p}: ")
    assert key in message
    assert detail in message
    assert isinstance(info.value, ValueError)


def test_from_file_message_example(tmp_path: Path) -> None:
    p = tmp_path / "g.json"
    p.write_text(_cache_doc(max_ttl_ms=64.0))
    with pytest.raises(GuardConfigError) as info:
        GuardConfig.from_file(p)
    assert str(info.value) == f"guards file {p}: {TTL_KEY} must be a positive integer, got 64.0"


def test_from_file_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GuardConfigError, match=r"agent_runtime\.cache") as info:
        GuardConfig.from_file(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_from_file_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "g.json"
    p.write_bytes(b'{"agent_runtime": "\xff\xfe\xfd"}')
    with pytest.raises(GuardConfigError, match="invalid JSON") as info:
        GuardConfig.from_file(p)
    assert str(p) in str(info.value)


# load_guards


@pytest.mark.parametrize("path", [None, ""])
def test_load_guards_without_path_gives_defaults(path: str | None) -> None:
    assert load_guards(path) == GuardConfig()


def test_load_guards_reads_file(tmp_path: Path) -> None:
    p = tmp_path / "g.json"
    p.write_text(_cache_doc(max_entries=5, max_ttl_ms=50))
    assert load_guards(str(p)) == GuardConfig(max_entries=5, max_ttl_ms=50)


def test_load_guards_bad_file_raises(tmp_path: Path) -> None:
    with pytest.raises(GuardConfigError):
        load_guards(str(tmp_path / "absent.json"))


# RuntimeCacheSettings


def test_settings_read_exact_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_VAR, "10")
    monkeypatch.setenv(MS_VAR, "2000")
    monkeypatch.setenv(S_VAR, "3")
    monkeypatch.setenv(PATH_VAR, "/etc/g.json")
    s = RuntimeCacheSettings()
    assert (s.max_entries, s.ttl_ms, s.ttl_seconds, s.guards_config_path) == (
        10,  # typed fields (issue 24): the text of an integer arrives as an int
        2000,
        3,
        "/etc/g.json",
    )


def test_settings_unset_and_empty_are_none(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RuntimeCacheSettings().max_entries is None
    monkeypatch.setenv(MAX_VAR, "")
    monkeypatch.setenv(PATH_VAR, "")
    s = RuntimeCacheSettings()
    assert (s.max_entries, s.guards_config_path) == (None, None)


def test_settings_keep_raw_text_and_never_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_VAR, "not a number")
    monkeypatch.setenv(MS_VAR, " 64.0 ")
    s = RuntimeCacheSettings()
    # typed fields (issue 24): a bad variable is dropped, never raises, and is reported
    assert (s.max_entries, s.ttl_ms) == (None, None)
    assert [fmt % args for fmt, args in s.rejected_environment] == [
        f"{MAX_VAR}='not a number' ignored: not an integer",
        f"{MS_VAR}=' 64.0 ' ignored: not an integer",
    ]


def test_settings_by_field_name() -> None:
    s = RuntimeCacheSettings(max_entries="10", ttl_ms="5", ttl_seconds="1", guards_config_path="/g")
    assert (s.max_entries, s.ttl_ms, s.ttl_seconds, s.guards_config_path) == (10, 5, 1, "/g")


@pytest.mark.parametrize(
    "name", ["MAX_ENTRIES", "max_entries", "TTL_MS", "ttl_seconds", "guards_config_path"]
)
def test_settings_ignore_field_names_in_environment(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "10")
    assert RuntimeCacheSettings() == RuntimeCacheSettings(
        max_entries=None, ttl_ms=None, ttl_seconds=None, guards_config_path=None
    )


def test_settings_keyword_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_VAR, "10")
    assert RuntimeCacheSettings(max_entries="3").max_entries == 3  # typed (issue 24)
    by_alias = RuntimeCacheSettings(AGENT_RUNTIME_CACHE_MAX_ENTRIES="4")
    assert by_alias.max_entries == 4


def test_settings_accept_numbers_by_name() -> None:
    assert RuntimeCacheSettings(max_entries=10).max_entries == 10  # typed (issue 24)


# resolve_limits: max entries


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_max_entries_unset_or_blank_uses_guard(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raw: str | None
) -> None:
    if raw is not None:
        monkeypatch.setenv(MAX_VAR, raw)
    limits = resolve_env()
    assert limits == ResolvedLimits(64, 300_000, "guard (defaults)", "guard (defaults)", ())
    assert warning_texts(caplog) == []


@pytest.mark.parametrize(
    ("raw", "value"), [("10", 10), (" 42 ", 42), ("+42", 42), ("64", 64), ("1", 1), ("007", 7)]
)
def test_max_entries_valid(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raw: str, value: int
) -> None:
    monkeypatch.setenv(MAX_VAR, raw)
    limits = resolve_env()
    assert limits.max_entries == value
    assert limits.max_entries_source == f"{MAX_VAR}={value}"
    assert limits.warnings == ()
    assert warning_texts(caplog) == []


def test_max_entries_above_guard_is_capped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MAX_VAR, "100")
    limits = resolve_env()
    assert limits.max_entries == 64
    assert limits.max_entries_source == f"{MAX_VAR}=100 capped to guard 64"
    texts = warning_texts(caplog)
    assert len(texts) == 1
    assert MAX_VAR in texts[0] and "100" in texts[0] and "64" in texts[0]
    assert limits.warnings == tuple(texts)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("64.0", "not an integer"),
        ("1e3", "not an integer"),
        ("true", "not an integer"),
        ("abc", "not an integer"),
        ("4_2", "not an integer"),
        ("٤٢", "not an integer"),
        ("0x10", "not an integer"),
        ("- 3", "not an integer"),
        ("-3", "must be >= 1"),
        ("0", "must be >= 1"),
        ("-0", "must be >= 1"),
    ],
)
def test_max_entries_bad_value_warns_and_falls_through(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raw: str, reason: str
) -> None:
    monkeypatch.setenv(MAX_VAR, raw)
    limits = resolve_env()
    assert limits.max_entries == 64
    assert limits.max_entries_source == "guard (defaults)"
    expected = f"{MAX_VAR}={raw!r} ignored: {reason}"
    assert warning_texts(caplog) == [expected]
    assert limits.warnings == (expected,)
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.WARNING
    expected_args = (MAX_VAR, raw, 1) if reason.startswith("must") else (MAX_VAR, raw)
    assert record.args == expected_args


def test_max_entries_huge_value_is_capped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MAX_VAR, "9" * 30)
    assert resolve_env().max_entries == 64
    assert len(warning_texts(caplog)) == 1


def test_max_entries_too_many_digits_falls_through(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MAX_VAR, "9" * 5000)
    limits = resolve_env()
    assert limits.max_entries == 64
    assert limits.max_entries_source == "guard (defaults)"
    (text,) = warning_texts(caplog)
    assert text.startswith(f"{MAX_VAR}=") and text.endswith("ignored: too many digits")


# resolve_limits: TTL


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_ttl_unset_or_blank_uses_guard(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raw: str | None
) -> None:
    if raw is not None:
        monkeypatch.setenv(MS_VAR, raw)
        monkeypatch.setenv(S_VAR, raw)
    limits = resolve_env(GuardConfig(max_ttl_ms=9000))
    assert limits.default_ttl_ms == 9000
    assert limits.default_ttl_source == "guard"
    assert warning_texts(caplog) == []


def test_ttl_ms_valid(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(MS_VAR, " 1500 ")
    limits = resolve_env()
    assert (limits.default_ttl_ms, limits.default_ttl_source) == (1500, f"{MS_VAR}=1500")
    assert limits.warnings == ()
    assert warning_texts(caplog) == []


def test_ttl_seconds_times_1000(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(S_VAR, "+30")
    limits = resolve_env()
    assert (limits.default_ttl_ms, limits.default_ttl_source) == (30_000, f"{S_VAR}=30")
    assert limits.warnings == ()


def test_ttl_ms_takes_precedence_over_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MS_VAR, "2000")
    monkeypatch.setenv(S_VAR, "30")
    limits = resolve_env()
    assert (limits.default_ttl_ms, limits.default_ttl_source) == (2000, f"{MS_VAR}=2000")


def test_empty_ttl_ms_falls_through_to_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MS_VAR, "")
    monkeypatch.setenv(S_VAR, "30")
    assert resolve_env().default_ttl_ms == 30_000


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("64.0", "not an integer"),
        ("1e3", "not an integer"),
        ("abc", "not an integer"),
        ("-1", "must be >= 0"),
    ],
)
def test_bad_ttl_ms_falls_through_to_seconds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raw: str, reason: str
) -> None:
    monkeypatch.setenv(MS_VAR, raw)
    monkeypatch.setenv(S_VAR, "30")
    limits = resolve_env()
    assert (limits.default_ttl_ms, limits.default_ttl_source) == (30_000, f"{S_VAR}=30")
    expected = f"{MS_VAR}={raw!r} ignored: {reason}"
    assert warning_texts(caplog) == [expected]
    assert limits.warnings == (expected,)


def test_bad_ttl_ms_and_seconds_fall_through_to_guard(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MS_VAR, "soon")
    monkeypatch.setenv(S_VAR, "-2")
    limits = resolve_env()
    assert (limits.default_ttl_ms, limits.default_ttl_source) == (300_000, "guard (defaults)")
    expected = [f"{MS_VAR}='soon' ignored: not an integer", f"{S_VAR}='-2' ignored: must be >= 0"]
    assert warning_texts(caplog) == expected
    assert limits.warnings == tuple(expected)


@pytest.mark.parametrize(
    ("var", "raw"), [(MS_VAR, "0"), (S_VAR, "0"), (MS_VAR, " -0 "), (S_VAR, "+0")]
)
def test_ttl_zero_resolves_to_guard_with_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, var: str, raw: str
) -> None:
    monkeypatch.setenv(var, raw)
    limits = resolve_env(GuardConfig(max_ttl_ms=5000))
    assert limits.default_ttl_ms == 5000
    assert limits.default_ttl_source == f"{var}=0 replaced by guard 5000"
    (text,) = warning_texts(caplog)
    assert text.startswith(f"{var}=0 ") and "5000" in text
    assert limits.warnings == (text,)


@pytest.mark.parametrize(
    ("var", "raw", "given"),
    [(MS_VAR, "400000", f"{MS_VAR}=400000"), (S_VAR, "301", f"{S_VAR}=301")],
)
def test_ttl_above_guard_is_capped(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    var: str,
    raw: str,
    given: str,
) -> None:
    monkeypatch.setenv(var, raw)
    limits = resolve_env()
    assert limits.default_ttl_ms == 300_000
    assert limits.default_ttl_source == f"{given} capped to guard 300000"
    (text,) = warning_texts(caplog)
    assert text.startswith(given) and "300000" in text
    assert limits.warnings == (text,)


def test_ttl_equal_to_guard_is_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(S_VAR, "300")
    limits = resolve_env()
    assert (limits.default_ttl_ms, limits.default_ttl_source) == (300_000, f"{S_VAR}=300")
    assert warning_texts(caplog) == []


# resolve_limits: sources, ordering, purity


def test_source_names_guard_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    p = tmp_path / "g.json"
    p.write_text(_cache_doc(max_entries=8, max_ttl_ms=800))
    guards = GuardConfig.from_file(p)
    limits = resolve_limits(guards, RuntimeCacheSettings())
    assert limits == ResolvedLimits(8, 800, f"guard file {p}", f"guard file {p}", ())


def test_source_for_seed_file_with_code_defaults_equal() -> None:
    guards = GuardConfig.from_file(SEED_GUARDS)
    limits = resolve_limits(guards, RuntimeCacheSettings())
    assert limits.max_entries_source == f"guard file {SEED_GUARDS}"


def test_warnings_are_collected_in_order(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MAX_VAR, "abc")
    monkeypatch.setenv(MS_VAR, "x")
    monkeypatch.setenv(S_VAR, "0")
    limits = resolve_env()
    texts = warning_texts(caplog)
    assert len(texts) == 3
    assert texts[0].startswith(f"{MAX_VAR}='abc'")
    assert texts[1].startswith(f"{MS_VAR}='x'")
    assert texts[2].startswith(f"{S_VAR}=0")
    assert limits.warnings == tuple(texts)
    assert (limits.max_entries, limits.default_ttl_ms) == (64, 300_000)


def test_resolution_from_field_names() -> None:
    settings = RuntimeCacheSettings(max_entries="10", ttl_seconds="2")
    limits = resolve_limits(GuardConfig(), settings)
    assert limits == ResolvedLimits(10, 2000, f"{MAX_VAR}=10", f"{S_VAR}=2", ())


def test_resolved_limits_is_frozen() -> None:
    limits = ResolvedLimits(1, 2, "a", "b")
    assert limits.warnings == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_entries = 3  # type: ignore[misc]


# resolve_seed_ttl_ms


@pytest.mark.parametrize(
    ("ttl_ms", "expected"),
    [
        (None, 1000),
        (1, 1),
        (500, 500),
        (5000, 5000),
        (5001, 5000),
        (10**12, 5000),
        (0, 5000),
        (-1, 5000),
    ],
)
def test_resolve_seed_ttl_ms(ttl_ms: int | None, expected: int) -> None:
    assert resolve_seed_ttl_ms(ttl_ms, 1000, 5000) == expected
