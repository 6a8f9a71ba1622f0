"""A LangGraph agent served through the cache: a compiled graph plus a live HTTP client.

Run it with ``python examples/langgraph_agent.py`` (install the ``langgraph`` extra). No
network: the chat model is langchain-core's fake one, and the agent's tool is a small HTTP
service this example starts on a loopback port.

What the cache holds per agent: the compiled graph (the runtime callers use) and the agent
object that owns the graph's open resources, here an ``httpx.AsyncClient`` with its
connection pool. Building both is the slow part (in production: LLM clients, MCP sessions,
tools), which is why they are cached; disposal closes the client, so a configuration change
or an eviction never leaks a connection pool.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict
from urllib.parse import unquote_plus, urlsplit

import httpx
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AnyMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from snak_runtime import AgentRuntimeManager, CacheStats, GuardConfig, RuntimeSeed


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    context: str


Graph = CompiledStateGraph[ChatState, None, ChatState, ChatState]


# ---------------------------------------------------------------------------- the tool service


@dataclass(slots=True)
class ToolServer:
    """A loopback HTTP service the agents call (a stand-in for a search or MCP server)."""

    requests: int = 0
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one connection serves a client's requests in turn
                head = await reader.readuntil(b"\r\n\r\n")
                target = urlsplit(head.split(b" ", 2)[1].decode())
                self.requests += 1
                # decoded: httpx releases differ in how they encode a space (+ or %20)
                query = unquote_plus(target.query)
                body = json.dumps({"context": f"docs for {target.path}?{query}"}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its connection
        finally:
            writer.close()


# ---------------------------------------------------------------------------- the agent


@dataclass(slots=True)
class GraphAgent:
    """What the cache owns and disposes: the graph's open resources."""

    agent_id: str
    cfg_version: int
    http: httpx.AsyncClient
    configs: AgentConfigs

    async def aclose(self) -> None:  # DefaultDisposer calls aclose()
        await self.http.aclose()
        self.configs.open_clients -= 1


@dataclass(slots=True)
class AgentConfigs:
    """Agent configurations (a database in snak): version, owner and persona."""

    tool_url: str
    versions: dict[str, int] = field(default_factory=lambda: {"research-bot": 1})
    owners: dict[str, str] = field(default_factory=lambda: {"research-bot": "alice"})
    builds: int = 0
    open_clients: int = 0  # counters, not a list of what was built: memory stays bounded

    async def build(self, agent_id: str) -> RuntimeSeed[Graph, GraphAgent] | None:
        """Compile the agent's graph around a fresh HTTP client; ``None`` for unknown ids."""
        if agent_id not in self.versions:
            return None
        version = self.versions[agent_id]
        http = httpx.AsyncClient(base_url=self.tool_url, timeout=5.0)
        self.builds += 1
        self.open_clients += 1
        model = FakeListChatModel(responses=[f"{agent_id} v{version}: here is what I found"])

        async def lookup(state: ChatState) -> dict[str, Any]:
            question = str(state["messages"][-1].content)
            response = await http.get("/search", params={"q": question})
            response.raise_for_status()
            return {"context": response.json()["context"]}

        async def respond(state: ChatState) -> dict[str, Any]:
            prompt = [SystemMessage(f"Context: {state['context']}"), *state["messages"]]
            return {"messages": [await model.ainvoke(prompt)]}

        builder = StateGraph(ChatState)
        builder.add_node("lookup", lookup)
        builder.add_node("respond", respond)
        builder.add_edge(START, "lookup")
        builder.add_edge("lookup", "respond")
        builder.add_edge("respond", END)
        graph: Graph = builder.compile()

        async def rebuild() -> RuntimeSeed[Graph, GraphAgent] | None:
            return await self.build(agent_id)

        return RuntimeSeed(
            agent_id=agent_id,
            user_id=self.owners[agent_id],
            cfg_version=version,
            runtime=graph,
            rebuild=rebuild,
            agent=GraphAgent(agent_id, version, http, self),
        )


async def ask(
    manager: AgentRuntimeManager[Graph, GraphAgent],
    configs: AgentConfigs,
    agent_id: str,
    user_id: str,
    question: str,
) -> tuple[str, str]:
    """Run the agent's cached graph (built on a miss); its answer and the tool's context."""
    async with manager.lease(agent_id, user_id=user_id, build=configs.build) as lease:
        result = await lease.runtime.ainvoke(
            {"messages": [HumanMessage(question)], "context": ""}
        )
    return str(result["messages"][-1].content), result["context"]


@dataclass(frozen=True, slots=True)
class DemoResult:
    stats: CacheStats
    answers: list[str]
    tool_requests: int
    builds: int
    open_clients_before_close: int
    open_clients: int


async def main() -> DemoResult:
    tools = ToolServer()
    await tools.start()
    configs = AgentConfigs(tool_url=tools.url)
    manager: AgentRuntimeManager[Graph, GraphAgent] = AgentRuntimeManager(
        guards=GuardConfig(max_entries=8, max_ttl_ms=60_000)
    )
    answers: list[str] = []
    try:
        async with manager:
            # 1. The first question builds the graph and its client; the next ones reuse them.
            for question in ("what is snak?", "and its cache?"):
                answer, context = await ask(manager, configs, "research-bot", "alice", question)
                print(f"{answer!r}  (context: {context!r})")
                answers.append(answer)

            # 2. A configuration change: the rebuild compiles a new graph with a new client,
            #    and the old client is closed once no request uses it.
            configs.versions["research-bot"] = 2
            await manager.on_invalidate("research-bot", 2)
            answer, _ = await ask(manager, configs, "research-bot", "alice", "anything new?")
            print(f"after the change: {answer!r}")
            answers.append(answer)
            await manager.wait_for_disposals()
            open_before_close = configs.open_clients
            print(f"built {configs.builds} graphs; open HTTP clients: {open_before_close}")
        # 3. aclose() (the end of `async with`) disposed the cached agent: its client too.
    finally:
        await tools.aclose()
    print(f"after shutdown: open HTTP clients: {configs.open_clients};"
          f" tool requests served: {tools.requests}")
    stats = manager.stats()
    print(f"hits={stats.hits} misses={stats.misses} loads={stats.loads} "
          f"rebuilds={stats.rebuilds} disposals={stats.disposals}")
    return DemoResult(
        stats, answers, tools.requests, configs.builds, open_before_close, configs.open_clients
    )


if __name__ == "__main__":
    asyncio.run(main())
