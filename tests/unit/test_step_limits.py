"""A retried host step has what its first attempt left of its time limit, not the whole of it
again: five attempts of a 1 h update after heartbeat timeouts must not run for 5 h."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.testing import ActivityEnvironment

from activities.attempts import RETRY_FLOOR_SECONDS, time_left


def left(attempt: int, scheduled_ago: timedelta, limit: float) -> float:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        ActivityEnvironment.default_info(),
        attempt=attempt,
        scheduled_time=datetime.now(UTC) - scheduled_ago,
    )
    return env.run(time_left, limit)


def test_a_first_attempt_has_the_whole_limit() -> None:
    assert left(1, timedelta(minutes=10), 3600) == 3600


def test_a_retry_has_what_its_first_attempt_left() -> None:
    assert left(3, timedelta(minutes=25), 3600) == pytest.approx(2100, abs=5)


def test_a_retry_after_the_limit_still_has_time_to_collect_or_kill_the_run() -> None:
    assert left(2, timedelta(hours=2), 3600) == RETRY_FLOOR_SECONDS


def test_outside_an_activity_the_limit_is_the_limit() -> None:
    assert time_left(90) == 90
