"""The admin router (snak_runtime.contrib.fastapi) through FastAPI's test client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Header, HTTPException

from snak_runtime import (
    AgentRuntimeManager,
    GuardConfig,
    RuntimeCacheSettings,
    RuntimeSeed,
)
from snak_runtime.contrib.fastapi import MAX_ID_LENGTH, admin_router
from snak_runtime.testing import FakeClock, RecordingDisposer
from tests.fastapi_client import TestClient
from tests.helpers import Manager

TOKEN = "s3cret"


def require_admin(x_admin_token: Annotated[str | None, Header()] = None) -> bool:
    """The host's check: no token is 401, a wrong one 403, the right one True."""
    if x_admin_token is None:
        raise HTTPException(401, "Unauthorized", headers={"WWW-Authenticate": "Token"})
    if x_admin_token != TOKEN:
        raise HTTPException(403, "Forbidden")
    return True


async def _never_rebuilt() -> RuntimeSeed[str, object] | None:
    raise AssertionError("not rebuilt in these tests")


def _seed(agent_id: str, user_id: str, version: int = 1) -> RuntimeSeed[str, object]:
    return RuntimeSeed(
        agent_id=agent_id, user_id=user_id, cfg_version=version,
        runtime=f"rt:{agent_id}", rebuild=_never_rebuilt, agent=object(),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(clock: FakeClock) -> Manager:
    return AgentRuntimeManager(
        guards=GuardConfig(max_entries=8, max_ttl_ms=1_000),
        settings=RuntimeCacheSettings(),
        clock=clock,
        disposer=RecordingDisposer(),
    )


@pytest.fixture
def client(manager: Manager) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(admin_router(manager, authorize=require_admin), prefix="/admin")
    with TestClient(app, headers={"X-Admin-Token": TOKEN}) as test_client:
        # the manager binds to the loop of the client's portal, as it would to the app's
        assert test_client.portal is not None
        for seed in (_seed("a", "alice"), _seed("b", "alice", 2), _seed("c", "bob")):
            test_client.portal.call(manager.shadow_seed, seed)
        yield test_client
        test_client.portal.call(manager.aclose, 1)


# ---------------------------------------------------------------- refusal


def test_router_is_refused_without_authorize(manager: Manager) -> None:
    with pytest.raises(TypeError, match="authorize"):
        admin_router(manager)
    with pytest.raises(TypeError, match="authorize"):
        admin_router(manager, authorize=None)
    with pytest.raises(TypeError, match="authorize"):
        admin_router(manager, authorize="admin")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AgentRuntimeManager"):
        admin_router(object(), authorize=require_admin)  # type: ignore[arg-type]


ROUTES = [
    ("GET", "/admin/entries"),
    ("GET", "/admin/entries/a"),
    ("GET", "/admin/entries/nobody"),
    ("DELETE", "/admin/entries/a"),
    ("DELETE", "/admin/entries/nobody"),
    ("DELETE", "/admin/users/alice/entries"),
    ("DELETE", "/admin/users/nobody/entries"),
    ("GET", "/admin/stats"),
    ("GET", "/admin/entries/" + "x" * (MAX_ID_LENGTH + 1)),  # a bad id: still 401/403
    ("DELETE", "/admin/entries/a%00b"),
]


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("wrong", 403)])
def test_unauthorized_requests_learn_nothing(
    client: TestClient, manager: Manager, token: str | None, status: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looked_up: list[str] = []
    for name in ("peek", "snapshot", "agent_ids", "evict", "evict_user", "stats"):
        original = getattr(manager, name)

        def spy(*args: Any, _name: str = name, _original: Any = original) -> Any:
            looked_up.append(_name)
            return _original(*args)

        monkeypatch.setattr(manager, name, spy)
    headers = {} if token is None else {"X-Admin-Token": token}
    client.headers.pop("X-Admin-Token")
    answers = set()
    for method, url in ROUTES:
        response = client.request(method, url, headers=headers)
        assert response.status_code == status, (method, url)
        answers.add((response.text, tuple(sorted(response.headers.items()))))
    assert len(answers) == 1  # whatever exists or not, the answer is the same
    assert looked_up == []  # authorization ran before any lookup
    assert len(manager) == 3


def test_authorize_answering_false_is_forbidden(manager: Manager) -> None:
    app = FastAPI()
    app.include_router(admin_router(manager, authorize=lambda: False))
    with TestClient(app) as test_client:
        assert test_client.get("/entries").status_code == 403
        assert test_client.delete("/users/alice/entries").status_code == 403


# ---------------------------------------------------------------- routes


def test_snapshot_and_one_entry(client: TestClient, clock: FakeClock) -> None:
    clock.advance(100)
    response = client.get("/admin/entries")
    assert response.status_code == 200
    page = response.json()
    assert page["next_cursor"] is None
    entries = page["entries"]
    assert [e["agent_id"] for e in entries] == ["a", "b", "c"]
    assert entries[1] == {
        "agent_id": "b",
        "user_id": "alice",
        "cfg_version": 2,
        "age_ms": 100,
        "expires_in_ms": 900,
        "pins": 0,
        "detached_pins": 0,
        "hits": 0,
        "last_build_ms": None,
    }
    one = client.get("/admin/entries/b")
    assert one.status_code == 200 and one.json() == entries[1]
    missing = client.get("/admin/entries/nobody")
    assert missing.status_code == 404


def test_evict_one_agent(client: TestClient, manager: Manager) -> None:
    response = client.delete("/admin/entries/a")
    assert response.status_code == 200
    assert response.json() == {"agent_id": "a", "removed": True}
    assert client.delete("/admin/entries/a").json() == {"agent_id": "a", "removed": False}
    assert "a" not in manager and len(manager) == 2


def test_evict_a_users_agents(client: TestClient, manager: Manager) -> None:
    response = client.delete("/admin/users/alice/entries")
    assert response.status_code == 200
    assert response.json() == {"user_id": "alice", "removed": 2}
    assert [e["agent_id"] for e in client.get("/admin/entries").json()["entries"]] == ["c"]
    stats = client.get("/admin/stats").json()
    assert stats["size"] == 1
    assert stats["removals"]["explicit"] == 2
    assert stats["hit_rate"] == 1.0


BAD_IDS = [
    "x" * (MAX_ID_LENGTH + 1),  # too long
    "a%00b",  # control characters
    "a%0Ab",
    "%7F",
]


@pytest.mark.parametrize(
    ("method", "url"),
    [("GET", f"/admin/entries/{bad}") for bad in BAD_IDS]
    + [("DELETE", f"/admin/entries/{bad}") for bad in BAD_IDS]
    + [("DELETE", f"/admin/users/{bad}/entries") for bad in BAD_IDS],
)
def test_bad_ids_are_422(client: TestClient, manager: Manager, method: str, url: str) -> None:
    response = client.request(method, url)
    assert response.status_code == 422
    assert len(manager) == 3


def test_evicting_through_a_closed_manager_is_503(client: TestClient, manager: Manager) -> None:
    assert client.portal is not None
    client.portal.call(manager.aclose, 1)
    assert client.delete("/admin/entries/a").status_code == 503
    assert client.delete("/admin/users/alice/entries").status_code == 503
    assert client.get("/admin/entries").json() == {"entries": [], "next_cursor": None}
