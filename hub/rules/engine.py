"""The local alert engine: ``evaluate(state, observation, now, params) -> (state, actions)``.

Pure: no I/O, no clock reads; the same observations at the same instants give the same actions,
so the daemon, ``carehub replay`` and the tests share it.

Time. All durations are "engine seconds" (``state["t"]``), advanced by the monotonic clock within
one run. Monotonic time restarts at boot, so after ``resume(state)`` (a restore from the store) the
next step advances by the wall-clock gap since the last step instead, clamped to 0..MAX_BRIDGE_S:
the time the hub was down counts as if nothing had changed. That is the conservative choice for
safety: a resident out of bed before the restart is still out of bed after it, and a condition that
was true before the restart still fires. Evidence rules never bridge a gap (vitals_absent needs
fresh readings; minutes without readings are "unknown" for the heart/breathing rules), so a
restart can never make them fire.

State is a plain JSON-serialisable dict (``json.dumps(state)`` works at any time).
"""

from __future__ import annotations

import copy
import logging
import math
import secrets
from datetime import datetime, timedelta

from drivers.belt.reading import MOTION_ACTIVE, RESP_APNEA, RESP_MOVEMENT, RESP_NONE

from . import sleep_report
from .actions import (BUZZER_ALERT, BUZZER_OFF, BUZZER_PREALERT, LED_ACKNOWLEDGED, LED_ALERT,
                      LED_OK, LED_PREALERT, Action, Emit, Panel)
from .observations import (BedChange, BeltReading, ButtonPress, DeviceStatus, Now, StaffAck,
                           StaffClose, Tick, WatchObservation)
from .params import defaults

LOGGER = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_BRIDGE_S = 24 * 3600        # a restart gap counts at most this long
LARGE_MOVEMENT_INDEX = 50.0     # movement_index at or above this is a large movement
BELT_FRESH_S = 120.0            # a belt reading this recent means the belt is reporting
WATCH_FRESH_S = 900.0           # a watch report this recent means the watch is reporting
HR_VALID = (20.0, 250.0)        # outside these a sample is not valid
RR_VALID = (1.0, 80.0)
MAX_SAMPLES_PER_MINUTE = 600
VITAL_RULES = ("hr_high", "hr_low", "rr_high", "rr_low")
EVENT_RULES = ("sos", "fall")   # no clearing condition: staff close them
PREALERT_EVENT_PRIORITY = 2
ACK_EVENT_PRIORITY = 2


# --- state ----------------------------------------------------------------------------------

def initial_state(seed: str | None = None) -> dict:
    """A fresh state; ``seed`` makes alert ids reproducible (replay, tests)."""
    return {
        "v": STATE_VERSION, "seed": seed or secrets.token_hex(4), "n": 0,
        "t": 0.0, "mono": None, "wall": None, "resumed": False, "panel": None,
        "bed": {"in": None, "since": 0.0, "prev_in_s": 0.0, "exit_in_window": False},
        "belt": {"last": None, "last_wall": None, "status": None},
        "watch": {"seen": False, "last": None, "worn": None, "unworn_since": None,
                  "battery": None, "location": None},
        "sign": 0.0, "last_move": None, "last_rr_t": None,
        "minute": None, "mclosed": None,
        "vit": {r: {"set": [], "urg": [], "clr": [], "oob": 0} for r in VITAL_RULES},
        "va": {"start": None, "last": None},
        "still": 0.0,
        "notup": {"rises": [], "fired": None, "up": None},
        "alerts": {}, "raises": {},
        "sleep": sleep_report.initial(),
    }


def resume(state: dict) -> dict:
    """Mark a restored state: the next step bridges the restart by wall time."""
    st = copy.deepcopy(state)
    if st.get("v") != STATE_VERSION:
        raise ValueError(f"alert state version {st.get('v')!r} is not {STATE_VERSION}")
    st["resumed"] = True
    st["panel"] = None          # the panel was reset by the restart: show it again
    return st


_DEFAULTS: dict | None = None


def merged_params(params: dict | None) -> dict:
    """Fill absent tables/keys with defaults, so a partial config (tests, replay) is enough."""
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = defaults()
    out = {name: dict(table) for name, table in _DEFAULTS.items()}
    for name, table in (params or {}).items():
        if isinstance(table, dict) and name in out:
            out[name].update(table)
    return out


# --- the pure step --------------------------------------------------------------------------

def evaluate(state: dict, observation, now: Now, params: dict) -> tuple[dict, list[Action]]:
    """One observation at one instant -> the new state and what to do; ``state`` is not changed."""
    st = copy.deepcopy(state)
    return st, step(st, observation, now, merged_params(params))


def step(st: dict, obs, now: Now, params: dict) -> list[Action]:
    """``evaluate`` in place, for an owner of the state (AlertEngine); returns the actions.

    ``params`` must be complete here (``merged_params``).
    """
    ctx = _Ctx(st, now, params)
    dt = _advance(st, now)
    _accumulate(ctx, dt)
    _close_minutes(ctx)
    _apply(ctx, obs)
    _timers(ctx)
    ctx.out.extend(sleep_report.on_time(st["sleep"], st["t"], now.wall, params["sleep_report"]))
    _note_rise(ctx)
    _housekeeping(ctx)
    _panel(ctx)
    return ctx.out


class _Ctx:
    __slots__ = ("st", "now", "p", "out", "t")

    def __init__(self, st, now, params):
        self.st, self.now, self.p, self.out = st, now, params, []
        self.t = st["t"]

    def on(self, rule: str) -> bool:
        return bool(self.p[rule].get("enabled", True))


def _advance(st: dict, now: Now) -> float:
    wall = now.wall
    if st["mono"] is None:
        dt = 0.0
    elif st["resumed"]:
        dt = (wall - datetime.fromisoformat(st["wall"])).total_seconds()
        dt = min(max(dt, 0.0), MAX_BRIDGE_S)
        LOGGER.info("alert state restored; bridging %.0f s since the last step", dt)
    else:
        dt = max(now.mono - st["mono"], 0.0)
    st["t"] += dt
    st["mono"], st["wall"], st["resumed"] = now.mono, wall.isoformat(), False
    return dt


def _accumulate(ctx: _Ctx, dt: float) -> None:
    """Time that counts only while a condition held during it (checked on the prior state)."""
    st, p = ctx.st, ctx.p["daytime_stillness"]
    ctx.t = st["t"]
    w = st["watch"]
    holds = (ctx.on("daytime_stillness") and w["worn"] is True and st["bed"]["in"] is not True
             and w["last"] is not None and ctx.t - w["last"] <= WATCH_FRESH_S
             and p["window"].contains_time(ctx.now.wall))
    st["still"] = st["still"] + dt if holds else 0.0


# --- one-minute medians ---------------------------------------------------------------------

def _median(values):
    v = sorted(values)
    n = len(v)
    if not n:
        return None
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _open_minute(st: dict, idx: int) -> dict:
    m = {"idx": idx, "hr": [], "rr": [], "in_bed": st["bed"]["in"] is True, "moved": False,
         "stages": {}, "readings": 0}
    st["minute"] = m
    return m


def _close_minutes(ctx: _Ctx) -> None:
    st = ctx.st
    idx = int(ctx.t // 60)
    m = st["minute"]
    if m is None or idx <= m["idx"]:
        return
    summary = {
        "idx": m["idx"], "start_t": m["idx"] * 60.0,
        "hr_med": _median(m["hr"]), "rr_med": _median(m["rr"]),
        "in_bed": m["in_bed"] and m["readings"] > 0, "moved": m["moved"],
        "stage": max(m["stages"], key=m["stages"].get) if m["stages"] else None,
    }
    st["minute"], st["mclosed"] = None, m["idx"]
    _vital_minute(ctx, summary)
    sleep_report.on_minute(st["sleep"], summary)


def _minute_for_reading(ctx: _Ctx) -> dict:
    """The open minute; opening one after minutes without readings marks those unknown."""
    st = ctx.st
    if st["minute"] is not None:
        return st["minute"]
    idx = int(ctx.t // 60)
    if st["mclosed"] is not None and idx - st["mclosed"] > 1:
        _vital_unknown(ctx, idx - st["mclosed"] - 1)
        sleep_report.on_gap(st["sleep"], idx - st["mclosed"] - 1)
    return _open_minute(st, idx)


def _vital_unknown(ctx: _Ctx, n: int) -> None:
    for rule in VITAL_RULES:
        v = ctx.st["vit"][rule]
        for key in ("set", "urg", "clr"):
            v[key] = (v[key] + ["u"] * min(n, 400))[-400:]


def _vital_minute(ctx: _Ctx, mnt: dict) -> None:
    """R7/R8: judge each closed minute for hr_high, hr_low, rr_high, rr_low."""
    st = ctx.st
    last_move = st["last_move"]
    for rule in VITAL_RULES:
        if not ctx.on(rule):
            continue
        p = ctx.p[rule]
        v = st["vit"][rule]
        high = rule.endswith("_high")
        value = mnt["hr_med"] if rule.startswith("hr") else mnt["rr_med"]
        quiet = last_move is None or last_move < mnt["start_t"] - p["quiet_for"]
        judged = mnt["in_bed"] and quiet and value is not None
        v["oob"] = 0 if mnt["in_bed"] else v["oob"] + 1

        def status(level, beyond_high):
            if not judged or level is None:
                return "u"
            return "y" if (value >= level if beyond_high else value <= level) else "n"

        clear_level = p["clear_below"] if high else p["clear_above"]
        n_set, n_urg, n_clr = (max(1, round(p[k] / 60))
                               for k in ("persist", "urgent_persist", "clear_persist"))
        v["set"] = (v["set"] + [status(p["threshold"], high)])[-n_set:]
        v["urg"] = (v["urg"] + [status(p["urgent_threshold"], high)])[-n_urg:]
        if judged:
            beyond = value < clear_level if high else value > clear_level
            v["clr"] = (v["clr"] + ["y" if beyond else "n"])[-n_clr:]
        else:
            v["clr"] = (v["clr"] + ["u"])[-n_clr:]
        cov = p["min_coverage"]
        urgent = p["urgent_threshold"] is not None and _met(v["urg"], n_urg, cov)
        warn = _met(v["set"], n_set, cov)
        rec = st["alerts"].get(rule)
        if rule == "hr_low" and rec is not None and any(
                r in st["alerts"] and st["alerts"][r]["stage"] != "prealert"
                for r in ("rr_low", "vitals_absent")):
            urgent = True       # reference: low HR pages only with low/absent breathing
        details = {"median_per_min" if rule.startswith("rr") else "median_bpm": value,
                   "threshold": p["threshold"], "minutes_judged": v["set"].count("y")}
        kind = {"hr_high": "heart rate high", "hr_low": "heart rate low",
                "rr_high": "breathing rate high", "rr_low": "breathing rate low"}[rule]
        if urgent or warn:
            prio = 1 if urgent else 2
            _settle(ctx, rule, True, prio, f"{kind} in bed at rest ({value:g})", details)
        elif _met(v["clr"], n_clr, 1.0) and "u" not in v["clr"]:
            _settle(ctx, rule, False, reason=f"{kind}: back to normal")
        elif rec is not None and v["oob"] >= n_clr:
            _settle(ctx, rule, False, reason="out of bed, no longer measured")


def _met(seq: list, n: int, coverage: float) -> bool:
    return len(seq) >= n and "n" not in seq[-n:] and seq[-n:].count("y") >= math.ceil(
        coverage * n - 1e-9)


# --- observations ---------------------------------------------------------------------------

def _apply(ctx: _Ctx, obs) -> None:
    if isinstance(obs, BeltReading):
        _belt(ctx, obs)
    elif isinstance(obs, BedChange):
        _bed(ctx, obs.in_bed)
    elif isinstance(obs, ButtonPress):
        _button(ctx, obs)
    elif isinstance(obs, WatchObservation):
        _watch(ctx, obs)
    elif isinstance(obs, DeviceStatus):
        _device(ctx, obs)
    elif isinstance(obs, StaffAck):
        _ack(ctx, obs)
    elif isinstance(obs, StaffClose):
        rec = _find(ctx.st, obs.alert_id)
        if rec is not None:
            _resolve(ctx, rec, "closed by staff", by=obs.by)
    elif not isinstance(obs, Tick):
        raise TypeError(f"not an observation: {type(obs).__name__}")


def _bed(ctx: _Ctx, in_bed: bool) -> None:
    st, b = ctx.st, ctx.st["bed"]
    if in_bed:
        st["sign"] = ctx.t
    if b["in"] is in_bed:
        return
    if b["in"] is True and not in_bed:
        b["prev_in_s"] = ctx.t - b["since"]
        b["exit_in_window"] = ctx.p["night_bed_exit"]["window"].contains_time(ctx.now.wall)
    b["in"], b["since"] = in_bed, ctx.t
    m = st["minute"]
    if m is not None and not in_bed:
        m["in_bed"] = False
    ctx.out.extend(sleep_report.on_bed(st["sleep"], in_bed, ctx.t, ctx.now.wall,
                                       ctx.p["sleep_report"]))


def _belt(ctx: _Ctx, obs: BeltReading) -> None:
    st, r = ctx.st, obs.reading
    st["belt"]["last"], st["belt"]["last_wall"] = ctx.t, ctx.now.wall.isoformat()
    if "belt_offline" in st["alerts"]:
        _settle(ctx, "belt_offline", False, reason="readings resumed")
    if r.kind == "window":
        if r.turnover_count is not None:
            sleep_report.on_turnovers(st["sleep"], r.turnover_count)
        return
    if r.kind not in ("instant", "event"):
        return
    bed = obs.bed()
    if bed is not None:
        _bed(ctx, bed)
    m = _minute_for_reading(ctx)
    m["readings"] += 1
    if st["bed"]["in"] is not True:
        m["in_bed"] = False
    large = (r.motion == MOTION_ACTIVE or r.resp_state == RESP_MOVEMENT
             or (r.movement_index is not None and r.movement_index >= LARGE_MOVEMENT_INDEX))
    if large:
        st["last_move"] = ctx.t
        m["moved"] = True
        sleep_report.on_movement(st["sleep"], ctx.t)
    hr = r.heart_rate_bpm if r.heart_rate_bpm is not None and \
        HR_VALID[0] <= r.heart_rate_bpm <= HR_VALID[1] else None
    rr = r.resp_rate_per_min if r.resp_rate_per_min is not None and \
        RR_VALID[0] <= r.resp_rate_per_min <= RR_VALID[1] else None
    if r.resp_state in (RESP_APNEA, RESP_NONE):
        rr = None
    if len(m["hr"]) < MAX_SAMPLES_PER_MINUTE:
        if hr is not None:
            m["hr"].append(hr)
        if rr is not None:
            m["rr"].append(rr)
    if rr is not None:
        st["last_rr_t"] = ctx.t
    if r.sleep_stage:
        m["stages"][r.sleep_stage] = m["stages"].get(r.sleep_stage, 0) + 1
    _vitals_absent(ctx, r, bed, hr, rr, large)


def _vitals_absent(ctx: _Ctx, r, bed, hr, rr, large) -> None:
    """R9: occupied, fresh readings, no heart rate, no breathing, no movement."""
    if not ctx.on("vitals_absent") or bed is None:
        return
    p, va = ctx.p["vitals_absent"], ctx.st["va"]
    moving = large or (r.movement_index is not None
                       and r.movement_index > p["still_movement_index"])
    absent = bed and r.presence is not False and hr is None and rr is None and not moving
    rec = ctx.st["alerts"].get("vitals_absent")
    if not absent:
        va["start"] = va["last"] = None
        if rec is not None:
            why = "out of bed" if not bed else "movement or breathing resumed"
            _settle(ctx, "vitals_absent", False, reason=why, by="resident")
        return
    if va["start"] is None or ctx.t - va["last"] > p["max_sample_gap"]:
        va["start"] = ctx.t
    va["last"] = ctx.t
    elapsed = ctx.t - va["start"]
    details = {"seconds_without_vitals": round(elapsed, 1), "presence": r.presence,
               "resp_state": r.resp_state, "movement_index": r.movement_index}
    if elapsed >= p["alert_after"]:
        _settle(ctx, "vitals_absent", True, 1,
                "in bed, no heart rate, breathing or movement detected", details)
    elif elapsed >= p["prealert_after"] and rec is None:
        _prealert(ctx, "vitals_absent", 1, "in bed, no vital signs detected: resident prompted",
                  details)


def _button(ctx: _Ctx, press: ButtonPress) -> None:
    st = ctx.st
    st["sign"] = ctx.t
    if press.button == "sos":
        _sos(ctx, press.source)
        return
    pre = [r for r in st["alerts"].values() if r["stage"] == "prealert"]
    for rec in pre:
        _cancel(ctx, rec, "resident", f"OK pressed on the {press.source}")
        if rec["rule"] == "vitals_absent":
            st["va"]["start"] = st["va"]["last"] = None
        if rec["rule"] == "daytime_stillness":
            st["still"] = 0.0
    if pre:
        return
    for rule in EVENT_RULES:
        rec = st["alerts"].get(rule)
        if rec is not None:     # reported, never closes: staff close SOS and falls
            ctx.out.append(Emit("alert.resident_ok", ACK_EVENT_PRIORITY, {
                "alert_id": rec["id"], "rule": rule, "source": press.source}))


def _sos(ctx: _Ctx, source: str) -> None:
    if not ctx.on("sos"):
        return
    rec = ctx.st["alerts"].get("sos")
    if rec is not None:         # a second press never cancels; it insists
        rec["presses"] = rec.get("presses", 1) + 1
        rec["notify_t"] = ctx.t
        ctx.out.append(Emit("alert.renotified", 1, {
            "alert_id": rec["id"], "rule": "sos", "priority": 1, "count": rec["presses"],
            "reason": f"SOS pressed again on the {source}"}))
        return
    details = {"source": source}
    if source == "watch" and ctx.st["watch"]["location"] is not None:
        details["location"] = ctx.st["watch"]["location"]
    _raise(ctx, "sos", 1, f"SOS pressed on the {source}", details)


def _watch(ctx: _Ctx, w: WatchObservation) -> None:
    st, ws = ctx.st, ctx.st["watch"]
    ws["seen"], ws["last"] = True, ctx.t
    if w.location is not None:
        ws["location"] = dict(w.location)
    if w.worn is not None:
        if w.worn is False and ws["worn"] is not False:
            ws["unworn_since"] = ctx.t
        ws["worn"] = w.worn
    if w.moving or (w.hr_bpm is not None and ws["worn"] is True):
        st["sign"] = ctx.t
    if w.moving:
        st["still"] = 0.0
        if "daytime_stillness" in st["alerts"]:
            _settle(ctx, "daytime_stillness", False, reason="moving again", by="resident")
    if w.battery_pct is not None:
        _battery(ctx, w.battery_pct)
    if "watch_offline" in st["alerts"] and ws["worn"] is not False:
        _settle(ctx, "watch_offline", False, reason="watch seen and worn")
    if w.sos:
        _sos(ctx, "watch")
    if w.fall and w.worn is not False and ctx.on("fall") and "fall" not in st["alerts"]:
        details = {"source": "watch"}
        if ws["location"] is not None:
            details["location"] = ws["location"]
        _prealert(ctx, "fall", 1, "fall detected by the watch: resident prompted", details,
                  cancel_within_s=ctx.p["fall"]["cancel_window"])


def _battery(ctx: _Ctx, pct: float) -> None:
    ctx.st["watch"]["battery"] = pct
    if not ctx.on("watch_battery_low"):
        return
    p = ctx.p["watch_battery_low"]
    if pct < p["below"]:
        _settle(ctx, "watch_battery_low", True, 3, f"watch battery low ({pct:g}%)",
                {"battery_pct": pct})
    elif pct >= p["clear_above"]:
        _settle(ctx, "watch_battery_low", False, reason=f"watch battery at {pct:g}%")


def _device(ctx: _Ctx, d: DeviceStatus) -> None:
    if d.device == "belt":
        ctx.st["belt"]["status"] = d.state
    elif d.device == "watch" and d.battery_pct is not None:
        _battery(ctx, d.battery_pct)


def _ack(ctx: _Ctx, ack: StaffAck) -> None:
    rec = _find(ctx.st, ack.alert_id)
    if rec is None or rec["stage"] == "acked":
        LOGGER.info("acknowledgement for %s: no such open alert, ignored", ack.alert_id)
        return
    rec["stage"], rec["acked_t"], rec["by"] = "acked", ctx.t, ack.by
    ctx.out.append(Emit("alert.acknowledged", ACK_EVENT_PRIORITY, {
        "alert_id": rec["id"], "rule": rec["rule"], "by": ack.by, "at": ack.at,
        "response_s": round(ctx.t - (rec["raised_t"] or rec["since"]), 1)}))


# --- timers ---------------------------------------------------------------------------------

def _timers(ctx: _Ctx) -> None:
    st, t, wall = ctx.st, ctx.t, ctx.now.wall
    alerts, b = st["alerts"], st["bed"]
    # R2: the fall pre-alert runs out
    rec = alerts.get("fall")
    if rec is not None and rec["stage"] == "prealert" and \
            t - rec["since"] >= ctx.p["fall"]["cancel_window"]:
        _raise(ctx, "fall", 1, "fall detected by the watch, not cancelled", rec["details"])
    # R9: readings stopped during a pre-alert: that is not evidence (belt_offline's business)
    va = st["va"]
    if va["start"] is not None and t - va["last"] > ctx.p["vitals_absent"]["max_sample_gap"]:
        va["start"] = va["last"] = None
        rec = alerts.get("vitals_absent")
        if rec is not None and rec["stage"] == "prealert":
            _resolve(ctx, rec, "belt readings stopped; see belt_offline")
    # R3: night bed exit not returned
    if ctx.on("night_bed_exit"):
        p = ctx.p["night_bed_exit"]
        out_s = t - b["since"]
        if b["in"] is False and b["exit_in_window"] and b["prev_in_s"] >= p["min_in_bed"]:
            details = {"minutes_out_of_bed": round(out_s / 60, 1),
                       "in_bed_before_min": round(b["prev_in_s"] / 60, 1)}
            msg = f"out of bed for {out_s / 60:.0f} min at night, not back"
            if out_s >= p["escalate_after"] and "night_bed_exit" in alerts:
                _settle(ctx, "night_bed_exit", True, 1, msg, details)
            elif out_s >= p["max_out_of_bed"] and p["window"].contains_time(wall):
                _settle(ctx, "night_bed_exit", True, 1 if out_s >= p["escalate_after"] else 2,
                        msg, details)
        elif b["in"] is True and "night_bed_exit" in alerts:
            _settle(ctx, "night_bed_exit", False, reason="back in bed")
    # R5: stuck in bed
    if ctx.on("stuck_in_bed"):
        in_s = t - b["since"]
        if b["in"] is True and in_s >= ctx.p["stuck_in_bed"]["max_in_bed"]:
            _settle(ctx, "stuck_in_bed", True, 2, f"in bed for {in_s / 3600:.1f} h without a break",
                    {"hours_in_bed": round(in_s / 3600, 1)})
        elif b["in"] is False and "stuck_in_bed" in alerts:
            _settle(ctx, "stuck_in_bed", False, reason="out of bed")
    _not_up(ctx)
    # R10: daytime stillness
    if ctx.on("daytime_stillness"):
        p = ctx.p["daytime_stillness"]
        rec = alerts.get("daytime_stillness")
        details = {"still_min": round(st["still"] / 60, 1)}
        if st["still"] >= p["still_for"] + p["prompt_for"] and rec is not None:
            _settle(ctx, "daytime_stillness", True, 2, "no movement on the watch for "
                    f"{st['still'] / 3600:.1f} h during the day", details)
        elif st["still"] >= p["still_for"] and rec is None:
            _prealert(ctx, "daytime_stillness", 2, "no movement on the watch: resident asked",
                      details, cancel_within_s=p["prompt_for"])
        elif st["still"] == 0.0 and rec is not None and rec["stage"] == "prealert":
            _cancel(ctx, rec, "resident", "condition ended")
    # R11: no sign of life, judged only while some device is reporting
    if ctx.on("no_sign_of_life"):
        quiet_s = t - st["sign"]
        belt_fresh = st["belt"]["last"] is not None and t - st["belt"]["last"] <= BELT_FRESH_S
        watch_fresh = st["watch"]["last"] is not None and t - st["watch"]["last"] <= WATCH_FRESH_S
        if quiet_s >= ctx.p["no_sign_of_life"]["after"] and (belt_fresh or watch_fresh):
            _settle(ctx, "no_sign_of_life", True, 1,
                    f"no sign of life for {quiet_s / 3600:.1f} h",
                    {"hours_without_sign": round(quiet_s / 3600, 1)})
        elif quiet_s == 0.0 and "no_sign_of_life" in alerts:
            _settle(ctx, "no_sign_of_life", False, reason="sign of life")
    # R12: technical
    if ctx.on("belt_offline"):
        last = st["belt"]["last"]
        gap = t - (last if last is not None else 0.0)
        if gap >= ctx.p["belt_offline"]["alert_after"]:
            _settle(ctx, "belt_offline", True, 3, f"no data from the bed sensor for "
                    f"{gap / 60:.0f} min", {"last_reading_at": st["belt"]["last_wall"],
                                            "link": st["belt"]["status"]})
    ws = st["watch"]
    if ctx.on("watch_offline") and ws["seen"]:
        p = ctx.p["watch_offline"]
        unseen = t - ws["last"]
        unworn = t - ws["unworn_since"] if ws["worn"] is False else 0.0
        if max(unseen, unworn) >= p["alert_after"] and p["window"].contains_time(wall):
            what = "not seen" if unseen >= unworn else "not worn"
            _settle(ctx, "watch_offline", True, 3,
                    f"watch {what} for {max(unseen, unworn) / 60:.0f} min", {"state": what})


def _not_up(ctx: _Ctx) -> None:
    """R4: still in bed at max(latest, median rise + margin), once a day.

    "Still" needs evidence of the morning: the engine ran before the due time, or the current
    stay in bed began before day_start; a hub started at 15:00 beside a napping resident is silent.
    """
    if not ctx.on("not_up"):
        return
    st, p, wall, b = ctx.st, ctx.p["not_up"], ctx.now.wall, ctx.st["bed"]
    nu = st["notup"]
    today = wall.date().isoformat()
    minute = wall.hour * 60 + wall.minute
    if b["in"] is False and minute >= p["day_start"] and ctx.t - b["since"] >= p["up_after"]:
        nu["up"] = today
    due = p["latest"]
    rises = nu["rises"][-p["baseline_nights"]:]
    if len(rises) >= p["baseline_nights"]:
        due = max(due, _median(rises) + p["rise_margin"] / 60)
    if minute < due:
        nu["morning"] = today   # the engine saw this morning before the due time
    since_wall = wall - timedelta(seconds=ctx.t - b["since"])
    from_night = since_wall.date() < wall.date() or \
        since_wall.hour * 60 + since_wall.minute < p["day_start"]
    if (b["in"] is True and due <= minute < p["until"] and nu["up"] != today
            and nu["fired"] != today and (nu.get("morning") == today or from_night)):
        nu["fired"] = today
        breathing = st["last_rr_t"] is not None and ctx.t - st["last_rr_t"] <= 300
        msg = "not up by %02d:%02d: in bed%s" % (
            due // 60, due % 60, ", breathing detected" if breathing else "")
        _settle(ctx, "not_up", True, 2, msg, {"due": "%02d:%02d" % (due // 60, due % 60),
                                              "breathing_detected": breathing})
    elif b["in"] is False and "not_up" in st["alerts"]:
        _settle(ctx, "not_up", False, reason="got up")


def _note_rise(ctx: _Ctx) -> None:
    """Learn rise times from nights that ended by getting up (for not_up's baseline)."""
    sl = ctx.st["sleep"]
    end = sl.pop("last_end_wall", None)
    why = sl.pop("last_end_reason", None)
    if end and why == "out of bed":
        w = datetime.fromisoformat(end)
        rises = ctx.st["notup"]["rises"]
        rises.append(w.hour * 60 + w.minute)
        del rises[:-60]


# --- the lifecycle --------------------------------------------------------------------------

def _find(st: dict, alert_id: str) -> dict | None:
    return next((r for r in st["alerts"].values() if r["id"] == alert_id), None)


def _new_record(ctx: _Ctx, rule: str, priority: int, message: str, details: dict) -> dict:
    st = ctx.st
    st["n"] += 1
    rec = {"id": f"{st['seed']}-{st['n']:06d}", "rule": rule, "priority": priority,
           "stage": "new", "since": ctx.t, "raised_t": None, "notify_t": ctx.t,
           "renotified": 0, "count": 1, "flapping": False, "clear_t": None,
           "acked_t": None, "by": None, "message": message, "details": details}
    st["alerts"][rule] = rec
    return rec


def _prealert(ctx: _Ctx, rule, priority, message, details, cancel_within_s=None) -> None:
    rec = _new_record(ctx, rule, priority, message, details)
    rec["stage"] = "prealert"
    data = {"alert_id": rec["id"], "rule": rule, "priority": priority, "message": message,
            "details": details}
    if cancel_within_s is not None:
        data["cancel_within_s"] = cancel_within_s
    ctx.out.append(Emit("alert.prealert", PREALERT_EVENT_PRIORITY, data))


def _raise(ctx: _Ctx, rule, priority, message, details) -> None:
    st, a = ctx.st, ctx.p["alerts"]
    rec = st["alerts"].get(rule)
    if rec is None:
        rec = _new_record(ctx, rule, priority, message, details)
    raises = [x for x in st["raises"].get(rule, []) if ctx.t - x < a["flap_window"]] + [ctx.t]
    st["raises"][rule] = raises[-a["flap_count"]:]
    details = dict(details)
    if len(raises) >= a["flap_count"] and rule not in EVENT_RULES:
        rec["flapping"], rec["count"] = True, len(raises)
        details["flap_count"] = len(raises)
    rec.update(stage="raised", priority=priority, since=ctx.t, raised_t=ctx.t, notify_t=ctx.t,
               message=message, details=details)
    LOGGER.info("alert %s raised: %s (P%d)", rule, message, priority)
    ctx.out.append(Emit("alert.raised", priority, {
        "alert_id": rec["id"], "rule": rule, "priority": priority, "message": message,
        "details": details}))
    sleep_report.on_alert(st["sleep"], rule, priority, ctx.now.wall)


def _settle(ctx: _Ctx, rule, active: bool, priority=None, message="", details=None,
            reason="", by="resident") -> None:
    """A condition rule's verdict: set (raise, re-arm a flapping alert, escalate) or clear."""
    rec = ctx.st["alerts"].get(rule)
    if active:
        if rec is None or rec["stage"] == "prealert":
            _raise(ctx, rule, priority, message, details or {})
        elif rec["flapping"] and rec["clear_t"] is not None:
            rec["clear_t"], rec["count"] = None, rec["count"] + 1
        elif priority < rec["priority"]:
            rec["priority"], rec["message"], rec["notify_t"] = priority, message, ctx.t
            if rec["stage"] == "acked":
                rec["stage"] = "raised"     # a worse state needs a new acknowledgement
            ctx.out.append(Emit("alert.escalated", priority, {
                "alert_id": rec["id"], "rule": rule, "priority": priority, "message": message}))
        return
    if rec is None:
        return
    if rec["stage"] == "prealert":
        _cancel(ctx, rec, by, reason)
    elif rec["flapping"]:
        if rec["clear_t"] is None:
            rec["clear_t"] = ctx.t
    else:
        _resolve(ctx, rec, reason)


def _cancel(ctx: _Ctx, rec: dict, by: str, reason: str) -> None:
    del ctx.st["alerts"][rec["rule"]]
    ctx.out.append(Emit("alert.cancelled", PREALERT_EVENT_PRIORITY, {
        "alert_id": rec["id"], "rule": rec["rule"], "by": by, "reason": reason}))


def _resolve(ctx: _Ctx, rec: dict, reason: str, by: str | None = None) -> None:
    del ctx.st["alerts"][rec["rule"]]
    data = {"alert_id": rec["id"], "rule": rec["rule"], "reason": reason}
    if rec["count"] > 1:
        data["count"] = rec["count"]
    if by is not None:
        data["by"] = by
    LOGGER.info("alert %s resolved: %s", rec["rule"], reason)
    prio = rec["priority"] if rec["stage"] != "prealert" else PREALERT_EVENT_PRIORITY
    ctx.out.append(Emit("alert.resolved", prio, data))


def _housekeeping(ctx: _Ctx) -> None:
    st, t, a = ctx.st, ctx.t, ctx.p["alerts"]
    for rec in list(st["alerts"].values()):
        rule = rec["rule"]
        if rec["flapping"] and rec["clear_t"] is not None and t - rec["clear_t"] >= a[
                "flap_window"]:
            _resolve(ctx, rec, f"stable for {a['flap_window'] / 60:.0f} min after "
                     f"{rec['count']} raises")
            continue
        if rule in EVENT_RULES and rec["stage"] == "acked" and \
                t - rec["acked_t"] >= a["close_acked_after"]:
            _resolve(ctx, rec, "closed after acknowledgement")
            continue
        if rec["stage"] != "raised":
            continue
        every = ctx.p[rule].get("renotify") or a[f"renotify_p{rec['priority']}"]
        if every and t - rec["notify_t"] >= every:
            rec["notify_t"] = t
            rec["renotified"] += 1
            ctx.out.append(Emit("alert.renotified", rec["priority"], {
                "alert_id": rec["id"], "rule": rule, "priority": rec["priority"],
                "count": rec["renotified"], "reason": "not acknowledged"}))


def panel_state(st: dict) -> tuple[str, str]:
    """What the resident should see: a pending question first, then help status."""
    recs = [r for r in st["alerts"].values() if r["priority"] <= 2]
    if any(r["stage"] == "prealert" for r in recs):
        return LED_PREALERT, BUZZER_PREALERT
    raised = [r for r in recs if r["stage"] == "raised"]
    if raised:
        return LED_ALERT, BUZZER_ALERT if any(r["priority"] == 1 for r in raised) else BUZZER_OFF
    if any(r["stage"] == "acked" for r in recs):
        return LED_ACKNOWLEDGED, BUZZER_OFF
    return LED_OK, BUZZER_OFF


def _panel(ctx: _Ctx) -> None:
    led, buzzer = panel_state(ctx.st)
    if ctx.st["panel"] != [led, buzzer]:
        ctx.st["panel"] = [led, buzzer]
        ctx.out.append(Panel(led, buzzer))


class AlertEngine:
    """The owner of one alert state: ``handle(observation, now) -> actions``.

    ``params`` is ``{**cfg["rules"], "alerts": cfg["alerts"], "sleep_report": cfg["sleep_report"]}``
    (missing tables and keys take their defaults). Pass a state loaded from the store to continue
    after a restart; persist ``engine.state`` (``json.dumps``) whenever ``handle`` returned actions
    and at least once a minute otherwise.
    """

    def __init__(self, params: dict | None = None, state: dict | None = None, *,
                 seed: str | None = None):
        self.params = merged_params(params)
        self.state = resume(state) if state is not None else initial_state(seed)

    def handle(self, observation, now: Now) -> list[Action]:
        return step(self.state, observation, now, self.params)

    def active_alerts(self) -> list[dict]:
        """For ``carehub status``: rule, alert_id, priority, stage, message."""
        return [{"rule": r["rule"], "alert_id": r["id"], "priority": r["priority"],
                 "stage": r["stage"], "message": r["message"]}
                for r in self.state["alerts"].values()]

    def panel(self) -> tuple[str, str]:
        return panel_state(self.state)
