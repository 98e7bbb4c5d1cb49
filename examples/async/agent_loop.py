"""An async agent loop: plan, run tools concurrently, survive a failing tool, answer.

Run: python examples/async/agent_loop.py

The ``trip_planner`` agent asks the LLM which tools to run, runs them at the same time in
an anyio task group, and looks at the results. The ``hotels`` tool always fails: its span
records the exception with status ERROR, the agent notes the failure and plans again with
the ``hostels`` fallback, then writes its answer. Offline by default, like every example
here (see ``_setup.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
from _setup import OPENAI_MODEL, LLMClients, llm_clients, make_telemetry

from keywordsai_tracing import agent, task, tool

llm: LLMClients  # the real APIs or the stand-in server; set by main()
MAX_STEPS = 3


class ToolError(Exception):
    """A tool could not do its job; the agent can try something else."""


async def ask(system: str, prompt: str) -> str:
    completion = await llm.openai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
    )
    return completion.choices[0].message.content or ""


# -- tools -------------------------------------------------------------------------------------


@tool(name="weather")
async def weather(city: str) -> str:
    await anyio.sleep(0.02)  # stands for a weather API call
    return f"sunny in {city}, 24 °C"


@tool(name="flights")
async def flights(city: str) -> str:
    await anyio.sleep(0.03)
    return f"3 direct flights to {city} on Friday"


@tool(name="hotels")
async def hotels(city: str) -> str:
    await anyio.sleep(0.01)
    raise ToolError(f"hotel search for {city} timed out")


@tool(name="hostels")
async def hostels(city: str) -> str:
    await anyio.sleep(0.01)
    return f"2 hostels with free beds in {city}"


@tool(name="local_tips")
async def local_tips(city: str) -> str:
    return await ask("You are a local guide.", f"One tip for a weekend in {city}, in one line.")


TOOLS: dict[str, Callable[[str], Awaitable[str]]] = {
    "weather": weather,
    "flights": flights,
    "hotels": hotels,
    "hostels": hostels,
    "local_tips": local_tips,
}
FALLBACKS = {"hotels": "hostels"}


# -- the agent ---------------------------------------------------------------------------------


@task(name="plan")
async def plan(city: str, options: list[str], notes: dict[str, str]) -> list[str]:
    reply = await ask(
        "You plan trips with tools. Answer with tool names only.",
        f"Weekend in {city}. Known so far: {notes or 'nothing'}. "
        f"Which of these tools should run now: {', '.join(options)}?",
    )
    return [name for name in options if name in reply] or options


async def run_tool(name: str, city: str, notes: dict[str, str]) -> None:
    try:
        notes[name] = await TOOLS[name](city)
    except ToolError as exc:  # recorded on the tool's span (status ERROR) before it got here
        notes[name] = f"FAILED: {exc}"


async def run_tools(names: list[str], city: str, notes: dict[str, str]) -> list[str]:
    """Run the tools concurrently; return the names of those that failed."""
    async with anyio.create_task_group() as group:
        for name in names:
            group.start_soon(run_tool, name, city, notes)
    return [name for name in names if notes[name].startswith("FAILED")]


@task(name="answer")
async def answer(city: str, notes: dict[str, str]) -> str:
    facts = "\n".join(f"- {name}: {notes[name]}" for name in TOOLS if name in notes)
    return await ask("Summarise the trip plan in two lines.", f"Weekend in {city}:\n{facts}")


@agent(name="trip_planner")
async def trip_planner(city: str) -> str:
    notes: dict[str, str] = {}
    options = ["weather", "flights", "hotels", "local_tips"]
    for step in range(1, MAX_STEPS + 1):
        chosen = await plan(city, options, notes)
        failed = await run_tools(chosen, city, notes)
        print(f"step {step}: ran {', '.join(chosen)}; failed: {', '.join(failed) or 'none'}")
        options = [FALLBACKS[name] for name in failed if name in FALLBACKS]
        if not options:
            break
    return await answer(city, notes)


async def main() -> None:
    global llm
    async with make_telemetry("trip-planner"), llm_clients() as llm:
        print(await trip_planner("Lisbon"))
        print()


if __name__ == "__main__":
    asyncio.run(main())
