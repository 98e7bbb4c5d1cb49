"""Run every example offline and check the spans each one produced.

Run (from anywhere): python examples/run_examples.py [-v] [NAME ...]

Each example runs as a subprocess with ``KEYWORDSAI_EXPORTER=jsonl:<tmpfile>`` and without
``KEYWORDSAI_API_KEY`` / ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``, so its LLM calls go to
the local stand-in server and its spans to that file. The checker then reads the spans
back (``keywordsai_tracing.exporters.read_spans``) and checks names, parenting, the LLM
spans' model and token usage, and KeywordsAI parameters. The pytest example module is run
with pytest. ``NAME`` selects examples by file name; ``-v`` prints their output. Exits 1 if
anything failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keywordsai_tracing.exporters import read_spans

ROOT = Path(__file__).resolve().parent.parent
ASYNC = ROOT / "examples" / "async"
TIMEOUT = 180.0
KEEP_OFFLINE = ("KEYWORDSAI_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OTEL_SDK_DISABLED")
LLM_SPANS = {"openai.chat", "openai.embeddings", "anthropic.chat", "anthropic.messages.create"}
CUSTOMER = "keywordsai.customer_params.customer_identifier"
ERROR = 2  # OTLP status code


# -- spans read back from the JSON-lines file -----------------------------------------------


def _decode(value: dict[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` as a Python value."""
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_decode(item) for item in value["arrayValue"].get("values", [])]
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    return None


@dataclass(frozen=True)
class Span:
    name: str
    span_id: str
    parent_id: str
    trace_id: str
    attributes: dict[str, Any]
    is_error: bool
    events: list[str]

    @classmethod
    def from_otlp(cls, raw: dict[str, Any]) -> Span:
        return cls(
            name=raw.get("name", ""),
            span_id=raw.get("spanId", ""),
            parent_id=raw.get("parentSpanId", ""),
            trace_id=raw.get("traceId", ""),
            attributes={a["key"]: _decode(a.get("value", {})) for a in raw.get("attributes", [])},
            is_error=raw.get("status", {}).get("code") == ERROR,
            events=[event.get("name", "") for event in raw.get("events", [])],
        )


@dataclass
class Checker:
    """Collects what is wrong with the spans of one example."""

    spans: list[Span]
    problems: list[str] = field(default_factory=list)

    def expect(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    def named(self, name: str) -> list[Span]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str) -> Span | None:
        found = self.named(name)
        self.expect(len(found) == 1, f"expected one {name!r} span, found {len(found)}")
        return found[0] if len(found) == 1 else None

    def children(self, parent: Span | None, name: str, count: int = 1) -> list[Span]:
        """The ``name`` spans whose parent is ``parent``: exactly ``count`` expected."""
        if parent is None:
            return []
        found = [s for s in self.named(name) if s.parent_id == parent.span_id]
        self.expect(
            len(found) == count,
            f"expected {count} {name!r} span(s) under {parent.name!r}, found {len(found)}",
        )
        return found

    def root(self, name: str) -> Span | None:
        span = self.one(name)
        if span is not None:
            self.expect(not span.parent_id, f"{name!r} should be the root of its trace")
        return span

    def customer(self, span: Span | None, expected: str) -> None:
        if span is not None:
            actual = span.attributes.get(CUSTOMER)
            self.expect(actual == expected, f"{span.name}: {CUSTOMER} is {actual!r}")

    def llm_spans_complete(self) -> None:
        """Every LLM span names its model and counts tokens, and is inside an entity."""
        for span in self.spans:
            if span.name not in LLM_SPANS:
                continue
            attributes = span.attributes
            where = f"{span.name} (in {attributes.get('traceloop.entity.path', '?')})"
            self.expect(bool(attributes.get("gen_ai.request.model")), f"{where}: no model")
            self.expect(
                isinstance(attributes.get("gen_ai.usage.input_tokens"), int),
                f"{where}: no gen_ai.usage.input_tokens",
            )
            if span.name != "openai.embeddings":
                self.expect(
                    isinstance(attributes.get("gen_ai.usage.output_tokens"), int),
                    f"{where}: no gen_ai.usage.output_tokens",
                )
            self.expect(
                bool(attributes.get("traceloop.workflow.name")), f"{where}: no workflow name"
            )

    def no_errors_except(self, *names: str) -> None:
        for span in self.spans:
            if span.is_error and span.name not in names:
                self.problems.append(f"{span.name}: unexpected ERROR status")


# -- what each example must produce -----------------------------------------------------------


def check_quickstart(c: Checker) -> None:
    workflow = c.root("joke_workflow.workflow")
    for name in ("joke_creation.task", "signature_generation.task", "audience_reaction.task"):
        c.children(workflow, name)
    c.customer(workflow, "demo-user")
    c.no_errors_except()


def check_tutorial(c: Checker) -> None:
    generator = c.root("pirate_joke_generator.workflow")
    c.customer(generator, "captain-hook")
    for name in ("joke_creation.task", "pirate_joke_translation.task", "signature_generation.task"):
        for step in c.children(generator, name):
            c.children(step, "openai.chat")

    audience = c.root("audience_reaction.workflow")
    for name in ("audience_laughs.task", "audience_applauds.task"):
        for step in c.children(audience, name):  # both under the same workflow span
            c.children(step, "openai.chat")

    show = c.root("after_the_show.workflow")
    for step in c.children(show, "store_joke.task"):
        c.children(step, "openai.embeddings")
    for step in c.children(show, "logging_joke.task"):  # a traced async generator
        for chat in c.children(step, "openai.chat"):
            c.expect(chat.attributes.get("gen_ai.is_streaming") is True, "log: not streamed")
    for critic in c.children(show, "joke_critic.agent"):
        # Each Anthropic call gets two spans: the instrumentor's anthropic.chat and the
        # anthropic SDK's own anthropic.messages.create. Only the latter says which call
        # streamed: the instrumentor (0.62) sets no gen_ai.is_streaming for messages.stream().
        c.children(critic, "anthropic.chat", 2)
        sdk_spans = c.children(critic, "anthropic.messages.create", 2)
        streamed = [s for s in sdk_spans if s.attributes.get("gen_ai.request.stream") is True]
        c.expect(len(streamed) == 1, "joke_critic: expected one streamed Anthropic call")
    c.llm_spans_complete()
    c.no_errors_except()


def check_agent_loop(c: Checker) -> None:
    planner = c.root("trip_planner.agent")
    for step in c.children(planner, "plan.task", 2):  # the first plan, and the re-plan
        c.children(step, "openai.chat")
    for name in ("weather.tool", "flights.tool", "hostels.tool"):
        c.children(planner, name)
    for tips in c.children(planner, "local_tips.tool"):
        c.children(tips, "openai.chat")
    for failed in c.children(planner, "hotels.tool"):
        c.expect(failed.is_error, "hotels.tool: status should be ERROR")
        c.expect("exception" in failed.events, "hotels.tool: no exception event")
    for step in c.children(planner, "answer.task"):
        c.children(step, "openai.chat")
    c.llm_spans_complete()
    c.no_errors_except("hotels.tool")


def check_fastapi_app(c: Checker) -> None:
    joke = c.one("joke_request.workflow")
    c.customer(joke, "alice")
    for step in c.children(joke, "joke_creation.task"):
        c.children(step, "openai.chat")
    streamed = c.one("joke_stream_request.workflow")  # a traced async generator
    c.customer(streamed, "bob")
    c.children(streamed, "openai.chat")
    embedding = c.one("embedding_request.workflow")
    c.customer(embedding, "anonymous")
    for step in c.children(embedding, "embed.task"):
        c.children(step, "openai.embeddings")
    c.llm_spans_complete()
    c.no_errors_except()


@dataclass(frozen=True)
class Example:
    script: str
    check: Callable[[Checker], None] | None  # None: a pytest module

    @property
    def path(self) -> Path:
        return ASYNC / self.script


EXAMPLES = [
    Example("quickstart.py", check_quickstart),
    Example("tutorial.py", check_tutorial),
    Example("agent_loop.py", check_agent_loop),
    Example("fastapi_app.py", check_fastapi_app),
    Example("test_traced_code.py", None),
    Example("test_with_plugin.py", None),
]


# -- running ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    summary: str = ""
    problems: list[str] = field(default_factory=list)
    output: str = ""


def offline_environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in KEEP_OFFLINE}
    env.pop("KEYWORDSAI_EXPORTER", None)
    env.update(extra)
    return env


def run(command: list[str], env: dict[str, str], outcome: Outcome) -> bool:
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        outcome.output = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else part or ""
            for part in (exc.stdout, exc.stderr)
        )
        outcome.problems.append(f"did not finish within {TIMEOUT:g} s")
        return False
    outcome.output = done.stdout + done.stderr
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:]) or "(nothing on stderr)"
        outcome.problems.append(f"exit code {done.returncode}; end of stderr:\n{tail}")
        return False
    if "Traceback" in done.stderr:
        outcome.problems.append("exit code 0, but a traceback was printed on stderr")
    return True


def run_script(example: Example) -> Outcome:
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="keywordsai-examples-") as tmp:
        spans_file = Path(tmp) / "spans.jsonl"
        env = offline_environment(KEYWORDSAI_EXPORTER=f"jsonl:{spans_file}")
        if not run([sys.executable, str(example.path)], env, outcome):
            return outcome
        if not spans_file.exists():
            outcome.problems.append(f"no span was written to {spans_file}")
            return outcome
        spans = [Span.from_otlp(raw) for raw in read_spans(spans_file)]
    assert example.check is not None
    checker = Checker(spans)
    example.check(checker)
    outcome.problems += checker.problems
    traces = len({span.trace_id for span in spans})
    llm = sum(span.name in LLM_SPANS for span in spans)
    outcome.summary = f"{len(spans)} spans in {traces} trace(s), {llm} LLM spans"
    return outcome


def run_pytest(example: Example) -> Outcome:
    outcome = Outcome()
    command = [sys.executable, "-m", "pytest", str(example.path), "-p", "no:cacheprovider", "-q"]
    if run(command, offline_environment(), outcome):
        passed = re.findall(r"\d+ passed[^\n]*", outcome.output)
        outcome.summary = passed[-1] if passed else "pytest passed"
    return outcome


def selected(names: list[str]) -> Iterator[Example]:
    unknown = set(names) - {e.script for e in EXAMPLES} - {e.path.stem for e in EXAMPLES}
    if unknown:
        sys.exit(f"unknown example(s): {', '.join(sorted(unknown))}")
    for example in EXAMPLES:
        if not names or example.script in names or example.path.stem in names:
            yield example


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="example file names (default: all)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print their output")
    args = parser.parse_args()
    failed = []
    for example in selected(args.names):
        started = time.monotonic()
        outcome = run_script(example) if example.check else run_pytest(example)
        elapsed = time.monotonic() - started
        status = "FAIL" if outcome.problems else "ok  "
        print(f"{status} {example.script:<22} {elapsed:5.1f} s  {outcome.summary}", flush=True)
        if args.verbose or outcome.problems:
            for line in outcome.output.rstrip().splitlines():
                print(f"     | {line}")
        for problem in outcome.problems:
            print("     - " + problem.replace("\n", "\n       "))
        if outcome.problems:
            failed.append(example.script)
    if failed:
        print(f"\n{len(failed)} example(s) failed: {', '.join(failed)}")
        return 1
    print("\nevery example ran offline and produced the expected spans")
    return 0


if __name__ == "__main__":
    sys.exit(main())
