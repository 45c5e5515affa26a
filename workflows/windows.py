"""Maintenance windows: when may a host be started? Pure functions over APScheduler's cron triggers.

A window opens at each fire time of its cron expression (in its time zone) and stays open for its
duration. A host is started only while a window is open with at least the cutoff still remaining
(like SSM's cutoff), so work that begins near the close does not run past it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger


@dataclass(frozen=True)
class WindowStatus:
    open: bool
    closes_at: datetime | None  # while open
    next_opening: datetime | None  # while closed (or too close to the end)


def trigger(cron: str, timezone: str) -> CronTrigger:
    """A trigger for `cron` in `timezone`; ValueError with a readable reason when invalid."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {timezone!r} (use an IANA name like 'Europe/Paris')"
        ) from None
    try:
        return CronTrigger.from_crontab(cron, timezone=zone)
    except ValueError as error:
        raise ValueError(f"invalid cron expression {cron!r}: {error}") from None


def window_status(
    windows: list[tuple[str, str, timedelta]], now: datetime, cutoff: timedelta
) -> WindowStatus:
    """Is a window (cron, timezone, duration) open at `now` with `cutoff` to spare, and if not,
    when does the next usable one open?"""
    best_close: datetime | None = None
    next_openings: list[datetime] = []
    for cron, timezone, duration in windows:
        cron_trigger = trigger(cron, timezone)
        # The latest opening at or before now is the first fire time after now - duration.
        opening = cron_trigger.get_next_fire_time(None, now - duration)
        while opening is not None and opening <= now:
            closes = opening + duration
            if closes - now >= cutoff and (best_close is None or closes > best_close):
                best_close = closes
            opening = cron_trigger.get_next_fire_time(opening, opening + timedelta(seconds=1))
        if opening is not None:
            next_openings.append(opening)
    if best_close is not None:
        return WindowStatus(open=True, closes_at=best_close, next_opening=None)
    return WindowStatus(
        open=False, closes_at=None, next_opening=min(next_openings) if next_openings else None
    )


def describe(moment: datetime, timezone: str) -> str:
    """'Sat 02:00 UTC' style, in the window's own time zone."""
    local = moment.astimezone(ZoneInfo(timezone))
    return f"{local:%a %Y-%m-%d %H:%M} {timezone}"
