"""What the watch told us: one frozen dataclass per kind, with the monotonic time it arrived.

``mono`` is the hub's monotonic clock when the bytes arrived (the decoder stamps it); codecs
leave it 0.0. Values are ``None`` when not reported, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class HeartRate:
    hr_bpm: int
    rr_s: tuple[float, ...] = ()          # RR intervals in seconds (1/1024 s on the air)
    energy_kj: int | None = None
    contact: bool | None = None           # None: the sensor does not say
    mono: float = 0.0


@dataclass(frozen=True)
class Battery:
    battery_pct: int
    mono: float = 0.0


@dataclass(frozen=True)
class Location:
    """A position fix. ``fix_mono`` is when it arrived, so an alert can say how old it is."""

    lat: float
    lon: float
    accuracy_m: float | None = None       # from Position Quality (EHPE) when the watch sends it
    status: str | None = None             # "ok", "estimated", "last_known"; None: not said
    elevation_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    utc: str | None = None                # the watch's own UTC time of the fix, ISO 8601
    mono: float = 0.0

    def details(self, now_mono: float) -> dict:
        """The ``details.location`` of an sos or fall alert (interfaces section 5)."""
        return {"lat": self.lat, "lon": self.lon, "accuracy_m": self.accuracy_m,
                "age_s": round(max(now_mono - self.mono, 0.0), 1)}


@dataclass(frozen=True)
class Press:
    """The resident asked for something: ``sos``, ``ok`` (cancel / I'm fine), or a ``fall``
    the watch detected. ``press_id`` is the device's own counter where it has one."""

    kind: Literal["sos", "ok", "fall"]
    press_id: int | None = None
    mono: float = 0.0


@dataclass(frozen=True)
class LinkStatus:
    """The watch link changed: ``state`` "connected" or "disconnected" (the belt's words)."""

    state: Literal["connected", "disconnected"]
    reason: str | None = None             # "out of range", "not found", an error
    battery_pct: int | None = None
    rssi: int | None = None
    mono: float = 0.0


WatchReport = HeartRate | Battery | Location | Press | LinkStatus
