"""Stateful test of concurrent use: operations run as tasks that interleave at random.

The sequential model (test_manager_model.py) checks every result exactly; this machine
checks the safety properties under interleaving, cancellation, slow builds and failures:
an agent is never disposed while a task holds it, never twice, every accepted agent is
disposed exactly once after close, the pin count equals the pins the tasks hold, and a
task that the test did not cancel never ends in CancelledError (issue 9). Each run draws
the expiry options of issue 16 (idle expiry, TTL jitter with a seeded random source).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from snak_runtime import (
    AgentRuntimeManager,
    EntryInfo,
    GuardConfig,
    RemovalCause,
    RuntimeCacheSettings,
    RuntimeManagerClosed,
    RuntimeNotCached,
    RuntimeSeed,
)
from snak_runtime._calls import UserCodeCancelled
from snak_runtime.testing import FakeClock, internals
from tests.helpers import examples

AGENT_IDS = st.sampled_from(["a", "b", "c"])
# "stubborn": slow, and ignores cancellation (issue 23); "cancels": raises CancelledError
OUTCOMES = st.sampled_from(["seed", "seed", "none", "raise", "slow", "stubborn", "cancels"])
EXPECTED = (
    RuntimeNotCached,
    RuntimeManagerClosed,
    TimeoutError,
    LookupError,
    ValueError,
    UserCodeCancelled,  # what a build or rebuild that raised CancelledError fails with
)


class Agent:
    def __init__(self, name: str, user: str, born: int) -> None:
        self.name = name
        self.user = user
        self.born = born  # when the operation that made it for the manager started

    def __repr__(self) -> str:
        return f"Agent({self.name})"


class Boom(Exception):
    pass


class ConcurrentMachine(RuleBasedStateMachine):
    max_entries = 2
    quota: int | None = None  # max_entries_per_user

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.serial = itertools.count()
        # Every agent the manager took over: those a build or rebuild made for it, the
        # shadow-seeded ones it installed or discarded for an evicted user (an ignored stale
        # seed stays the caller's).
        self.accepted: dict[int, Agent] = {}
        self.disposed: list[Agent] = []
        self.held: Counter[int] = Counter()  # agents held by tasks right now (id -> count)
        self.tasks: list[asyncio.Task[Any]] = []
        self.cancelled: set[asyncio.Task[Any]] = set()  # the tasks this test cancelled
        self.leases: dict[asyncio.Task[Any], str] = {}  # lease tasks and their agent id
        self.gates: list[asyncio.Event] = []  # open one to let a holding task finish
        self.acquired: list[str] = []  # agent ids pinned by acquire, to release later
        self.acquired_agents: dict[str, list[Agent]] = {}  # per id, oldest first
        self.violations: list[Agent] = []  # disposed while a task held them
        self.closed = False
        self.slow = asyncio.Event()  # slow builds and rebuilds wait on this
        # evict_user(user) at serial n: no agent of that user made by an operation that
        # started before n may be installed (and so handed out) after the call
        self.revoked: dict[str, int] = {}
        self.revoked_installs: list[Agent] = []
        # Agents an on_invalidate that returned or raised left behind: cached (or pinned)
        # when it ended, older than its version. A read begun afterwards never gets one.
        self.stale: set[int] = set()
        self.stale_reads: list[Agent] = []
        # Quota evictions only ever take the entries of the user being trimmed.
        self.trimming: list[str] = []
        self.owner: dict[str, str] = {}  # agent id -> user of its current generation
        self.quota_violations: list[str] = []
        self.rebuild_outcome = "seed"
        self.manager = self.make_manager(0, 0.0, 0, 0, False)

    @initialize(
        idle_ttl=st.sampled_from([0, 0, 30, 60]),
        jitter=st.sampled_from([0.0, 0.0, 0.5]),
        seed=st.integers(0, 2**16),
        refresh_ahead=st.sampled_from([0, 30, 60, 99]),
        stale=st.booleans(),
        rebuild=OUTCOMES,
        abandon_at_once=st.booleans(),
    )
    def options(
        self, idle_ttl: int, jitter: float, seed: int, refresh_ahead: int, stale: bool,
        rebuild: str, abandon_at_once: bool,
    ) -> None:
        """This run's options (expiry, issue 15's) in random combinations, on a fresh manager
        (the first one was never used); ``rebuild`` is what the entries' rebuild()
        (invalidations and refreshes) does. ``abandon_at_once``: a cancelled build or
        rebuild gets no grace to end (without a wall clock, the only way a stubborn one is
        abandoned here: its seed then arrives late and must still be disposed)."""
        self.rebuild_outcome = rebuild
        self.manager = self.make_manager(idle_ttl, jitter, seed, refresh_ahead, stale)
        if abandon_at_once:
            internals(self.manager).abandon_cancelled_at_once()

    def make_manager(
        self, idle_ttl: int, jitter: float, seed: int, refresh_ahead: int, stale: bool
    ) -> AgentRuntimeManager[str, Agent]:
        machine = self

        class Disposer:
            async def dispose(self, agent: object) -> None:
                assert isinstance(agent, Agent)
                if machine.held[id(agent)]:  # (an assert here would count as a failed dispose)
                    machine.violations.append(agent)
                machine.disposed.append(agent)

        manager: AgentRuntimeManager[str, Agent] = AgentRuntimeManager(
            guards=GuardConfig(max_entries=self.max_entries, max_ttl_ms=100),
            settings=RuntimeCacheSettings(),
            clock=self.clock,
            disposer=Disposer(),
            build_timeout_ms=2_000,
            dispose_timeout_ms=2_000,
            refresh_ahead_ms=refresh_ahead,
            stale_while_rebuilding=stale,
            idle_ttl_ms=idle_ttl,
            ttl_jitter=jitter,
            ttl_jitter_random=random.Random(seed),
            max_entries_per_user=self.quota,
        )
        parts = internals(manager)
        trim_user = parts.cache.capacity.trim_user
        policy = parts.policy
        victim_among = policy.victim_among

        def trim_spy(user_id: str, **kwargs: Any) -> None:
            self.trimming.append(user_id)
            try:
                trim_user(user_id, **kwargs)
            finally:
                self.trimming.pop()

        def victim_spy(candidates: Any, keep: Any) -> Any:
            victim = victim_among(candidates, keep)
            if victim is not None and (not self.trimming or victim.user_id != self.trimming[-1]):
                self.quota_violations.append(victim.agent_id)
            return victim

        def on_removal(agent_id: str, cause: RemovalCause) -> None:
            if cause is RemovalCause.QUOTA and (
                not self.trimming or self.owner[agent_id] != self.trimming[-1]
            ):
                self.quota_violations.append(agent_id)

        parts.cache.capacity.trim_user = trim_spy  # type: ignore[method-assign]
        policy.victim_among = victim_spy  # type: ignore[method-assign]
        manager.on_removal(on_removal)
        install = parts.cache.install

        def spy(seed: RuntimeSeed[str, Agent], *args: Any, **kwargs: Any) -> Any:
            if seed.agent is not None:
                self.accepted[id(seed.agent)] = seed.agent
                if seed.agent.born < self.revoked.get(seed.user_id, -1):
                    self.revoked_installs.append(seed.agent)
            self.owner[seed.agent_id] = seed.user_id
            return install(seed, *args, **kwargs)

        parts.cache.install = spy  # type: ignore[method-assign]
        discard = parts.cache.discard

        def discard_spy(agent_id: str, seed: object) -> None:
            # a seed discarded because its user was evicted: the manager disposes its agent
            # (a shadow-seeded one included: its caller handed it over)
            agent = getattr(seed, "agent", None)
            if isinstance(agent, Agent):
                self.accepted[id(agent)] = agent
            discard(agent_id, seed)

        parts.cache.discard = discard_spy  # type: ignore[method-assign]
        return manager

    # ----------------------------------------------------------------- helpers

    def seed(
        self, agent_id: str, version: int, user: str, born: int | None = None
    ) -> RuntimeSeed[str, Agent]:
        n = next(self.serial)
        agent = Agent(f"{agent_id}{version}#{n}", user, n if born is None else born)

        async def rebuild() -> RuntimeSeed[str, Agent] | None:
            return await self.produce(agent_id, version + 1, user, self.rebuild_outcome)

        return RuntimeSeed(agent_id, user, version, f"rt:{agent.name}", rebuild, agent)

    async def produce(
        self, agent_id: str, version: int, user: str, outcome: str
    ) -> RuntimeSeed[str, Agent] | None:
        born = next(self.serial)
        await asyncio.sleep(0)
        if outcome == "raise":
            raise Boom(agent_id)
        if outcome == "none":
            return None
        if outcome == "cancels":
            raise asyncio.CancelledError
        if outcome == "slow":
            await self.slow.wait()
        if outcome == "stubborn":
            slow = self.slow  # (settle replaces it)
            while not slow.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await slow.wait()
        made = self.seed(agent_id, version, user, born)
        assert made.agent is not None
        self.accepted[id(made.agent)] = made.agent  # made for the manager: its to dispose
        return made

    def spawn(self, coro: Any) -> None:
        self.tasks.append(self.loop.create_task(coro))

    def run_steps(self, n: int) -> None:
        async def steps() -> None:
            for _ in range(n):
                await asyncio.sleep(0)

        self.loop.run_until_complete(steps())

    def settle(self) -> None:
        """Let everything finish that is not waiting on a gate or a slow build."""
        self.slow.set()
        for gate in self.gates:
            gate.set()
        self.run_steps(50)

        async def all_done() -> None:
            await asyncio.gather(*self.tasks, return_exceptions=True)

        self.loop.run_until_complete(all_done())
        self.check_no_spurious_cancellation()
        self.slow = asyncio.Event()
        self.tasks.clear()
        self.cancelled.clear()
        self.leases.clear()
        self.gates.clear()
        self.loop.run_until_complete(self.manager.wait_for_disposals())

    # ----------------------------------------------------------------- rules

    @precondition(lambda self: not self.closed)
    @rule(
        agent_id=AGENT_IDS,
        user=st.sampled_from([None, "u1", "u2"]),
        outcome=OUTCOMES,
        version=st.integers(1, 4),
    )
    def lease(self, agent_id: str, user: str | None, outcome: str, version: int) -> None:
        gate = asyncio.Event()
        self.gates.append(gate)

        async def build(aid: str) -> RuntimeSeed[str, Agent] | None:
            return await self.produce(aid, version, user or "u1", outcome)

        async def holder() -> None:
            stale = frozenset(self.stale)
            try:
                async with self.manager.lease(agent_id, user_id=user, build=build) as lease:
                    assert lease.agent is not None
                    self.check_fresh(lease.agent, stale)
                    self.held[id(lease.agent)] += 1
                    try:
                        await gate.wait()
                    finally:
                        self.held[id(lease.agent)] -= 1
            except (*EXPECTED, Boom):
                pass

        self.spawn(holder())
        self.leases[self.tasks[-1]] = agent_id

    @precondition(lambda self: not self.closed)
    @rule(agent_id=AGENT_IDS, steps=st.integers(1, 4))
    def lease_stubborn_and_leave(self, agent_id: str, steps: int) -> None:
        """A lease on a build that ignores cancellation, cancelled by its caller: the load
        ends anyway (at once with ``abandon_at_once``), the id stays usable, and the seed
        the build returns at last is disposed (issue 23)."""
        self.lease(agent_id, None, "stubborn", 1)
        task = self.tasks[-1]
        self.run_steps(steps)
        if not task.done():
            self.cancelled.add(task)
            task.cancel()
            self.run_steps(2)

    @precondition(lambda self: not self.closed)
    @rule(agent_id=AGENT_IDS)
    def acquire(self, agent_id: str) -> None:
        async def take() -> None:
            stale = frozenset(self.stale)
            try:
                got = await self.manager.acquire_with_agent(agent_id)
            except EXPECTED:
                return
            if got is not None:
                assert got.agent is not None
                self.check_fresh(got.agent, stale)
                self.held[id(got.agent)] += 1
                self.acquired.append(agent_id)
                self.acquired_agents.setdefault(agent_id, []).append(got.agent)

        self.spawn(take())

    @rule(index=st.integers(0, 20))
    def release(self, index: int) -> None:
        if not self.acquired:
            return
        agent_id = self.acquired.pop(index % len(self.acquired))
        # release() gives back the oldest pin of that id: forget the oldest agent we hold
        self.manager.release(agent_id)
        agent = self.acquired_agents[agent_id].pop(0)
        self.held[id(agent)] -= 1
        self.loop.run_until_complete(self.manager.wait_for_disposals())

    @precondition(lambda self: not self.closed)
    @rule(agent_id=AGENT_IDS, version=st.integers(1, 4), user=st.sampled_from(["u1", "u2"]))
    def shadow_seed(self, agent_id: str, version: int, user: str) -> None:
        seed = self.seed(agent_id, version, user)

        async def write() -> None:
            assert seed.agent is not None
            seed.agent.born = next(self.serial)  # handed over now, not when made
            with contextlib.suppress(*EXPECTED):
                await self.manager.shadow_seed(seed)

        self.spawn(write())

    @precondition(lambda self: not self.closed)
    @rule(agent_id=AGENT_IDS, version=st.integers(1, 6))
    def invalidate(self, agent_id: str, version: int) -> None:
        async def event() -> None:
            started = next(self.serial)
            try:
                await self.manager.on_invalidate(agent_id, version)
            except (*EXPECTED, Boom):
                pass
            m = self.manager
            cache = internals(m).cache
            left = [cache.current.get(agent_id), *cache.detached.get(agent_id, ())]
            self.stale.update(  # (an older runtime its own rebuild made may be served)
                id(g.agent) for g in left
                if g is not None and g.agent is not None and g.cfg_version < version
                and g.agent.born < started
            )

        self.spawn(event())

    @precondition(lambda self: not self.closed)
    @rule(agent_id=AGENT_IDS, resync=st.booleans())
    def evict(self, agent_id: str, resync: bool) -> None:
        async def drop() -> None:
            with contextlib.suppress(*EXPECTED):
                if resync:  # the invalidation subscriber's version check: agent deleted
                    await self.manager.evict(agent_id, cause=RemovalCause.RESYNC)
                else:
                    await self.manager.evict(agent_id)

        self.spawn(drop())

    def check_fresh(self, agent: Agent, stale: frozenset[int]) -> None:
        if id(agent) in stale:  # (an assert here would end in the task, unseen)
            self.stale_reads.append(agent)

    @precondition(lambda self: not self.closed)
    @rule(user=st.sampled_from(["u1", "u2"]), delay=st.integers(0, 3))
    def evict_user(self, user: str, delay: int) -> None:
        async def revoke() -> None:
            for _ in range(delay):  # land anywhere in the builds and writes in flight
                await asyncio.sleep(0)
            # no suspension between this mark and the call's return
            self.revoked[user] = next(self.serial)
            try:
                await self.manager.evict_user(user)
            except EXPECTED:
                return
            current = internals(self.manager).cache.current.values()
            assert all(gen.user_id != user for gen in current)

        self.spawn(revoke())

    @precondition(lambda self: not self.closed)
    @rule(kind=st.sampled_from(["u1", "u2", "in-use", "raises"]))
    def evict_where(self, kind: str) -> None:
        def predicate(info: EntryInfo) -> bool:
            if kind == "raises":
                raise Boom(info.agent_id)
            if kind == "in-use":
                return info.pins > 0
            return info.user_id == kind

        async def drop() -> None:
            with contextlib.suppress(*EXPECTED, Boom):
                await self.manager.evict_where(predicate)

        self.spawn(drop())

    @rule(n=st.integers(1, 6))
    def step(self, n: int) -> None:
        self.run_steps(n)

    @rule(index=st.integers(0, 50), steps=st.sampled_from([0, 2]))
    def cancel(self, index: int, steps: int) -> None:
        """Cancel a task; with ``steps=0`` the next rule's task starts in the very loop
        iteration that handles the cancellation (issue 9's race)."""
        live = [t for t in self.tasks if not t.done()]
        if live:
            victim = live[index % len(live)]
            self.cancelled.add(victim)
            victim.cancel()
            self.run_steps(steps)

    @precondition(lambda self: not self.closed)
    @rule(index=st.integers(0, 50), outcome=OUTCOMES, version=st.integers(1, 4))
    def cancel_and_race(self, index: int, outcome: str, version: int) -> None:
        """Cancel a lease and, before the loop runs again, lease the same id: the newcomer
        may meet a load whose last waiter is just leaving (issue 9)."""
        live = [t for t in self.leases if not t.done()]
        if live:
            victim = live[index % len(live)]
            self.cancelled.add(victim)
            victim.cancel()
            self.lease(self.leases[victim], None, outcome, version)

    @rule(index=st.integers(0, 50))
    def open_gate(self, index: int) -> None:
        if self.gates:
            self.gates[index % len(self.gates)].set()
            self.run_steps(2)

    @rule()
    def finish_slow_builds(self) -> None:
        self.slow.set()
        self.run_steps(4)
        self.slow = asyncio.Event()

    @rule(ms=st.sampled_from([10, 60, 100]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @precondition(lambda self: not self.closed)
    @rule()
    def sweep(self) -> None:
        """What the sweeper does: remove every expired or idle entry nobody holds."""
        internals(self.manager).store.pop_expired(self.clock.now_ms(), 10**6)
        self.run_steps(2)

    @rule()
    def quiesce(self) -> None:
        """At rest, the manager's pin count is exactly what the tasks and we still hold."""
        self.settle()
        assert self.manager.stats().pinned == sum(self.held.values())
        if self.quota is not None and not self.closed:
            store = internals(self.manager).store
            for user_id, ids in store.index_users().items():
                idle = [a for a in ids if not store.current[a].pins]
                assert len(ids) <= self.quota or len(idle) <= 1, (
                    f"user {user_id} above the quota with idle entries {idle}"
                )

    @precondition(lambda self: not self.closed)
    @rule(now=st.integers(0, 5))
    def close(self, now: int) -> None:
        if now:
            return
        self.settle()
        while self.acquired:
            self.release(0)
        self.loop.run_until_complete(self.manager.aclose(grace_ms=1_000))
        self.closed = True
        self.check_all_disposed_once()

    # ----------------------------------------------------------------- invariants

    @invariant()
    def no_spurious_cancellation(self) -> None:
        self.check_no_spurious_cancellation()

    def check_no_spurious_cancellation(self) -> None:
        spurious = [t for t in self.tasks if t.done() and t.cancelled() and t not in self.cancelled]
        assert not spurious, f"tasks nobody cancelled ended in CancelledError: {spurious}"

    @invariant()
    def nothing_older_than_a_finished_invalidation(self) -> None:
        assert not self.stale_reads, f"stale runtime handed out: {self.stale_reads}"

    @invariant()
    def disposed_at_most_once_and_never_held(self) -> None:
        counts = Counter(id(a) for a in self.disposed)
        assert all(n == 1 for n in counts.values()), "an agent was disposed twice"
        assert not self.violations, f"disposed while held: {self.violations}"
        assert not self.quota_violations, f"quota took another user's: {self.quota_violations}"
        assert not self.revoked_installs, f"installed after evict_user: {self.revoked_installs}"
        assert self.manager.stats().dispose_failures == 0

    def check_all_disposed_once(self) -> None:
        disposed = Counter(id(a) for a in self.disposed)
        assert set(disposed) == set(self.accepted), (
            sorted(a.name for i, a in self.accepted.items() if i not in disposed)
        )
        assert all(n == 1 for n in disposed.values())

    def teardown(self) -> None:
        try:
            if not self.closed:
                self.settle()
                while self.acquired:
                    self.release(0)
                self.loop.run_until_complete(self.manager.aclose(grace_ms=1_000))
                self.check_all_disposed_once()
        finally:
            for task in self.tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()


ConcurrentMachine.TestCase.settings = settings(
    max_examples=examples(0.3),  # 300 under --full
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestManagerConcurrent = ConcurrentMachine.TestCase


class QuotaConcurrentMachine(ConcurrentMachine):
    """The same interleavings with a per-user quota (issue 19)."""

    max_entries = 3
    quota = 1


QuotaConcurrentMachine.TestCase.settings = settings(
    ConcurrentMachine.TestCase.settings, max_examples=examples(0.15)  # 150 under --full
)
TestManagerConcurrentWithQuota = QuotaConcurrentMachine.TestCase
