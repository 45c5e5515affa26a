from datetime import UTC, datetime, timedelta

import pytest

from workflows.windows import describe, window_status

SATURDAY_2AM = [("0 2 * * sat", "UTC", timedelta(hours=4))]
CUTOFF = timedelta(minutes=30)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_friday_waits_for_saturday_2am() -> None:
    status = window_status(SATURDAY_2AM, at("2026-11-27T12:00:00"), CUTOFF)
    assert not status.open and status.next_opening == at("2026-11-28T02:00:00")
    assert describe(status.next_opening, "UTC") == "Sat 2026-11-28 02:00 UTC"


def test_inside_the_window_with_time_to_spare() -> None:
    status = window_status(SATURDAY_2AM, at("2026-11-28T03:00:00"), CUTOFF)
    assert status.open and status.closes_at == at("2026-11-28T06:00:00")


@pytest.mark.parametrize(
    ("now", "is_open"),
    [("2026-11-28T05:29:59", True), ("2026-11-28T05:30:00", True), ("2026-11-28T05:30:01", False)],
)
def test_cutoff_is_inclusive_at_the_exact_threshold(now: str, is_open: bool) -> None:
    status = window_status(SATURDAY_2AM, at(now), CUTOFF)
    assert status.open is is_open
    if not is_open:
        assert status.next_opening == at("2026-12-05T02:00:00")


def test_time_zones_are_the_windows_own() -> None:
    paris = [("0 2 * * sat", "Europe/Paris", timedelta(hours=4))]
    status = window_status(paris, at("2026-11-28T00:30:00"), CUTOFF)  # 01:30 in Paris
    assert not status.open and status.next_opening == at("2026-11-28T01:00:00")


def test_the_best_of_several_windows_counts() -> None:
    windows = [*SATURDAY_2AM, ("0 22 * * fri", "UTC", timedelta(hours=6))]
    status = window_status(windows, at("2026-11-28T03:45:00"), CUTOFF)
    assert status.open and status.closes_at == at("2026-11-28T06:00:00")
    status = window_status(windows, at("2026-11-27T23:00:00"), CUTOFF)
    assert status.open and status.closes_at == at("2026-11-28T04:00:00")


@pytest.mark.parametrize(
    ("cron", "zone", "reason"),
    [
        ("0 25 * * sat", "UTC", "invalid cron expression"),
        ("0 2 * * sat", "Mars/Base", "unknown time zone"),
    ],
)
def test_bad_windows_say_why(cron: str, zone: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        window_status([(cron, zone, timedelta(hours=1))], at("2026-11-27T00:00:00"), CUTOFF)
