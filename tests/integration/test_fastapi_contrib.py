"""snak_runtime.contrib.fastapi's lifespan and dependencies (issue 27): a new app wires the
container in without glue, and a leased runtime stays pinned until its response is sent."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures at runtime.

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import pytest
from dependency_injector import providers
from dependency_injector.containers import DeclarativeContainer
from dependency_injector.wiring import Provide, inject
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import StreamingResponse

from snak_runtime import AgentRuntimeManager, RuntimeLease, RuntimeSeed
from snak_runtime.containers import RuntimeContainer
from snak_runtime.contrib.fastapi import (
    admin_router,
    current_manager,
    lease_dependency,
    provided,
    runtime_container,
    runtime_lifespan,
)
from snak_runtime.testing import RecordingDisposer
from tests.fastapi_client import TestClient

Manager = AgentRuntimeManager[Any, Any]
OWNERS = {"support-bot": "alice", "sales-bot": "bob"}


class Directory:
    """The host's agent configurations: builds a seed on a miss, counts builds."""

    def __init__(self) -> None:
        self.builds = 0
        self.fail = False

    async def build(self, agent_id: str) -> RuntimeSeed[str, object] | None:
        if self.fail:
            raise RuntimeError("the agent store is down")
        if agent_id not in OWNERS:
            return None
        self.builds += 1

        async def rebuild() -> RuntimeSeed[str, object] | None:
            return await self.build(agent_id)

        return RuntimeSeed(
            agent_id=agent_id, user_id=OWNERS[agent_id], cfg_version=1,
            runtime=f"runtime of {agent_id}", rebuild=rebuild, agent=object(),
        )


class HostContainer(DeclarativeContainer):
    runtime = providers.Container(RuntimeContainer, disposer=providers.Singleton(RecordingDisposer))
    directory = providers.Singleton(Directory)
    builder = directory.provided.build


async def caller(x_user_id: Annotated[str | None, Header()] = None) -> str | None:
    return x_user_id


def _client(app: FastAPI, **kwargs: Any) -> TestClient:
    return TestClient(app, **kwargs)


def _app(container: HostContainer, **lease_options: Any) -> FastAPI:
    app = FastAPI(lifespan=runtime_lifespan(container))
    lease = lease_dependency(
        lease_options.pop("build", Depends(provided(HostContainer.builder))),
        user=Depends(caller),
        **lease_options,
    )

    @app.get("/agents/{agent_id}")
    async def read(held: Annotated[RuntimeLease[str, object], Depends(lease)]) -> dict[str, Any]:
        return {"runtime": held.runtime, "version": held.cfg_version}

    @app.get("/size")
    async def size(manager: Annotated[Manager, Depends(current_manager)]) -> int:
        return manager.size

    return app


@pytest.fixture
def container() -> HostContainer:
    return HostContainer()


@pytest.fixture
def client(container: HostContainer) -> Iterator[TestClient]:
    with _client(_app(container)) as test_client:
        yield test_client


# ------------------------------------------------------------------------------ the lifespan


def test_the_lifespan_starts_and_stops_the_container_and_keeps_it_on_app_state(
    container: HostContainer,
) -> None:
    app = _app(container)
    with _client(app) as client:
        manager = container.runtime.manager()
        assert not manager.closed
        assert app.state.snak_runtime_container is container
        assert client.get("/agents/support-bot", headers={"X-User-Id": "alice"}).json() == {
            "runtime": "runtime of support-bot", "version": 1,
        }
    assert manager.closed
    assert manager.stats().disposals == 1  # shutdown disposed the cached agent


def test_the_lifespan_accepts_a_container_without_async_resources() -> None:
    """``init_resources()`` returns None when no resource is async: nothing to await."""

    class Plain(DeclarativeContainer):
        manager: providers.Singleton[Manager] = providers.Singleton(AgentRuntimeManager)

    plain = Plain()
    assert plain.init_resources() is None
    app = FastAPI(lifespan=runtime_lifespan(plain))

    @app.get("/size")
    async def size(manager: Annotated[Manager, Depends(current_manager)]) -> int:
        return manager.size

    with _client(app) as client:
        assert client.get("/size").json() == 0
        assert plain.manager() is plain.manager()


def test_the_apps_own_lifespan_runs_inside_and_its_state_reaches_requests(
    container: HostContainer,
) -> None:
    steps: list[str] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        manager: Manager = container.runtime.manager()
        steps.append(f"own start, manager running: {not manager.closed}")
        yield {"greeting": "hello"}
        steps.append(f"own stop, manager running: {not manager.closed}")

    app = FastAPI(lifespan=runtime_lifespan(container, own))

    @app.get("/greeting")
    async def greeting(request: Request) -> str:
        return str(request.state.greeting)

    with _client(app) as client:
        assert client.get("/greeting").json() == "hello"
    assert steps == ["own start, manager running: True", "own stop, manager running: True"]
    assert container.runtime.manager.provider  # the container is still usable afterwards


def test_a_failed_start_up_shuts_down_what_started(
    container: HostContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscriber's resource fails after the manager started (it depends on the started
    manager, so the order is fixed): the manager is closed again."""
    monkeypatch.setenv("REDIS_URL", "not-a-redis-url")  # RedisConfigError at the subscriber
    started = container.runtime.manager()  # the one init_resources() starts
    with pytest.raises(Exception), _client(_app(container)):  # noqa: B017
        pass
    assert started.closed


def test_current_manager_and_the_admin_router_follow_a_restart(container: HostContainer) -> None:
    app = _app(container)
    app.include_router(admin_router(authorize=lambda: True), prefix="/admin")
    managers = []
    for _ in range(2):
        with _client(app) as client:
            headers = {"X-User-Id": "alice"}
            assert client.get("/agents/support-bot", headers=headers).status_code == 200
            assert client.get("/size").json() == 1
            listed = client.get("/admin/entries").json()["entries"]
            assert [e["agent_id"] for e in listed] == ["support-bot"]
            managers.append(container.runtime.manager())
    assert managers[0] is not managers[1]
    assert all(m.closed for m in managers)


def test_without_the_lifespan_the_dependency_says_what_to_install() -> None:
    app = FastAPI()

    @app.get("/size")
    async def size(manager: Annotated[Manager, Depends(current_manager)]) -> int:
        return manager.size

    with _client(app) as client, pytest.raises(RuntimeError, match="runtime_lifespan"):
        client.get("/size")


def test_an_ambiguous_container_needs_its_manager_named() -> None:
    class Two(DeclarativeContainer):
        first = providers.Container(RuntimeContainer)
        second = providers.Container(RuntimeContainer)

    two = Two()
    with pytest.raises(TypeError, match="manager="):
        runtime_lifespan(two)
    runtime_lifespan(two, manager=two.first.manager)  # named: fine


# ------------------------------------------------------------------------------ the lease


def test_the_lease_builds_on_a_miss_then_hits(client: TestClient, container: HostContainer) -> None:
    for _ in range(3):
        reply = client.get("/agents/support-bot", headers={"X-User-Id": "alice"})
        assert reply.status_code == 200
    stats = container.runtime.manager().stats()
    assert (stats.misses, stats.hits, stats.pinned) == (1, 2, 0)
    assert container.directory().builds == 1


def test_no_such_agent_and_another_users_agent_are_the_same_404(client: TestClient) -> None:
    assert client.get("/agents/support-bot", headers={"X-User-Id": "alice"}).status_code == 200
    mine_not = client.get("/agents/support-bot", headers={"X-User-Id": "mallory"})
    absent = client.get("/agents/no-such-bot", headers={"X-User-Id": "mallory"})
    assert mine_not.status_code == absent.status_code == 404
    assert mine_not.json() == absent.json() == {"detail": "agent not found"}


def test_no_user_is_a_401_and_a_bad_id_a_422(client: TestClient) -> None:
    assert client.get("/agents/support-bot").status_code == 401
    bad = client.get("/agents/support%01bot", headers={"X-User-Id": "alice"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["path", "agent_id"]


def test_a_miss_without_build_is_a_404(container: HostContainer) -> None:
    with _client(_app(container, build=None)) as client:
        assert client.get("/agents/support-bot", headers={"X-User-Id": "alice"}).status_code == 404
    assert container.directory().builds == 0


def test_a_plain_loader_and_a_custom_path_parameter(container: HostContainer) -> None:
    directory = Directory()
    app = FastAPI(lifespan=runtime_lifespan(container))
    lease = lease_dependency(directory.build, agent_id_param="bot")

    @app.get("/bots/{bot}")
    async def read(held: Annotated[RuntimeLease[str, object], Depends(lease)]) -> str:
        return held.runtime

    with _client(app) as client:  # no user dependency: no owner check
        assert client.get("/bots/sales-bot").json() == "runtime of sales-bot"
    assert directory.builds == 1


def test_a_build_failure_propagates_and_leaves_nothing_pinned(container: HostContainer) -> None:
    container.directory().fail = True
    with _client(_app(container), raise_server_exceptions=False) as client:
        assert client.get("/agents/support-bot", headers={"X-User-Id": "alice"}).status_code == 500
        stats = container.runtime.manager().stats()
        assert (stats.pinned, stats.size, stats.load_failures) == (0, 0, 1)
    with _client(_app(container)) as client, pytest.raises(RuntimeError, match="store is down"):
        client.get("/agents/support-bot", headers={"X-User-Id": "alice"})


def test_a_closed_manager_is_a_503(container: HostContainer) -> None:
    with _client(_app(container)) as client:
        assert client.portal is not None  # the app's own loop: close it there, app running
        client.portal.call(_close, container.runtime.manager())
        assert client.get("/agents/support-bot", headers={"X-User-Id": "alice"}).status_code == 503


async def _close(manager: Manager) -> None:
    await manager.aclose(grace_ms=0)


def test_the_lease_is_held_while_a_streamed_body_is_sent(container: HostContainer) -> None:
    """The generator reads the leased runtime while streaming; the pin goes after the body."""
    app = _app(container)
    lease = lease_dependency(Depends(provided(HostContainer.builder)), user=Depends(caller))
    seen: list[tuple[str, int]] = []

    @app.get("/agents/{agent_id}/stream")
    async def stream(
        held: Annotated[RuntimeLease[str, object], Depends(lease)],
        manager: Annotated[Manager, Depends(current_manager)],
    ) -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            for n in range(3):
                await asyncio.sleep(0)
                seen.append((held.runtime, manager.stats().pinned))
                yield f"{held.runtime} #{n}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    with _client(app) as client:
        with client.stream(
            "GET", "/agents/support-bot/stream", headers={"X-User-Id": "alice"}
        ) as response:
            body = "".join(response.iter_text())
        assert body.splitlines() == [f"runtime of support-bot #{n}" for n in range(3)]
        assert seen == [("runtime of support-bot", 1)] * 3  # pinned during the body
        stats = container.runtime.manager().stats()
        assert stats.pinned == 0  # released once the body was sent
        assert container.runtime.manager().peek("support-bot") is not None


# ------------------------------------------------------------------------------ provided()


def test_provided_finds_class_nested_and_dotted_providers(container: HostContainer) -> None:
    app = FastAPI(lifespan=runtime_lifespan(container))

    @app.get("/check")
    async def check(
        directory: Annotated[Directory, Depends(provided(HostContainer.directory))],
        manager: Annotated[Manager, Depends(provided(HostContainer.runtime.manager))],
        settings: Annotated[Any, Depends(provided("runtime.settings"))],
        subscriber: Annotated[Any, Depends(provided("runtime.invalidation"))],  # async Resource
        host: Annotated[Any, Depends(runtime_container)],
    ) -> list[bool]:
        return [
            directory is container.directory(),
            manager is container.runtime.manager(),
            settings is container.runtime.settings(),
            subscriber is None,  # no REDIS_* variable: no subscriber
            host is container,
        ]

    with _client(app) as client:
        assert client.get("/check").json() == [True] * 5
    with pytest.raises(ValueError, match="provider path"):
        provided("runtime..manager")


def test_provide_markers_fail_in_an_app_factory_that_is_not_wired_provided_does_not() -> None:
    """The README's warning: ``Depends(Provide[...])`` + ``@inject`` in a route defined inside
    a function gets the bare marker unless the module is wired (a 500); ``provided`` works."""

    def create_app(container: HostContainer) -> FastAPI:
        app = FastAPI(lifespan=runtime_lifespan(container))

        @app.get("/wired")
        @inject
        async def wired(
            manager: Manager = Depends(Provide[HostContainer.runtime.manager]),  # noqa: B008
        ) -> int:
            return manager.stats().size

        @app.get("/provided")
        async def plain(
            manager: Annotated[Manager, Depends(provided(HostContainer.runtime.manager))],
        ) -> int:
            return manager.stats().size

        return app

    with _client(create_app(HostContainer()), raise_server_exceptions=False) as client:
        assert client.get("/wired").status_code == 500  # 'Provide' object has no attribute 'stats'
        assert client.get("/provided").json() == 0
