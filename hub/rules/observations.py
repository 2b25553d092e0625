"""What the alert engine observes: frozen dataclasses built by the pipeline, never by the engine.

Each one is a fact about the home at one instant; the instant itself is ``Now``, passed beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Mapping

from drivers.belt.reading import Reading

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Now:
    """The instant of an observation: ``mono`` seconds for durations, ``wall`` for windows.

    ``wall`` is zone-aware, in the hub's timezone (windows such as 21:00-07:00 are local).
    """

    mono: float
    wall: datetime

    def __post_init__(self):
        if self.wall.tzinfo is None:
            raise ValueError("Now.wall must be timezone-aware, in the hub's timezone")

    @classmethod
    def from_clock(cls, clock, tz=None) -> "Now":
        wall = clock.now()
        return cls(clock.monotonic(), wall.astimezone(tz) if tz is not None else wall)


@dataclass(frozen=True)
class BeltReading:
    """One decoded bed-sensor reading, as the decoder gave it (one frame's fields)."""

    reading: Reading


@dataclass(frozen=True)
class ButtonPress:
    """A press the resident made: the SOS long press or the OK short press."""

    button: Literal["sos", "ok"]
    source: Literal["panel", "watch"] = "panel"

    def __post_init__(self):
        if self.button not in ("sos", "ok"):
            raise ValueError(f"button must be 'sos' or 'ok', not {self.button!r}")


@dataclass(frozen=True)
class WatchObservation:
    """One report from the watch; ``None`` means not reported.

    ``moving`` is the watch's own still/moving verdict since its last report.
    ``location`` is whatever the watch knows (e.g. {"lat", "lon", "fix_age_s"}), passed on as is.
    """

    hr_bpm: float | None = None
    battery_pct: float | None = None
    fall: bool = False
    sos: bool = False
    worn: bool | None = None
    moving: bool | None = None
    location: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DeviceStatus:
    """A driver's link state changed (``device``: "belt", "watch", "gpio")."""

    device: str
    state: str
    battery_pct: float | None = None


@dataclass(frozen=True)
class StaffAck:
    """Staff acknowledged an alert (the ``acks`` of a sync response): help is coming."""

    alert_id: str
    by: str
    at: str | None = None


@dataclass(frozen=True)
class StaffClose:
    """Staff closed an alert (a later server feature; also usable from a local console)."""

    alert_id: str
    by: str


@dataclass(frozen=True)
class Tick:
    """Time passed; the pipeline sends one every second or so, so timers fire without input."""


Observation = (BeltReading | ButtonPress | WatchObservation | DeviceStatus | StaffAck
               | StaffClose | Tick)
