"""The bed tracker: raw belt readings in, the few events worth committing out.

Raw readings arrive every second or so; writing them all would wear the SD card, so the
tracker turns them into debounced ``bed.entered`` / ``bed.exited`` and one ``vitals.minute``
summary per minute while data flows (spec section 3). It also holds the current view the
rules read (``in_bed``, last valid heart and breathing rates).

Pure: the caller passes monotonic seconds (durations) and the wall time (for event data).
Where the protocol says nothing about the bed (TinyFrame), in-bed is derived from presence
and distance, with the same debounce.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from drivers.belt.reading import Reading

LOGGER = logging.getLogger(__name__)

MINUTE_S = 60.0


@dataclass
class _Stats:
    """min / max / sum / count of the valid values of one quantity in one minute."""

    n: int = 0
    total: float = 0.0
    lo: float | None = None
    hi: float | None = None

    def add(self, v: float) -> None:
        self.n += 1
        self.total += v
        self.lo = v if self.lo is None or v < self.lo else self.lo
        self.hi = v if self.hi is None or v > self.hi else self.hi

    def summary(self, prefix: str, unit: str) -> dict:
        avg = round(self.total / self.n, 1) if self.n else None
        return {f"{prefix}_avg_{unit}": avg, f"{prefix}_min_{unit}": self.lo,
                f"{prefix}_max_{unit}": self.hi}


def _iso(wall: datetime) -> str:
    return wall.isoformat(timespec="milliseconds")


class BedTracker:
    """Debounced bed state and per-minute vitals from belt readings.

    :param enter_debounce_s: in-bed must hold this long before ``bed.entered``.
    :param exit_debounce_s: out-of-bed must hold this long before ``bed.exited``.
    :param bed_max_distance_m: for protocols without an in-bed report, a present target
        farther than this is not in the bed (None: any distance).
    :param valid_hold_s: a valid heart or breathing rate counts as "valid readings" for this
        long after it arrives (MicRadar reports each every 3 s).
    """

    def __init__(self, enter_debounce_s: float = 60.0, exit_debounce_s: float = 60.0, *,
                 bed_max_distance_m: float | None = None, valid_hold_s: float = 10.0):
        self.enter_debounce_s = enter_debounce_s
        self.exit_debounce_s = exit_debounce_s
        self.bed_max_distance_m = bed_max_distance_m
        self.valid_hold_s = valid_hold_s
        # current view, read by the rules
        self.in_bed: bool | None = None          # debounced; None until first known
        self.in_bed_since_mono: float | None = None
        self.out_of_bed_since_mono: float | None = None
        self.presence: bool | None = None
        self.resp_state: str | None = None
        self.hr_bpm: float | None = None
        self.hr_mono: float | None = None
        self.rr_per_min: float | None = None
        self.rr_mono: float | None = None
        self.last_reading_mono: float | None = None
        # debounce
        self._native_in_bed = False              # the protocol reports in/out of bed itself
        self._candidate: bool | None = None
        self._candidate_mono = 0.0
        self._candidate_wall: datetime | None = None
        self._distance_m: float | None = None
        # current minute
        self._minute_start: float | None = None
        self._minute_wall: datetime | None = None
        self._last_mono: float | None = None
        self._valid_until = float("-inf")
        self._reset_minute()

    # --- the rules' view -------------------------------------------------------------------
    def view(self) -> dict:
        return {"in_bed": self.in_bed, "in_bed_since_mono": self.in_bed_since_mono,
                "out_of_bed_since_mono": self.out_of_bed_since_mono,
                "presence": self.presence, "resp_state": self.resp_state,
                "hr_bpm": self.hr_bpm, "hr_mono": self.hr_mono,
                "rr_per_min": self.rr_per_min, "rr_mono": self.rr_mono,
                "last_reading_mono": self.last_reading_mono}

    # --- input -----------------------------------------------------------------------------
    def update(self, reading: Reading, mono_s: float, wall: datetime) -> list[tuple[str, dict]]:
        events = self._advance(mono_s, wall)
        if reading.kind not in ("instant", "window"):
            return events
        self.last_reading_mono = mono_s
        self._readings += 1
        if reading.presence is not None:
            self.presence = reading.presence
        if reading.resp_state is not None:
            self.resp_state = reading.resp_state
        if reading.distance_m is not None:
            self._distance_m = reading.distance_m
        if reading.kind == "instant":
            self._take_vitals(reading, mono_s)
        elif reading.turnover_count is not None:
            self._turnovers += reading.turnover_count
        self._observe_bed(self._raw_in_bed(reading), mono_s, wall)
        events += self._debounce(mono_s, wall)
        return events

    def tick(self, mono_s: float, wall: datetime) -> list[tuple[str, dict]]:
        return self._advance(mono_s, wall)

    # --- internals -------------------------------------------------------------------------
    def _take_vitals(self, r: Reading, mono_s: float) -> None:
        if r.heart_rate_bpm is not None:
            self.hr_bpm, self.hr_mono = r.heart_rate_bpm, mono_s
            self._hr.add(r.heart_rate_bpm)
        if r.resp_rate_per_min is not None:
            self.rr_per_min, self.rr_mono = r.resp_rate_per_min, mono_s
            self._rr.add(r.resp_rate_per_min)
        if r.heart_rate_bpm is not None or r.resp_rate_per_min is not None:
            self._valid_until = mono_s + self.valid_hold_s
        if r.movement_index is not None:
            self._movement.add(r.movement_index)

    def _raw_in_bed(self, r: Reading) -> bool | None:
        """What this reading says about the bed, before debounce; None: nothing."""
        if r.in_bed is not None:
            if r.kind == "instant":
                self._native_in_bed = True
            return r.in_bed
        if self._native_in_bed or r.presence is None:
            return None
        if not r.presence:
            return False
        d = self._distance_m
        return self.bed_max_distance_m is None or d is None or d <= self.bed_max_distance_m

    def _observe_bed(self, raw: bool | None, mono_s: float, wall: datetime) -> None:
        if raw is None or raw == self._candidate:
            return
        self._candidate = raw
        self._candidate_mono = mono_s
        self._candidate_wall = wall

    def _debounce(self, mono_s: float, wall: datetime) -> list[tuple[str, dict]]:
        cand = self._candidate
        if cand is None or cand == self.in_bed:
            return []
        held = mono_s - self._candidate_mono
        if held < (self.enter_debounce_s if cand else self.exit_debounce_s):
            return []
        previous = self.in_bed
        self.in_bed = cand
        detected = _iso(self._candidate_wall)
        if cand:
            self.in_bed_since_mono = self._candidate_mono
            LOGGER.info("resident in bed (since %s)", detected)
            return [("bed.entered", {"detected_at": detected, "debounce_s": self.enter_debounce_s})]
        self.out_of_bed_since_mono = self._candidate_mono
        if previous is None:           # first knowledge of the bed: nobody left it
            return []
        in_bed_s = round(self._candidate_mono - self.in_bed_since_mono, 1)
        LOGGER.info("resident out of bed (since %s)", detected)
        return [("bed.exited", {"detected_at": detected, "debounce_s": self.exit_debounce_s,
                                "in_bed_s": in_bed_s})]

    def _advance(self, mono_s: float, wall: datetime) -> list[tuple[str, dict]]:
        """Account time up to ``mono_s``; close the minute if it ended; settle debounce."""
        events: list[tuple[str, dict]] = []
        if self._minute_start is None:
            self._minute_start, self._minute_wall, self._last_mono = mono_s, wall, mono_s
            return self._debounce(mono_s, wall)
        end = self._minute_start + MINUTE_S
        if mono_s >= end:
            self._account(end)
            summary = self._close_minute()
            if summary is not None:
                events.append(("vitals.minute", summary))
            # skip empty minutes while no data flows; keep the grid
            skipped = int((mono_s - end) // MINUTE_S)
            self._minute_start = end + skipped * MINUTE_S
            self._minute_wall = wall - timedelta(seconds=mono_s - self._minute_start)
            self._last_mono = self._minute_start
        self._account(mono_s)
        return events + self._debounce(mono_s, wall)

    def _account(self, until: float) -> None:
        start = self._last_mono
        if until <= start:
            return
        if self.in_bed:
            self._in_bed_s += until - start
        valid_end = min(until, self._valid_until)
        if valid_end > start:
            self._valid_s += valid_end - start
        self._last_mono = until

    def _reset_minute(self) -> None:
        self._hr, self._rr, self._movement = _Stats(), _Stats(), _Stats()
        self._turnovers = 0
        self._readings = 0
        self._in_bed_s = 0.0
        self._valid_s = 0.0

    def _close_minute(self) -> dict | None:
        if not self._readings:
            self._reset_minute()
            return None
        data = {"start": _iso(self._minute_wall), "window_s": MINUTE_S}
        data.update(self._hr.summary("hr", "bpm"))
        data.update(self._rr.summary("rr", "per_min"))
        data["movement_avg"] = round(self._movement.total / self._movement.n, 1) \
            if self._movement.n else None
        data["movement_max"] = self._movement.hi
        data["turnovers"] = self._turnovers
        data["in_bed_s"] = round(self._in_bed_s, 1)
        data["valid_s"] = round(self._valid_s, 1)
        data["readings"] = self._readings
        self._reset_minute()
        return data
