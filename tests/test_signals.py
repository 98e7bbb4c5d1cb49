"""SIGTERM delivers queued spans and still ends the process the way SIGTERM does."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import KeywordsAITelemetry
from tests.otlp_receiver import OTLPReceiver

SCRIPT = """
import asyncio, os, signal, sys
from keywordsai_tracing import KeywordsAITelemetry, task, tool

telemetry = KeywordsAITelemetry(api_key="k", base_url=sys.argv[1], instruments=set(),
                                schedule_delay=60)

@task
async def work(i):
    return i

async def main():
    await asyncio.gather(*(work(i) for i in range(int(sys.argv[2]))))
    signal.raise_signal(signal.SIGTERM)  # as uvicorn does, from inside the loop
    await asyncio.sleep(30)

@tool
def sync_work(i):
    return i

if sys.argv[3] == "sync":
    for i in range(int(sys.argv[2])):
        sync_work(i)
    os.kill(os.getpid(), signal.SIGTERM)
    import time; time.sleep(30)
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize("where", ["in-loop", "sync"])
def test_sigterm_flushes_then_dies_of_sigterm(
    threaded_otlp_receiver: OTLPReceiver, where: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), threaded_otlp_receiver.url, "25", where],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert len(threaded_otlp_receiver.wait_for_spans(25, timeout=5)) == 25
    assert "Traceback" not in result.stderr


def test_handler_only_replaces_the_default_disposition() -> None:
    def theirs(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGTERM, theirs)
    try:
        telemetry = KeywordsAITelemetry(custom_exporter=InMemorySpanExporter(), instruments=set())
        assert signal.getsignal(signal.SIGTERM) is theirs
        telemetry.shutdown()
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_installed_while_active_and_removed_on_shutdown() -> None:
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    telemetry = KeywordsAITelemetry(custom_exporter=InMemorySpanExporter(), instruments=set())
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    telemetry.shutdown()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize("via_env", [False, True])
def test_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, via_env: bool) -> None:
    if via_env:
        monkeypatch.setenv("KEYWORDSAI_FLUSH_ON_SIGTERM", "false")
    KeywordsAITelemetry(
        custom_exporter=InMemorySpanExporter(),
        instruments=set(),
        flush_on_sigterm=None if via_env else False,
    )
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
