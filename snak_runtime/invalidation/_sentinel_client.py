"""A client for the master that Redis Sentinel names, built on redis-py's asyncio Sentinel.

Imported only when a Sentinel endpoint connects (it imports ``redis``). redis-py does the work:
``Sentinel.master_for()`` gives a client whose connections ask the sentinels for the master's
address each time they connect, so a new connection after a failover reaches the new master.
Two things are added here: the client also closes the connections to the sentinels it asked
(redis-py leaves them to the caller), and "no master found" says why, naming the variable to
fix, because that message is the WARNING an operator sees for a bad configuration.
"""

from __future__ import annotations

from typing import Any, final

from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.exceptions import RedisError

from ._sentinel import SENTINEL_MASTER_VAR, SENTINELS_VAR, SentinelEndpoint


@final
class _SentinelMaster(Redis):
    """The ``master_for()`` client; closing it also closes its sentinel connections."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            sentinel = getattr(self.connection_pool, "sentinel_manager", None)
            if isinstance(sentinel, Sentinel):
                # Sentinel.aclose() exists from redis 8 on; before, close each sentinel client
                closer = getattr(sentinel, "aclose", None)
                if closer is not None:
                    await closer()
                else:
                    for node in sentinel.sentinels:
                        await node.aclose()


@final
class _ExplainingSentinel(Sentinel):
    """redis-py's Sentinel, whose ``MasterNotFoundError`` says which setting is wrong."""

    def __init__(self, endpoint: SentinelEndpoint, **kwargs: Any) -> None:
        super().__init__(list(endpoint.sentinels), **kwargs)
        self._endpoint = endpoint
        # discover_master() reorders self.sentinels; keep each client's address for messages.
        self._named: list[tuple[Redis, str]] = [
            (client, f"{host}:{port}")
            for client, (host, port) in zip(self.sentinels, endpoint.sentinels, strict=True)
        ]

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        except MasterNotFoundError:
            raise MasterNotFoundError(await self._why(service_name)) from None

    async def _why(self, service_name: str) -> str:
        problem = self._endpoint.problem()
        if problem is not None:
            return problem
        silent: list[str] = []
        monitored: set[str] = set()
        for client, address in self._named:
            try:
                masters = await client.sentinel_masters()
            except (TimeoutError, RedisError, OSError) as exc:
                silent.append(f"{address} ({type(exc).__name__})")
                continue
            if isinstance(masters, dict):
                monitored.update(str(name) for name in masters)
        if not monitored and len(silent) == len(self._named):
            return f"no sentinel in {SENTINELS_VAR} answers: {', '.join(silent)}"
        unreachable = f"; no answer from {', '.join(silent)}" if silent else ""
        if service_name not in monitored:
            return (
                f"{SENTINEL_MASTER_VAR}={service_name!r} is not a master the sentinels in "
                f"{SENTINELS_VAR} monitor (they monitor {sorted(monitored)!r}){unreachable}"
            )
        return (
            f"the sentinels see master {service_name!r} down (a failover may be under way)"
            f"{unreachable}"
        )


def sentinel_master_client(endpoint: SentinelEndpoint, options: dict[str, Any]) -> Redis:
    """A client for the current master of ``endpoint``; ``options`` are the connection options
    (timeouts, retry) for both the sentinels and the master. Never connects here: an
    unusable endpoint fails at the first command, as an unreachable server does."""
    sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_") or k == "retry"}
    sentinel = _ExplainingSentinel(endpoint, sentinel_kwargs=sentinel_options)
    client: Redis = sentinel.master_for(
        endpoint.master or "",
        redis_class=_SentinelMaster,
        password=endpoint.password,
        db=endpoint.db,
        **options,
    )
    return client
