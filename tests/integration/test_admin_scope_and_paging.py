"""The admin router's hardening (issue 23, finding 7): only True or an AdminScope authorizes, a
scope sees one user's entries, the manager follows a container restart, the listing is paged,
and a 422 never echoes a huge input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings, RuntimeSeed
from snak_runtime.containers import RuntimeContainer
from snak_runtime.contrib.fastapi import DEFAULT_PAGE, MAX_PAGE, AdminScope, admin_router
from snak_runtime.testing import FakeClock, RecordingDisposer
from tests.fastapi_client import TestClient
from tests.helpers import Manager


async def _never_rebuilt() -> RuntimeSeed[str, object] | None:
    raise AssertionError("not rebuilt in these tests")


def _seed(agent_id: str, user_id: str) -> RuntimeSeed[str, object]:
    return RuntimeSeed(
        agent_id=agent_id, user_id=user_id, cfg_version=1,
        runtime=f"rt:{agent_id}", rebuild=_never_rebuilt, agent=object(),
    )  # fmt: skip


def _manager(max_entries: int = 64) -> Manager:
    return AgentRuntimeManager(
        guards=GuardConfig(max_entries=max_entries, max_ttl_ms=60_000),
        settings=RuntimeCacheSettings(),
        clock=FakeClock(),
        disposer=RecordingDisposer(),
    )


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """A client over a router built with the given manager source and authorize; the
    manager(s) are seeded through the client's loop."""
    opened: list[tuple[TestClient, Manager | None]] = []

    def make(
        manager: Manager,
        authorize: Callable[..., Any],
        seeds: list[tuple[str, str]] = (),  # type: ignore[assignment]
        source: Any = None,
    ) -> TestClient:
        app = FastAPI()
        app.include_router(
            admin_router(manager if source is None else source, authorize=authorize)
        )
        client = TestClient(app)
        client.__enter__()
        assert client.portal is not None
        for agent_id, user_id in seeds:
            client.portal.call(manager.shadow_seed, _seed(agent_id, user_id))
        opened.append((client, manager))
        return client

    yield make
    for client, manager in opened:
        assert client.portal is not None
        if manager is not None:
            client.portal.call(manager.aclose, 1)
        client.__exit__(None, None, None)


ALICE_AND_BOB = [("a1", "alice"), ("a2", "alice"), ("b1", "bob"), ("b2", "bob")]


# ---------------------------------------------------------------- only True or a scope


@pytest.mark.parametrize(
    "verdict",
    [None, False, 0, 1, "", "yes", [], {"user_id": "alice"}, object(),
     JSONResponse({"detail": "no"}, status_code=403)],
    ids=repr,
)
def test_only_true_or_a_scope_authorizes(
    make_client: Callable[..., TestClient], verdict: object
) -> None:
    manager = _manager()
    client = make_client(manager, lambda: verdict, ALICE_AND_BOB)
    # Before: None, 0, "", a Response... all got 200 and the whole snapshot.
    for method, url in [
        ("GET", "/entries"), ("GET", "/entries/a1"), ("DELETE", "/entries/a1"),
        ("DELETE", "/users/alice/entries"), ("GET", "/stats"),
    ]:  # fmt: skip
        response = client.request(method, url)
        assert response.status_code == 403, (verdict, method, url)
        assert response.json() == {"detail": "Forbidden"}
    assert len(manager) == 4


def test_true_is_an_admin_of_the_whole_cache(make_client: Callable[..., TestClient]) -> None:
    client = make_client(_manager(), lambda: True, ALICE_AND_BOB)
    page = client.get("/entries").json()
    assert [e["agent_id"] for e in page["entries"]] == ["a1", "a2", "b1", "b2"]
    assert client.get("/stats").status_code == 200


def test_an_async_authorize_returning_a_scope(make_client: Callable[..., TestClient]) -> None:
    async def alice_only(request: Request) -> AdminScope:
        return AdminScope(user_id="alice")

    client = make_client(_manager(), alice_only, ALICE_AND_BOB)
    assert [e["agent_id"] for e in client.get("/entries").json()["entries"]] == ["a1", "a2"]


def test_admin_scope_is_a_small_frozen_value() -> None:
    scope = AdminScope(user_id="alice")
    assert scope == AdminScope("alice") and hash(scope) == hash(AdminScope("alice"))
    with pytest.raises(AttributeError):
        scope.user_id = "bob"  # type: ignore[misc]
    with pytest.raises(ValueError, match="user_id"):
        AdminScope("")
    with pytest.raises(TypeError, match="user_id"):
        AdminScope(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- a scope sees one user


def test_a_scope_sees_and_evicts_only_its_users_entries(
    make_client: Callable[..., TestClient],
) -> None:
    manager = _manager()
    client = make_client(manager, lambda: AdminScope(user_id="alice"), ALICE_AND_BOB)

    page = client.get("/entries").json()
    assert [e["agent_id"] for e in page["entries"]] == ["a1", "a2"]
    assert {e["user_id"] for e in page["entries"]} == {"alice"}

    assert client.get("/entries/a1").status_code == 200
    absent, bobs = client.get("/entries/nobody"), client.get("/entries/b1")
    assert bobs.status_code == absent.status_code == 404
    assert bobs.text == absent.text  # another user's entry: as if absent

    absent, bobs = client.delete("/entries/nobody"), client.delete("/entries/b1")
    assert bobs.status_code == absent.status_code == 404
    assert bobs.text == absent.text
    assert "b1" in manager

    other, nobody = client.delete("/users/bob/entries"), client.delete("/users/nobody/entries")
    assert other.status_code == nobody.status_code == 404
    assert other.text == nobody.text
    assert "b1" in manager and "b2" in manager

    assert client.get("/stats").status_code == 403  # whole-cache counters: not for a scope

    assert client.delete("/entries/a1").json() == {"agent_id": "a1", "removed": True}
    assert client.delete("/users/alice/entries").json() == {"user_id": "alice", "removed": 1}
    assert sorted(manager.agent_ids()) == ["b1", "b2"]


# ---------------------------------------------------------------- the current manager


def test_a_provider_follows_the_container_across_a_restart() -> None:
    container = RuntimeContainer()
    container.guards.override(GuardConfig(max_entries=8, max_ttl_ms=60_000))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await container.init_resources()  # type: ignore[misc]
        try:
            yield
        finally:
            await container.shutdown_resources()  # type: ignore[misc]

    app = FastAPI(lifespan=lifespan)
    app.include_router(admin_router(container.manager, authorize=lambda: True))
    managers = []
    for run, agent_id in enumerate(("first", "second")):
        with TestClient(app) as client:  # each `with` starts and stops the resources
            assert client.portal is not None
            manager = container.manager()
            managers.append(manager)
            client.portal.call(manager.shadow_seed, _seed(agent_id, "u"))
            # Before: the router kept the first, closed manager: [] then 503.
            listed = client.get("/entries").json()["entries"]
            assert [e["agent_id"] for e in listed] == [agent_id], run
            assert client.delete(f"/entries/{agent_id}").json()["removed"] is True
    assert managers[0] is not managers[1] and managers[0].closed


def test_a_fastapi_dependency_or_an_async_callable_gives_the_manager(
    make_client: Callable[..., TestClient],
) -> None:
    manager = _manager()

    async def from_request(request: Request) -> Manager:
        return manager

    client = make_client(manager, lambda: True, ALICE_AND_BOB, source=from_request)
    assert len(client.get("/entries").json()["entries"]) == 4

    async def current() -> Manager:
        return manager

    client = make_client(manager, lambda: True, source=current)
    assert client.get("/entries/a1").status_code == 200


def test_a_source_that_returns_no_manager_is_a_server_error(
    make_client: Callable[..., TestClient],
) -> None:
    manager = _manager()
    client = make_client(manager, lambda: True, source=lambda: None)
    client_no_raise = TestClient(client.app, raise_server_exceptions=False)
    with client_no_raise:
        assert client_no_raise.get("/entries").status_code == 500


def test_the_router_refuses_what_is_not_a_manager_source() -> None:
    with pytest.raises(TypeError, match="AgentRuntimeManager"):
        admin_router(42, authorize=lambda: True)  # type: ignore[arg-type]


# ---------------------------------------------------------------- paging


def _walk(client: TestClient, limit: int | None = None) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {}
        if limit is not None:
            params["limit"] = limit
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get("/entries", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([e["agent_id"] for e in body["entries"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_pages_cover_every_entry_once_in_agent_id_order(
    make_client: Callable[..., TestClient],
) -> None:
    seeds = [(f"agent-{i:04d}", f"user-{i % 7}") for i in range(250)]
    client = make_client(_manager(max_entries=300), lambda: True, seeds)
    pages = _walk(client)
    assert [len(p) for p in pages] == [DEFAULT_PAGE, DEFAULT_PAGE, 50]
    listed = [agent_id for page in pages for agent_id in page]
    assert listed == sorted(agent_id for agent_id, _ in seeds)
    assert [len(p) for p in _walk(client, limit=MAX_PAGE)] == [250]
    assert [len(p) for p in _walk(client, limit=1)] == [1] * 250


def test_a_scoped_walk_lists_only_its_user(make_client: Callable[..., TestClient]) -> None:
    seeds = [(f"agent-{i:04d}", f"user-{i % 5}") for i in range(200)]
    client = make_client(_manager(max_entries=300), lambda: AdminScope("user-3"), seeds)
    listed = [agent_id for page in _walk(client, limit=7) for agent_id in page]
    assert listed == sorted(agent_id for agent_id, user in seeds if user == "user-3")


def test_entries_removed_or_added_between_pages_do_not_repeat_or_hide_others(
    make_client: Callable[..., TestClient],
) -> None:
    manager = _manager(max_entries=100)
    seeds = [(f"k{i:02d}", "u") for i in range(30)]
    client = make_client(manager, lambda: True, seeds)
    first = client.get("/entries", params={"limit": 10}).json()
    assert client.portal is not None
    client.portal.call(manager.evict, "k15")
    client.portal.call(manager.shadow_seed, _seed("k05x", "u"))  # before the cursor: not seen
    client.portal.call(manager.shadow_seed, _seed("k25x", "u"))  # after it: seen
    rest = client.get("/entries", params={"limit": 100, "cursor": first["next_cursor"]}).json()
    listed = [e["agent_id"] for e in first["entries"] + rest["entries"]]
    expected = sorted({a for a, _ in seeds} - {"k15"} | {"k25x"})
    assert listed == expected and rest["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": str(MAX_PAGE + 1)}, {"limit": "abc"}, {"limit": "-1"},
     {"limit": "1e3"}, {"cursor": "%%%"}, {"cursor": "////"}],
)
def test_a_bad_limit_or_cursor_is_422(
    make_client: Callable[..., TestClient], params: dict[str, str]
) -> None:
    client = make_client(_manager(), lambda: True, ALICE_AND_BOB)
    response = client.get("/entries", params=params)
    assert response.status_code == 422, response.text


# ---------------------------------------------------------------- 422 bodies stay short


async def _asgi(app: FastAPI, method: str, path: str, query: str = "") -> tuple[int, bytes]:
    """One request straight through ASGI: HTTP clients refuse URLs this long (a server's own
    limit may too, but the router must not count on the one in front of it)."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query.encode(), "headers": [], "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


HUGE = "x" * 10_000_000


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", "/entries/" + HUGE, ""),
        ("DELETE", "/entries/" + HUGE, ""),
        ("DELETE", "/users/" + HUGE + "/entries", ""),
        ("GET", "/entries", "limit=" + HUGE),
        ("GET", "/entries", "cursor=" + HUGE),
    ],
    ids=["peek", "evict", "evict-user", "limit", "cursor"],
)
async def test_a_422_never_echoes_a_huge_input(method: str, path: str, query: str) -> None:
    manager = _manager()
    for agent_id, user_id in ALICE_AND_BOB:
        await manager.shadow_seed(_seed(agent_id, user_id))
    app = FastAPI()
    app.include_router(admin_router(manager, authorize=lambda: True))
    try:
        status, body = await _asgi(app, method, path, query)
    finally:
        await manager.aclose(1)
    assert status == 422
    # Before: FastAPI's 422 carried the whole 10 MB value back.
    assert len(body) < 1_000, len(body)
    (detail,) = json.loads(body)["detail"]
    assert detail["input"] == "x" * 32 + "..."
