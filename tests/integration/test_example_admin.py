"""The FastAPI example's admin routes (issue 23): grants by token, a scope, and a container
restart under the same app."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `examples` is a directory of the repository, not a package
    sys.path.insert(0, str(ROOT))

from examples.fastapi_app.containers import AppContainer  # noqa: E402
from examples.fastapi_app.main import create_app  # noqa: E402
from snak_runtime.contrib.fastapi import AdminScope  # noqa: E402
from tests.fastapi_client import TestClient  # noqa: E402

TOKENS: dict[str, bool | AdminScope] = {
    "root-token": True,
    "alice-support": AdminScope(user_id="alice"),
    "bob-support": AdminScope(user_id="bob"),
}


def _admin(token: str) -> dict[str, str]:
    return {"X-Admin-Token": token}


def test_the_example_admin_routes_grant_by_token_and_follow_a_restart() -> None:
    container = AppContainer()
    app = create_app(container, admin_tokens=TOKENS)
    for _ in range(2):  # the second `with` restarts the resources: a new manager
        with TestClient(app) as client:
            chat = client.post(
                "/agents/support-bot/chat", json={"text": "hi"}, headers={"X-User-Id": "alice"}
            )
            assert chat.status_code == 200
            assert client.get("/admin/entries").status_code == 401
            assert client.get("/admin/entries", headers=_admin("nope")).status_code == 403

            listed = client.get("/admin/entries", headers=_admin("root-token")).json()
            assert [e["agent_id"] for e in listed["entries"]] == ["support-bot"]
            alice = client.get("/admin/entries", headers=_admin("alice-support")).json()
            assert [e["agent_id"] for e in alice["entries"]] == ["support-bot"]
            bob = client.get("/admin/entries", headers=_admin("bob-support")).json()
            assert bob == {"entries": [], "next_cursor": None}
            assert (
                client.delete("/admin/entries/support-bot", headers=_admin("bob-support"))
            ).status_code == 404
            assert client.get("/admin/stats", headers=_admin("alice-support")).status_code == 403

            evicted = client.delete("/admin/entries/support-bot", headers=_admin("alice-support"))
            assert evicted.json() == {"agent_id": "support-bot", "removed": True}
            assert client.get("/admin/stats", headers=_admin("root-token")).json()["size"] == 0


def test_without_tokens_the_example_refuses_every_admin_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EXAMPLE_ADMIN_TOKEN", raising=False)
    with TestClient(create_app(AppContainer())) as client:
        assert client.get("/admin/stats", headers=_admin("")).status_code == 403
        assert client.get("/admin/stats").status_code == 401
    monkeypatch.setenv("EXAMPLE_ADMIN_TOKEN", "t0ken")
    with TestClient(create_app(AppContainer())) as client:
        assert client.get("/admin/stats", headers=_admin("t0ken")).status_code == 200
