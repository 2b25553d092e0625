"""The one per-minute aggregator: medians for the rules and the sleep report, and the
``vitals.minute`` summary committed instead of raw readings (spec section 3: raw readings
every second would wear the SD card).

Minutes sit on the engine-seconds grid and open with their first reading; minutes without
any reading are not summarised (the rules call them unknown, the report counts them as gaps).
"""

from __future__ import annotations

from datetime import timedelta

MINUTE_S = 60.0
MAX_SAMPLES_PER_MINUTE = 600
VALID_HOLD_S = 10.0     # a valid HR or RR counts as "valid readings" this long (MicRadar: 3 s)
MINUTE_PRIORITY = 3


def median(values):
    v = sorted(values)
    n = len(v)
    if not n:
        return None
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _open(st: dict, t: float) -> dict:
    idx = int(t // MINUTE_S)
    m = {"idx": idx, "hr": [], "rr": [], "in_bed": st["resident"]["in_bed"] is True,
         "moved": False, "stages": {}, "readings": 0, "events": 0, "turnovers": 0,
         "movement": [0.0, 0, None], "in_bed_s": 0.0, "valid_s": 0.0, "counted_to": t,
         "valid_until": None}
    st["minute"] = m
    return m


def _count(m: dict, in_bed: bool, until: float) -> None:
    start = m["counted_to"]
    if until <= start:
        return
    if in_bed:
        m["in_bed_s"] += until - start
    if m["valid_until"] is not None:
        valid_end = min(until, m["valid_until"])
        if valid_end > start:
            m["valid_s"] += valid_end - start
    m["counted_to"] = until


def advance(st: dict, t: float, wall) -> tuple[dict | None, dict | None]:
    """Count time up to ``t`` (with the bed state before this step); close a finished minute.

    Returns (summary for the rules, vitals.minute data or None) or (None, None).
    """
    m = st["minute"]
    if m is None:
        return None, None
    in_bed = st["resident"]["in_bed"] is True
    end = (m["idx"] + 1) * MINUTE_S
    if t < end:
        _count(m, in_bed, t)
        return None, None
    _count(m, in_bed, end)
    st["minute"], st["minute_closed"] = None, m["idx"]
    summary = {
        "idx": m["idx"], "start_t": m["idx"] * MINUTE_S,
        "hr_med": median(m["hr"]), "rr_med": median(m["rr"]),
        "in_bed": m["in_bed"] and m["readings"] + m["events"] > 0, "moved": m["moved"],
        "stage": max(m["stages"], key=m["stages"].get) if m["stages"] else None,
    }
    if not m["readings"]:       # only heartbeats: nothing worth a write to the SD card
        return summary, None
    return summary, _vitals_minute(m, wall - timedelta(seconds=t - m["idx"] * MINUTE_S))


def _stats(values: list, prefix: str, unit: str) -> dict:
    if not values:
        return {f"{prefix}_avg_{unit}": None, f"{prefix}_min_{unit}": None,
                f"{prefix}_max_{unit}": None}
    return {f"{prefix}_avg_{unit}": round(sum(values) / len(values), 1),
            f"{prefix}_min_{unit}": min(values), f"{prefix}_max_{unit}": max(values)}


def _vitals_minute(m: dict, start_wall) -> dict:
    total, n, hi = m["movement"]
    data = {"start": start_wall.isoformat(timespec="milliseconds"), "window_s": MINUTE_S}
    data.update(_stats(m["hr"], "hr", "bpm"))
    data.update(_stats(m["rr"], "rr", "per_min"))
    data["movement_avg"] = round(total / n, 1) if n else None
    data["movement_max"] = hi
    data["turnovers"] = m["turnovers"]
    data["in_bed_s"] = round(m["in_bed_s"], 1)
    data["valid_s"] = round(m["valid_s"], 1)
    data["readings"] = m["readings"]
    return data


def bed_changed(st: dict, in_bed: bool, true_t: float) -> None:
    """The debounce settled a change that truly began at ``true_t``: move the open minute's
    in-bed seconds since then to the right side."""
    m = st["minute"]
    if m is None:
        return
    if not in_bed:
        m["in_bed"] = False
    span = m["counted_to"] - max(true_t, m["idx"] * MINUTE_S)
    if span > 0:
        m["in_bed_s"] = max(0.0, m["in_bed_s"] + (span if in_bed else -span))


def for_reading(st: dict, t: float) -> tuple[dict, int]:
    """The open minute, and how many minutes before it had no reading at all."""
    if st["minute"] is not None:
        return st["minute"], 0
    idx, closed = int(t // MINUTE_S), st["minute_closed"]
    gap = idx - closed - 1 if closed is not None and idx - closed > 1 else 0
    return _open(st, t), gap


def add(m: dict, st: dict, facts, t: float) -> None:
    """One reading into the open minute."""
    r = facts.reading
    if r.kind == "event":
        m["events"] += 1
        return
    m["readings"] += 1
    res = st["resident"]
    if res["in_bed"] is not True or res["bed_candidate"] is False:
        m["in_bed"] = False     # not in bed, or perhaps leaving: not an in-bed minute
    if r.kind == "window":
        if r.turnover_count is not None:
            m["turnovers"] += r.turnover_count
        return
    if facts.large_movement:
        m["moved"] = True
    if len(m["hr"]) < MAX_SAMPLES_PER_MINUTE:
        if facts.hr_bpm is not None:
            m["hr"].append(facts.hr_bpm)
        if facts.rr_per_min is not None:
            m["rr"].append(facts.rr_per_min)
    if facts.vital_signs:
        m["valid_until"] = t + VALID_HOLD_S
    if r.movement_index is not None:
        mv = m["movement"]
        mv[0] += r.movement_index
        mv[1] += 1
        mv[2] = r.movement_index if mv[2] is None or r.movement_index > mv[2] else mv[2]
    if r.sleep_stage:
        m["stages"][r.sleep_stage] = m["stages"].get(r.sleep_stage, 0) + 1
