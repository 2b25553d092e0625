"""The nightly sleep report (reference alert-rules.md section 4), pure and replayable.

The alert engine drives it with what it already derives (bed changes, closed one-minute
summaries, belt gaps) so a replayed night produces the same report as the live one. All times
are engine seconds (see engine.py); wall times are stamped as ISO strings when they happen.

Definitions (documented in docs/alerts.md): a session starts at the first bed entry inside
earliest_start..latest_end whose stay lasts min_first_bout; exits shorter than end_gap stay inside
it; it ends at the last exit followed by end_gap out of bed, or at latest_end. Sleep is scored per
minute (the sensor's stage when it reports one, else "in bed and no large movement"), so a still,
awake person is scored asleep, as with every bed sensor.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime

from .actions import Emit

LOGGER = logging.getLogger(__name__)

SLEEP_REPORT_PRIORITY = 3      # information, read next morning; never pages anyone
PERSISTENT_SLEEP_MIN = 10      # sleep onset = first 10 asleep minutes in a row (Dreem/Withings)
TURNOVER_MERGE_S = 60.0        # large movements closer than this are one turn-over
MAX_MINUTES = 24 * 60          # bound on the per-minute lists of one session


def initial() -> dict:
    return {"phase": "idle", "cand_t": None, "cand_wall": None, "s": None}


def _in_start_window(minute: float, p) -> bool:
    start, end = p["earliest_start"], p["latest_end"]
    return minute >= start or minute < end if start > end else start <= minute < end


def _minute_of(wall: datetime) -> float:
    return wall.hour * 60 + wall.minute + wall.second / 60


def _new_session(t: float, wall_iso: str) -> dict:
    return {
        "start_t": t, "start_wall": wall_iso, "in_bed": True, "since_t": t,
        "exit_t": None, "exit_wall": None, "tib_s": 0.0, "exits": [],
        "minutes": [],            # [asleep 0/1, hr median or None, rr median or None]
        "gap_min": 0, "turn_proto": None, "turn_derived": 0, "last_move_t": None,
        "alerts": [],
    }


def on_bed(st: dict, in_bed: bool, t: float, wall: datetime, p) -> list[Emit]:
    """The bed state changed at engine time ``t``."""
    if not p.get("enabled", True):
        return []
    wall_iso = wall.isoformat()
    if st["phase"] == "idle":
        if in_bed and _in_start_window(_minute_of(wall), p):
            st["phase"], st["cand_t"], st["cand_wall"] = "candidate", t, wall_iso
        return []
    if st["phase"] == "candidate":
        if not in_bed:      # too short to start the night
            st["phase"], st["cand_t"], st["cand_wall"] = "idle", None, None
        return []
    if st["phase"] != "session":
        return []
    s = st["s"]
    if in_bed and not s["in_bed"]:
        out_s = t - s["exit_t"]
        if out_s >= p["min_exit"]:
            s["exits"].append([s["exit_wall"], round(out_s / 60, 1)])
        s["in_bed"], s["since_t"] = True, t
    elif not in_bed and s["in_bed"]:
        s["tib_s"] += t - s["since_t"]
        s["in_bed"], s["exit_t"], s["exit_wall"] = False, t, wall_iso
    return []


def on_minute(st: dict, summary: dict) -> None:
    """A one-minute summary closed (engine.py ``_close_minute``)."""
    s = st.get("s")
    if st["phase"] != "session" or s is None or not summary["in_bed"]:
        return
    stage = summary.get("stage")
    asleep = stage in ("light", "deep") if stage else not summary["moved"]
    if len(s["minutes"]) < MAX_MINUTES:
        s["minutes"].append([int(asleep), summary["hr_med"], summary["rr_med"]])


def on_gap(st: dict, minutes: int) -> None:
    """Minutes with no belt reading at all (Emfit's system_nodata)."""
    if st["phase"] == "session":
        st["s"]["gap_min"] += minutes


def on_movement(st: dict, t: float) -> None:
    s = st.get("s")
    if st["phase"] != "session" or s is None or not s["in_bed"]:
        return
    if s["last_move_t"] is None or t - s["last_move_t"] > TURNOVER_MERGE_S:
        s["turn_derived"] += 1
    s["last_move_t"] = t


def on_turnovers(st: dict, count: int) -> None:
    """The sensor's own turn-over count for a window it reported."""
    s = st.get("s")
    if st["phase"] == "session" and s is not None:
        s["turn_proto"] = (s["turn_proto"] or 0) + int(count)


def on_alert(st: dict, rule: str, priority: int, wall: datetime) -> None:
    s = st.get("s")
    if st["phase"] == "session" and s is not None and len(s["alerts"]) < 100:
        s["alerts"].append({"rule": rule, "priority": priority, "at": wall.isoformat()})


def on_time(st: dict, t: float, wall: datetime, p) -> list[Emit]:
    """Time passed: a candidate may become the night, a night may end."""
    if not p.get("enabled", True):
        return []
    minute = _minute_of(wall)
    if st["phase"] == "done":
        if not _in_start_window(minute, p):
            st["phase"] = "idle"
        return []
    if st["phase"] == "candidate" and t - st["cand_t"] >= p["min_first_bout"]:
        st["phase"], st["s"] = "session", _new_session(st["cand_t"], st["cand_wall"])
        LOGGER.info("sleep session started at %s", st["cand_wall"])
        return []
    if st["phase"] != "session":
        return []
    s = st["s"]
    if not s["in_bed"] and t - s["exit_t"] >= p["end_gap"]:
        return [_finish(st, s["exit_t"], s["exit_wall"], "out of bed")]
    if not _in_start_window(minute, p):
        if s["in_bed"]:
            s["tib_s"] += t - s["since_t"]
            return [_finish(st, t, wall.isoformat(), "latest end")]
        return [_finish(st, s["exit_t"], s["exit_wall"], "latest end")]
    return []


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def _stats(values: list[float]) -> dict:
    if not values:
        return {"avg": None, "min": None, "max": None}
    return {"avg": round(sum(values) / len(values), 1), "min": round(_pct(values, 0.05), 1),
            "max": round(_pct(values, 0.95), 1)}


def _finish(st: dict, end_t: float, end_wall: str, why: str) -> Emit:
    s = st["s"]
    st["phase"], st["s"], st["cand_t"], st["cand_wall"] = "done", None, None, None
    st["last_end_wall"] = end_wall
    st["last_end_reason"] = why
    mins = s["minutes"]
    asleep = [m[0] for m in mins]
    onset = next((i for i in range(len(asleep))
                  if sum(asleep[i:i + PERSISTENT_SLEEP_MIN]) == PERSISTENT_SLEEP_MIN), None)
    tst_min = sum(asleep[onset:]) if onset is not None else 0
    tib_min = s["tib_s"] / 60
    hr_all = [m[1] for m in mins if m[1] is not None]
    rr_all = [m[2] for m in mins if m[2] is not None]
    hr_sleep = [m[1] for m in mins if m[1] is not None and m[0]]
    rr_sleep = [m[2] for m in mins if m[2] is not None and m[0]]
    valid = sum(1 for m in mins if m[1] is not None or m[2] is not None)
    hr, rr = _stats(hr_sleep or hr_all), _stats(rr_sleep or rr_all)
    turn_src = "sensor" if s["turn_proto"] is not None else "movement"
    data = {
        "session_start": s["start_wall"],
        "session_end": end_wall,
        "end_reason": why,
        "time_in_bed_min": round(tib_min, 1),
        "sleep_min": tst_min,
        "sleep_latency_min": onset,
        "sleep_efficiency_pct": round(100 * tst_min / tib_min, 1) if tib_min >= 1 else None,
        "bed_exits": {"count": len(s["exits"]),
                      "minutes": round(sum(e[1] for e in s["exits"]), 1),
                      "periods": [{"at": e[0], "minutes": e[1]} for e in s["exits"]]},
        "turnovers": s["turn_proto"] if turn_src == "sensor" else s["turn_derived"],
        "turnovers_source": turn_src,
        "heart_rate_bpm": hr,
        "resp_rate_per_min": rr,
        "vitals_over": "asleep minutes" if hr_sleep or rr_sleep else "in-bed minutes",
        "data_coverage": {
            "in_bed_minutes": len(mins),
            "valid_minutes": valid,
            "pct": round(100 * valid / len(mins), 1) if mins else 0.0,
            "no_data_minutes": s["gap_min"],
        },
        "alerts": s["alerts"],
        "caveats": ["a still but awake person is scored asleep",
                    "one night is not diagnostic"],
    }
    LOGGER.info("sleep session ended (%s): %.0f min in bed", why, tib_min)
    return Emit("sleep.report", SLEEP_REPORT_PRIORITY, data)
