"""The resident's fused state: what the belt has told us so far, whatever frame said it.

Protocols split a moment differently: MicRadar sends one field per frame and reports presence
and in-bed only when they change, TinyFrame sends a few fields and no bed flag at all, NDJSON
sends everything in one line. Rules never look at a frame; every reading updates this state and
rules read the state, so the outcome does not depend on how fields were split.

In bed is debounced here, the one place that decides it, and each change keeps its *true* time
(when the evidence started, not when the debounce ran out): every duration rule counts from it.
Measured vital signs are evidence of presence and, while the protocol has not (yet) said
anything about the bed since the hub started, of being in bed: a hub started beside a sleeping
resident knows it within the enter debounce. (MicRadar is also asked for its bed state at every
open of the port, reconnects included.)
"""

from __future__ import annotations

import logging
from datetime import timedelta

from drivers.belt.reading import MOTION_ACTIVE, RESP_APNEA, RESP_MOVEMENT, RESP_NONE

LOGGER = logging.getLogger(__name__)

LARGE_MOVEMENT_INDEX = 50.0     # movement_index at or above this is a large movement
HR_VALID_BPM = (20.0, 250.0)    # outside these a sample is not valid
RR_VALID_PER_MIN = (1.0, 80.0)
BED_DEFAULTS = {"enter_debounce": 30.0, "exit_debounce": 60.0, "bed_max_distance_m": None}


def initial() -> dict:
    return {
        "presence": None, "in_bed": None, "in_bed_since": None, "previous_stay_s": 0.0,
        "bed_candidate": None, "bed_candidate_since": None, "bed_reported": False,
        "distance_m": None, "resp_state": None, "movement_index": None,
        "hr_bpm": None, "hr_t": None, "rr_per_min": None, "rr_t": None,
        "large_movement_t": None, "last_reading_t": None,
    }


def forget_device_view(res: dict) -> None:
    """After a restart the sensor may have changed its mind unseen: until it reports the bed
    again (or answers the start-up query), vital signs count as in bed."""
    res["bed_reported"] = False


class Facts:
    """What one reading proved, for the rule families' hooks (valid values only)."""

    __slots__ = ("reading", "hr_bpm", "rr_per_min", "large_movement")

    def __init__(self, reading, hr_bpm, rr_per_min, large_movement):
        self.reading, self.hr_bpm, self.rr_per_min = reading, hr_bpm, rr_per_min
        self.large_movement = large_movement

    @property
    def vital_signs(self) -> bool:
        return self.hr_bpm is not None or self.rr_per_min is not None


def _valid(value, limits):
    return value if value is not None and limits[0] <= value <= limits[1] else None


def on_reading(res: dict, r, t: float, bed_params: dict) -> Facts:
    """Fold one decoded reading into the state; returns what it proved."""
    res["last_reading_t"] = t
    hr = rr = None
    large = False
    if r.kind == "instant":
        hr = _valid(r.heart_rate_bpm, HR_VALID_BPM)
        rr = _valid(r.resp_rate_per_min, RR_VALID_PER_MIN)
        if r.resp_state in (RESP_APNEA, RESP_NONE):
            rr = None
        large = (r.motion == MOTION_ACTIVE or r.resp_state == RESP_MOVEMENT
                 or (r.movement_index is not None and r.movement_index >= LARGE_MOVEMENT_INDEX))
        if hr is not None:
            res["hr_bpm"], res["hr_t"] = hr, t
        if rr is not None:
            res["rr_per_min"], res["rr_t"] = rr, t
        if large:
            res["large_movement_t"] = t
        if r.resp_state is not None:
            res["resp_state"] = r.resp_state
        if r.movement_index is not None:
            res["movement_index"] = r.movement_index
    facts = Facts(r, hr, rr, large)
    if r.kind not in ("instant", "window"):
        return facts
    if r.distance_m is not None:
        res["distance_m"] = r.distance_m
    if r.presence is not None:
        res["presence"] = r.presence
    elif facts.vital_signs:
        res["presence"] = True          # a measured heartbeat is somebody there
    raw = _raw_in_bed(res, r, facts, bed_params)
    if raw is not None and raw != res["bed_candidate"]:
        res["bed_candidate"], res["bed_candidate_since"] = raw, t
    return facts


def _raw_in_bed(res: dict, r, facts: Facts, p: dict) -> bool | None:
    """What this reading says about the bed, before debounce; None: nothing."""
    if r.in_bed is not None:
        if r.kind == "instant":
            res["bed_reported"] = True
        return r.in_bed
    if res["bed_reported"]:
        return None
    if r.presence is False:
        return False
    if r.presence is None and not facts.vital_signs:
        return None
    d, limit = res["distance_m"], p.get("bed_max_distance_m")
    return limit is None or d is None or d <= limit


def seen(res: dict, facts: Facts) -> bool:
    """The reading showed the resident (a sign of life)."""
    r = facts.reading
    return bool(r.presence or r.in_bed or facts.vital_signs)


def held_until(res: dict, t: float) -> float:
    """Until when the current bed state surely held: a change still in its debounce began at
    its candidate time. A resident back 5 s before the 30-min mark was out 29:55 min."""
    cand = res["bed_candidate"]
    if cand is not None and cand != res["in_bed"] and res["in_bed"] is not None:
        return res["bed_candidate_since"]
    return t


def settle(res: dict, t: float, wall, bed_params: dict) -> tuple | None:
    """Apply the debounce; on a change return (in_bed, true_t, true_wall, event, data)."""
    cand = res["bed_candidate"]
    if cand is None or cand == res["in_bed"]:
        return None
    since = res["bed_candidate_since"]
    hold = bed_params["enter_debounce"] if cand else bed_params["exit_debounce"]
    if t - since < hold:
        return None
    previous = res["in_bed"]
    true_wall = wall - timedelta(seconds=t - since)
    detected = true_wall.isoformat(timespec="milliseconds")
    if not cand and res["in_bed_since"] is not None and previous is True:
        res["previous_stay_s"] = since - res["in_bed_since"]
    res["in_bed"], res["in_bed_since"] = cand, since
    if cand:
        LOGGER.info("resident in bed (since %s)", detected)
        return True, since, true_wall, "bed.entered", {
            "detected_at": detected, "debounce_s": bed_params["enter_debounce"]}
    if previous is None:            # first knowledge of the bed: nobody left it
        return False, since, true_wall, None, None
    LOGGER.info("resident out of bed (since %s)", detected)
    return False, since, true_wall, "bed.exited", {
        "detected_at": detected, "debounce_s": bed_params["exit_debounce"],
        "in_bed_s": round(res["previous_stay_s"], 1)}
