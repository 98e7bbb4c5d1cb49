"""The retry policy: which outcomes retry, backoff growth and jitter, Retry-After, deadline."""

from __future__ import annotations

import email.utils

import pytest

from keywordsai_tracing._retry import (
    RETRYABLE_STATUSES,
    RetryPolicy,
    is_retryable,
    parse_retry_after,
)

NOW = 1_700_000_000.0


def policy(random_value: float = 1.0, monotonic: float = 100.0, **kwargs: float) -> RetryPolicy:
    return RetryPolicy(
        random=lambda: random_value,
        clock=lambda: monotonic,
        wall_clock=lambda: NOW,
        **kwargs,
    )


@pytest.mark.parametrize("status", [429, 502, 503, 504, None])
def test_retryable_statuses_and_connection_failures_retry(status: int | None) -> None:
    assert is_retryable(status)
    assert policy().next_delay(1, status, deadline=1e9) is not None


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 413, 415, 500, 501, 505])
def test_other_statuses_are_never_retried(status: int) -> None:
    assert not is_retryable(status)
    assert policy().next_delay(1, status, deadline=1e9) is None


def test_retryable_set_is_the_otlp_one() -> None:
    assert frozenset({429, 502, 503, 504}) == RETRYABLE_STATUSES


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    p = policy(initial_backoff=0.5, multiplier=2.0, max_backoff=3.0)
    assert [p.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.backoff(10_000) == 3.0  # no overflow for absurd attempt counts


def test_full_jitter_scales_the_cap_by_the_random_draw() -> None:
    assert policy(random_value=0.0).backoff(3) == 0.0
    assert policy(random_value=0.25, initial_backoff=1.0).backoff(3) == pytest.approx(1.0)


def test_default_random_stays_within_the_cap() -> None:
    p = RetryPolicy(initial_backoff=0.5, max_backoff=8.0)
    for attempt in range(1, 8):
        for _ in range(50):
            assert 0.0 <= p.backoff(attempt) <= min(8.0, 0.5 * 2 ** (attempt - 1))


def test_retry_after_seconds_is_a_floor() -> None:
    p = policy(random_value=0.1)
    assert p.next_delay(1, 429, deadline=1e9, retry_after="3") == 3.0
    # A longer jittered backoff is kept.
    assert policy(random_value=1.0, initial_backoff=5.0).next_delay(
        1, 503, deadline=1e9, retry_after="1"
    ) == pytest.approx(5.0)


def test_retry_after_http_date_is_honoured() -> None:
    header = email.utils.formatdate(NOW + 7, usegmt=True)
    assert parse_retry_after(header, NOW) == pytest.approx(7.0)
    assert policy(random_value=0.0).next_delay(1, 503, 1e9, header) == pytest.approx(7.0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("  2  ", 2.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: no extra wait
    ],
)
def test_parse_retry_after_forms(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_unparseable_retry_after_falls_back_to_backoff() -> None:
    assert policy(random_value=1.0).next_delay(1, 429, 1e9, "later") == 0.5


def test_gives_up_when_the_next_attempt_cannot_start_before_the_deadline() -> None:
    p = policy(random_value=1.0, monotonic=100.0, initial_backoff=2.0)
    assert p.next_delay(1, 503, deadline=102.5) == 2.0
    assert p.next_delay(1, 503, deadline=102.0) is None
    assert p.next_delay(1, 503, deadline=99.0) is None


def test_retry_after_beyond_the_deadline_gives_up() -> None:
    p = policy(random_value=0.0, monotonic=100.0)
    assert p.next_delay(1, 429, deadline=110.0, retry_after="30") is None
    assert p.next_delay(1, 429, deadline=140.0, retry_after="30") == 30.0
