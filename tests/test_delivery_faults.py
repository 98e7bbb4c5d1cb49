"""Issue 9: delivery that tells the truth, as a new user meets it (collector faults at
flush time, loops that close or stop, `shutdown()` retrying within its budget).

Each test runs the public API (`KeywordsAITelemetry`, the decorators, `get_client()`)
against the real test receiver over loopback. A span is delivered when the receiver
answered 2xx to a request carrying it; `distinct_spans` / `duplicates` say whether each
arrived exactly once. Counters are checked against the contract's ledger identity
``queued + in_flight + delivered + dropped == ended``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keywordsai_tracing import KeywordsAITelemetry, get_client, task, workflow
from tests.otlp_receiver import Fault, OTLPReceiver, hang

RETRY_AFTER_1 = {"Retry-After": "1"}


@task(name="load")
def load() -> int:
    return 2


@task(name="store")
def store(value: int) -> int:
    return value * 2


@workflow(name="sync_job")
def sync_job() -> int:
    """Three spans: the workflow and its two tasks."""
    return store(load())


@task(name="fetch")
async def fetch(i: int) -> int:
    await asyncio.sleep(0)
    return i


@workflow(name="async_job")
async def async_job(tasks: int = 3) -> list[int]:
    """``tasks + 1`` spans: the workflow and its tasks."""
    return list(await asyncio.gather(*(fetch(i) for i in range(tasks))))


def telemetry_for(receiver: OTLPReceiver, **settings: Any) -> KeywordsAITelemetry:
    return KeywordsAITelemetry(base_url=receiver.url, instruments=set(), **settings)


def assert_ledger(stats: Any, *, ended: int, delivered: int) -> None:
    """The contract's identity, then how many spans ended and were delivered."""
    assert stats.queued + stats.in_flight + stats.delivered + stats.dropped == stats.ended, stats
    assert (stats.ended, stats.delivered) == (ended, delivered), stats


def script_ending_with_seven_spans() -> None:
    """A sync workflow with two tasks, then ``asyncio.run`` of one with three."""
    assert sync_job() == 4
    assert asyncio.run(async_job()) == [0, 1, 2]


# -- a. a brief outage at the end of a script ----------------------------------------------


@pytest.mark.parametrize(
    "outage",
    [
        [Fault(status=503, headers=RETRY_AFTER_1)] * 3,
        [Fault(status=429, headers=RETRY_AFTER_1)] * 2,
    ],
    ids=["503-retry-after-1-three-times", "429-retry-after-1-twice"],
)
def test_brief_outage_at_the_end_of_a_script_is_delivered_by_flush(
    threaded_otlp_receiver: OTLPReceiver, outage: list[Fault]
) -> None:
    receiver = threaded_otlp_receiver
    receiver.script(*outage)
    telemetry = telemetry_for(receiver)
    script_ending_with_seven_spans()
    flushed = get_client().flush()
    assert len(receiver.distinct_spans) == 7, f"{len(receiver.distinct_spans)} of 7 delivered"
    assert receiver.duplicates == 0
    assert flushed is True
    assert receiver.script_left == 0  # the outage was met, and outlasted
    assert_ledger(telemetry.stats, ended=7, delivered=7)
    telemetry.shutdown()


@pytest.mark.parametrize("where", ["in-the-work-loop", "in-a-loop-of-its-own"])
def test_brief_outage_at_the_end_of_a_script_is_delivered_by_aflush(
    threaded_otlp_receiver: OTLPReceiver, where: str
) -> None:
    receiver = threaded_otlp_receiver
    receiver.script(*[Fault(status=503, headers=RETRY_AFTER_1)] * 2)
    telemetry = telemetry_for(receiver)
    assert sync_job() == 4

    async def work_then_flush() -> bool:
        await async_job()
        return await telemetry.aflush()

    if where == "in-the-work-loop":
        flushed = asyncio.run(work_then_flush())
    else:  # the work's loop closed before the flush started
        asyncio.run(async_job())
        flushed = asyncio.run(telemetry.aflush())
    assert len(receiver.distinct_spans) == 7, f"{len(receiver.distinct_spans)} of 7 delivered"
    assert receiver.duplicates == 0
    assert flushed is True
    assert_ledger(telemetry.stats, ended=7, delivered=7)
    telemetry.shutdown()


def test_a_flush_that_cannot_deliver_says_so(threaded_otlp_receiver: OTLPReceiver) -> None:
    # The other side of "flush keeps its word": the outage outlasts the flush's timeout.
    receiver = threaded_otlp_receiver
    receiver.default = Fault(status=503, headers=RETRY_AFTER_1)
    telemetry = telemetry_for(receiver)
    script_ending_with_seven_spans()
    assert telemetry.flush(timeout=1.5) is False
    assert receiver.spans == []
    stats = telemetry.stats
    assert stats.queued + stats.in_flight + stats.delivered + stats.dropped == stats.ended, stats
    assert stats.delivered == 0
    receiver.default = Fault()
    assert telemetry.flush() is True  # nothing was given up for the first flush's deadline
    assert len(receiver.distinct_spans) == 7
    assert_ledger(telemetry.stats, ended=7, delivered=7)
    telemetry.shutdown()


# -- d. shutdown() keeps retrying within its budget ---------------------------------------


def test_shutdown_keeps_retrying_within_its_budget(threaded_otlp_receiver: OTLPReceiver) -> None:
    receiver = threaded_otlp_receiver
    receiver.script(*[Fault(status=503, headers=RETRY_AFTER_1)] * 2)
    telemetry = telemetry_for(receiver)
    for _ in range(3):
        sync_job()
    telemetry.shutdown()  # the default budget (5 s) holds two Retry-After: 1
    assert len(receiver.distinct_spans) == 9, f"{len(receiver.distinct_spans)} of 9 delivered"
    assert receiver.duplicates == 0
    stats = telemetry.stats
    assert_ledger(stats, ended=9, delivered=9)
    assert stats.deadline == 0


# -- c. a loop that stopped without closing -----------------------------------------------


def close_like_asyncio_run(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on ``loop`` and close it, as ``asyncio.run`` would."""
    tasks = asyncio.all_tasks(loop)
    for pending in tasks:
        pending.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def test_spans_on_a_loop_that_stopped_without_closing_are_exported(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    receiver = threaded_otlp_receiver
    telemetry = telemetry_for(receiver, schedule_delay=0.5)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(async_job(20)) == list(range(20))  # 21 spans
        # The loop now sits idle, neither running nor closed. About two schedule delays
        # (1 s) is the contract; 5 s leaves room for a loaded machine.
        try:
            receiver.wait_for_spans(21, timeout=5)
        except TimeoutError:
            pytest.fail(f"{len(receiver.distinct_spans)} of 21 exported from an idle loop")
        assert receiver.duplicates == 0
        # Received is not yet answered: the flush waits for the answer to be counted.
        assert telemetry.flush(timeout=5) is True
        assert receiver.duplicates == 0
        assert_ledger(telemetry.stats, ended=21, delivered=21)
    finally:
        close_like_asyncio_run(loop)
    telemetry.shutdown()


# -- f. a loop closing with a batch in flight ---------------------------------------------


def full_batch_in_flight(receiver: OTLPReceiver) -> list[int]:
    """``asyncio.run`` of a workflow whose 6 spans fill a batch (max_export_batch_size=6),
    returning once the receiver holds that batch's request."""

    async def main() -> list[int]:
        values = await async_job(5)
        await receiver.await_until(lambda: receiver.in_progress == 1, what="request in flight")
        return values

    return asyncio.run(main())


def test_a_request_in_flight_when_asyncio_run_returns_completes_and_is_not_resent(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    receiver = threaded_otlp_receiver
    receiver.script(Fault(delay=0.1))  # answered shortly after the loop starts closing
    telemetry = telemetry_for(receiver, max_export_batch_size=6)
    assert full_batch_in_flight(receiver) == list(range(5))
    assert get_client().flush() is True
    assert len(receiver.distinct_spans) == 6
    assert receiver.duplicates == 0
    # Within the drain window the request was waited for, not cut off and sent again.
    assert [r.status for r in receiver.requests] == [200]
    stats = telemetry.stats
    assert_ledger(stats, ended=6, delivered=6)
    assert stats.resent == 0
    telemetry.shutdown()


def test_a_request_hanging_when_asyncio_run_returns_is_resent_from_the_private_thread(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    receiver = threaded_otlp_receiver
    receiver.script(hang())  # the loop cannot wait for this one
    telemetry = telemetry_for(receiver, max_export_batch_size=6)
    assert full_batch_in_flight(receiver) == list(range(5))
    assert get_client().flush() is True
    assert len(receiver.distinct_spans) == 6
    stats = telemetry.stats
    assert_ledger(stats, ended=6, delivered=6)
    assert stats.resent == 6  # at-least-once, and counted
    telemetry.shutdown()


def test_a_batch_refused_with_retry_after_at_loop_close_is_delivered_later(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    receiver = threaded_otlp_receiver
    receiver.script(*[Fault(status=503, headers=RETRY_AFTER_1)] * 2)
    telemetry = telemetry_for(receiver, schedule_delay=60)
    assert asyncio.run(async_job(5)) == list(range(5))  # first attempt as the loop closes
    assert get_client().flush() is True
    assert receiver.script_left == 0  # the 503s were met
    assert len(receiver.distinct_spans) == 6, f"{len(receiver.distinct_spans)} of 6 delivered"
    assert receiver.duplicates == 0
    stats = telemetry.stats
    assert_ledger(stats, ended=6, delivered=6)
    assert stats.dropped == 0
    assert stats.retries >= 2
    telemetry.shutdown()
