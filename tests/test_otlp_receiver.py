"""The test receiver's own fault modes: what the delivery tests rely on, checked with
plain HTTP clients (aiohttp, raw sockets), without the SDK."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import aiohttp
import pytest

from tests.otlp_receiver import Fault, OTLPReceiver, hang

JSON = {"Content-Type": "application/json"}


def body(*span_ids: str) -> bytes:
    """An OTLP/JSON request carrying one minimal span per id (16 hex digits each)."""
    spans = [
        {
            "traceId": "0" * 31 + "1",
            "spanId": span_id,
            "name": f"span-{span_id}",
            "startTimeUnixNano": "1",
            "endTimeUnixNano": "2",
        }
        for span_id in span_ids
    ]
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


async def post(url: str, data: bytes, timeout: float = 10.0) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.post(url, data=data, headers=JSON) as response,
    ):
        return response.status


def port_of(receiver: OTLPReceiver) -> int:
    return int(receiver.url.split(":")[2].split("/")[0])


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


@pytest.mark.asyncio
async def test_distinct_spans_count_each_delivered_span_once_and_duplicates_the_copies(
    otlp_receiver: OTLPReceiver,
) -> None:
    otlp_receiver.script(Fault(), Fault(status=503), Fault())
    assert await post(otlp_receiver.url, body("00000000000000a1", "00000000000000a2")) == 200
    assert await post(otlp_receiver.url, body("00000000000000a3")) == 503  # not delivered
    assert await post(otlp_receiver.url, body("00000000000000a2")) == 200  # a copy
    assert sorted(otlp_receiver.distinct_spans) == ["00000000000000a1", "00000000000000a2"]
    assert otlp_receiver.duplicates == 1
    assert len(otlp_receiver.spans) == 3


@pytest.mark.asyncio
async def test_refuse_then_accept_on_the_same_port_from_the_receivers_own_loop(
    otlp_receiver: OTLPReceiver,
) -> None:
    url, port = otlp_receiver.url, port_of(otlp_receiver)
    # A kept-alive connection, idle when the collector goes down, is closed by it.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = body("00000000000000b1")
    writer.write(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    otlp_receiver.refuse()
    listening_while_refusing = otlp_receiver.listening
    assert await refused(port)
    async with asyncio.timeout(10):
        while await reader.read(65536):  # the rest of the answer, then end of stream
            pass
    writer.close()
    otlp_receiver.accept()
    assert (listening_while_refusing, otlp_receiver.listening) == (False, True)
    assert otlp_receiver.url == url
    assert await post(url, body("00000000000000b2")) == 200
    assert sorted(otlp_receiver.distinct_spans) == ["00000000000000b1", "00000000000000b2"]


def test_refuse_then_accept_from_another_thread(threaded_otlp_receiver: OTLPReceiver) -> None:
    receiver = threaded_otlp_receiver
    port = port_of(receiver)
    for _ in range(2):
        receiver.refuse()
        receiver.refuse()  # idempotent
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        receiver.accept()
        receiver.accept()
        assert asyncio.run(post(receiver.url, body("00000000000000c1"))) == 200
    assert receiver.duplicates == 1


@pytest.mark.asyncio
async def test_a_request_whose_client_gave_up_is_recorded_unanswered(
    otlp_receiver: OTLPReceiver,
) -> None:
    otlp_receiver.script(hang(), Fault(delay=30))
    for _ in range(2):
        with pytest.raises(asyncio.TimeoutError):
            await post(otlp_receiver.url, body("00000000000000d1"), timeout=0.2)
    await otlp_receiver.await_requests(2)
    assert [r.status for r in otlp_receiver.requests] == [0, 0]
    assert otlp_receiver.spans == []
    assert otlp_receiver.in_progress == 0


def test_stopping_ends_held_requests_unanswered(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BaseException] = []

    def client(url: str) -> None:
        try:
            asyncio.run(post(url, body("00000000000000e1"), timeout=30))
        except BaseException as exc:
            errors.append(exc)

    with OTLPReceiver().running_in_thread() as receiver:
        receiver.default = hang()
        thread = threading.Thread(target=client, args=(receiver.url,))
        thread.start()
        receiver.wait_until(lambda: receiver.in_progress == 1, what="a held request")
    # The with block ended while the request was held: it was cut off, not left waiting
    # for the client's 30 s timeout, and recorded as unanswered.
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [type(e) for e in errors] == [aiohttp.ServerDisconnectedError]
    assert [r.status for r in receiver.requests] == [0]
    assert "Error handling request" not in caplog.text
