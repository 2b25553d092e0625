"""Injected clocks: monotonic seconds for durations, a zone-aware wall clock for windows.

The Pi has no real-time clock, so durations never come from wall time.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds since an arbitrary origin; never jumps."""

    def now(self) -> datetime:
        """The wall clock, timezone-aware."""


class SystemClock:
    """The real clocks. CLOCK_BOOTTIME keeps counting through suspend."""

    def __init__(self, tz: tzinfo | None = None):
        self.tz = tz or timezone.utc

    def monotonic(self) -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    def now(self) -> datetime:
        return datetime.now(self.tz)


class ManualClock:
    """A clock that moves only when told to: tests and replay drive it."""

    def __init__(self, wall: datetime, mono: float = 0.0):
        if wall.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware datetime")
        self._wall = wall
        self._mono = mono

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> datetime:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self._mono += seconds
        self._wall = self._wall + timedelta(seconds=seconds)

    def set_wall(self, wall: datetime) -> None:
        """Move the wall clock alone, as NTP or a user would (monotonic is untouched)."""
        self._wall = wall


class ScaledClock:
    """Real time, ``speed`` times faster, from a chosen wall-clock start: the demo and end-to-end
    tests run the real daemon through a night in seconds."""

    def __init__(self, speed: float, start_wall: datetime):
        self.speed = speed
        self.start_wall = start_wall
        self._t0 = time.monotonic()
        self._paused_at: float | None = None

    def monotonic(self) -> float:
        if self._paused_at is not None:
            return self._paused_at
        return (time.monotonic() - self._t0) * self.speed

    def pause(self) -> None:
        """Stop simulated time (the demo's night is over; only real-time work remains)."""
        self._paused_at = self.monotonic()

    def now(self) -> datetime:
        return self.start_wall + timedelta(seconds=self.monotonic())
