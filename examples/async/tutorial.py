"""The keywordsai-tracing tutorial, async: a pirate joke, its audience, and its critics.

Run: python examples/async/tutorial.py

Offline by default: OpenAI and Anthropic calls go to a local stand-in server that echoes
the prompt, and each trace is printed as a tree. Set ``OPENAI_API_KEY`` and/or
``ANTHROPIC_API_KEY`` to call the real APIs, and ``KEYWORDSAI_API_KEY`` to send the traces
to KeywordsAI (see ``_setup.py``).

Three workflows, one trace each:

- ``pirate_joke_generator``: joke_creation -> pirate_joke_translation ->
  signature_generation, one after the other.
- ``audience_reaction``: audience_laughs and audience_applauds at the same time
  (``asyncio.gather``).
- ``after_the_show``: store_joke (embeddings), logging_joke (a streamed completion,
  consumed through a traced async generator) and the joke_critic agent (Anthropic, plain
  and streamed) at the same time (``asyncio.TaskGroup``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from _setup import (
    ANTHROPIC_MODEL,
    EMBEDDING_MODEL,
    OPENAI_MODEL,
    LLMClients,
    llm_clients,
    make_telemetry,
)
from openai.types.chat import ChatCompletion

from keywordsai_tracing import agent, get_client, task, workflow

llm: LLMClients  # the real APIs or the stand-in server; set by main()


def text_of(completion: ChatCompletion) -> str:
    return completion.choices[0].message.content or ""


# -- pirate_joke_generator: three steps in a row ---------------------------------------------


@task(name="joke_creation")
async def create_joke(topic: str) -> str:
    completion = await llm.openai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": f"Tell me a short joke about {topic}"}],
    )
    return text_of(completion)


@task(name="pirate_joke_translation")
async def translate_joke_to_pirate(joke: str) -> str:
    completion = await llm.openai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[
            {"role": "system", "content": "Translate the user's joke into pirate speak."},
            {"role": "user", "content": joke},
        ],
    )
    return text_of(completion)


@task(name="signature_generation")
async def generate_signature(joke: str) -> str:
    completion = await llm.openai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[
            {"role": "system", "content": f"The joke: {joke}"},
            {"role": "user", "content": "Write a one-line pirate signature for the joke."},
        ],
    )
    return text_of(completion)


@workflow(name="pirate_joke_generator")
async def joke_workflow(topic: str) -> str:
    # Attach KeywordsAI parameters to the workflow's span.
    get_client().update_current_span(keywordsai_params={"customer_identifier": "captain-hook"})
    joke = await create_joke(topic)
    pirate_joke = await translate_joke_to_pirate(joke)
    signature = await generate_signature(pirate_joke)
    return f"{pirate_joke}\n\n{signature}"


# -- audience_reaction: two tasks at once with asyncio.gather --------------------------------


async def react(joke: str, instruction: str) -> str:
    completion = await llm.openai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[
            {"role": "system", "content": f"You are in the audience. The joke was: {joke}"},
            {"role": "user", "content": instruction},
        ],
    )
    return text_of(completion)


@task(name="audience_laughs")
async def audience_laughs(joke: str) -> str:
    return await react(joke, "Laugh out loud, in one word.")


@task(name="audience_applauds")
async def audience_applauds(joke: str) -> str:
    return await react(joke, "Applaud, in one word.")


@workflow(name="audience_reaction")
async def audience_reaction(joke: str) -> tuple[str, str]:
    laughter, applause = await asyncio.gather(audience_laughs(joke), audience_applauds(joke))
    return laughter, applause


# -- after_the_show: embeddings, a stream and an agent at once in a TaskGroup ----------------


@task(name="store_joke")
async def store_joke(joke: str) -> int:
    response = await llm.openai.embeddings.create(model=EMBEDDING_MODEL, input=joke)
    return len(response.data[0].embedding)  # a real app would write it to a vector store


@task(name="logging_joke")
async def log_joke(joke: str) -> AsyncIterator[str]:
    """A traced async generator: its span covers the whole stream."""
    stream = await llm.openai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[
            {"role": "system", "content": f"You keep the ship's log. Tonight's joke: {joke}"},
            {"role": "user", "content": "Write a one-line log entry about tonight's show."},
        ],
        stream=True,
        stream_options={"include_usage": True},  # token usage on the streamed span
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


async def collect(pieces: AsyncIterator[str]) -> str:
    return "".join([piece async for piece in pieces])


@agent(name="joke_critic")
async def critique_joke(joke: str) -> str:
    message = await llm.anthropic.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=100,
        system=f"You are a comedy critic. The joke: {joke}",
        messages=[{"role": "user", "content": "Rate the joke from 1 to 10, in one line."}],
    )
    rating = "".join(block.text for block in message.content if block.type == "text")
    async with llm.anthropic.messages.stream(
        model=ANTHROPIC_MODEL,
        max_tokens=100,
        system=f"You are a comedy critic. The joke: {joke}",
        messages=[{"role": "user", "content": "Explain the joke in one sentence."}],
    ) as stream:
        explanation = "".join([text async for text in stream.text_stream])
    return f"{rating}\n{explanation}"


@workflow(name="after_the_show")
async def after_the_show(joke: str) -> dict[str, str]:
    async with asyncio.TaskGroup() as group:
        dimensions = group.create_task(store_joke(joke))
        log_entry = group.create_task(collect(log_joke(joke)))
        review = group.create_task(critique_joke(joke))
    return {
        "stored": f"{dimensions.result()}-dimensional embedding",
        "log": log_entry.result(),
        "review": review.result(),
    }


async def main() -> None:
    global llm
    # Leaving the `async with` flushes the telemetry: every span is exported (or printed).
    async with make_telemetry("pirate-jokes"), llm_clients() as llm:
        if llm.stand_in is not None:
            print("(offline: a local stand-in server answers by echoing each prompt)\n")
        joke = await joke_workflow("OpenTelemetry")
        print(f"{joke}\n")
        laughter, applause = await audience_reaction(joke)
        print(f"Audience: {laughter} / {applause}")
        for key, value in (await after_the_show(joke)).items():
            print(f"{key.capitalize()}: {value}")
        print()


if __name__ == "__main__":
    asyncio.run(main())
