"""The local alert engine: ``evaluate(state, observation, now, params) -> (state, actions)``.

Pure: no I/O, no clock reads; the same observations at the same instants give the same actions,
so the daemon, ``carehub replay`` and the tests share it. Each step folds the observation into
the resident's fused state (resident.py), then every rule family reads that state:
vitals.py, night.py (bed and night), activity.py (not up, stillness, sign of life),
buttons.py, watch.py; lifecycle.py raises, cancels and resolves for all of them.

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
import secrets
from datetime import datetime

from . import activity, buttons, minute, night, resident, sleep_report, vitals, watch
from .actions import Action
from .lifecycle import Ctx, acknowledge, close, housekeeping, panel_state, show_panel
from .observations import (BeltReading, ButtonPress, DeviceStatus, Now, StaffAck, StaffClose,
                           Tick, WatchObservation)
from .params import defaults

LOGGER = logging.getLogger(__name__)

STATE_VERSION = 2
MAX_BRIDGE_S = 24 * 3600        # a restart gap counts at most this long
MINUTE_EVENT = "vitals.minute"


# --- state ----------------------------------------------------------------------------------

def initial_state(seed: str | None = None) -> dict:
    """A fresh state; ``seed`` makes alert ids reproducible (replay, tests)."""
    return {
        "v": STATE_VERSION, "seed": seed or secrets.token_hex(4), "n": 0,
        "t": 0.0, "mono": None, "wall": None, "resumed": False, "panel": None,
        "resident": resident.initial(), "minute": None, "minute_closed": None,
        "vitals": vitals.initial(), "night": night.initial(), "activity": activity.initial(),
        "not_up": activity.initial_not_up(), "watch": watch.initial(),
        "alerts": {}, "raises": {}, "sleep": sleep_report.initial(),
    }


def _migrate_v1(old: dict) -> dict:
    """A state saved by the single-module engine (v1): keep what still matters after a restart
    (alerts and ids, bed state with its start, rise times, the night's report); evidence rules
    start afresh, as they do after any restart."""
    st = initial_state(old["seed"])
    for key in ("n", "t", "mono", "wall", "alerts", "raises", "sleep"):
        st[key] = old[key]
    bed, res = old.get("bed", {}), st["resident"]
    res["in_bed"], res["in_bed_since"] = bed.get("in"), bed.get("since", 0.0)
    res["bed_candidate"], res["bed_candidate_since"] = bed.get("in"), bed.get("since", 0.0)
    res["previous_stay_s"] = bed.get("prev_in_s", 0.0)
    res["last_reading_t"] = old.get("belt", {}).get("last")
    res["rr_t"], res["large_movement_t"] = old.get("last_rr_t"), old.get("last_move")
    st["night"]["exit_in_window"] = bed.get("exit_in_window", False)
    st["activity"] = {"last_sign_t": old.get("sign", 0.0), "still_s": old.get("still", 0.0)}
    st["not_up"].update(old.get("notup", {}))
    st["watch"].update(old.get("watch", {}))
    LOGGER.info("alert state of version 1 migrated to %d", STATE_VERSION)
    return st


def resume(state: dict) -> dict:
    """Mark a restored state: the next step bridges the restart by wall time."""
    st = copy.deepcopy(state)
    if st.get("v") == 1:
        st = _migrate_v1(st)
    if st.get("v") != STATE_VERSION:
        raise ValueError(f"alert state version {st.get('v')!r} is not {STATE_VERSION}")
    st["resumed"] = True
    st["panel"] = None          # the panel was reset by the restart: show it again
    resident.forget_device_view(st["resident"])
    return st


_DEFAULTS: dict | None = None


def merged_params(params: dict | None) -> dict:
    """Fill absent tables/keys with defaults, so a partial config (tests, replay) is enough.

    ``params["bed"]`` (the belt's ``enter_debounce``, ``exit_debounce``, ``bed_max_distance_m``)
    drives the in-bed debounce.
    """
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = defaults()
        _DEFAULTS["bed"] = dict(resident.BED_DEFAULTS)
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
    ctx = Ctx(st, now, params)
    dt = _advance(st, now)
    ctx.t = st["t"]
    activity.accumulate(ctx, dt)
    _settle_bed(ctx)            # before the minute closes: it gets the true in-bed seconds
    _close_minute(ctx)
    _apply(ctx, obs)
    watch.on_fall_timer(ctx)
    vitals.judge_absent(ctx)
    night.on_time(ctx)
    activity.on_time(ctx)
    watch.on_time(ctx)
    ctx.out.extend(sleep_report.on_time(st["sleep"], ctx.t, now.wall, params["sleep_report"]))
    activity.note_rise(ctx)
    housekeeping(ctx)
    show_panel(ctx)
    return ctx.out


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


def _close_minute(ctx: Ctx) -> None:
    summary, data = minute.advance(ctx.st, ctx.t, ctx.now.wall)
    if summary is not None:
        if data is not None:
            ctx.emit(MINUTE_EVENT, minute.MINUTE_PRIORITY, data)
        vitals.on_minute(ctx, summary)
        sleep_report.on_minute(ctx.st["sleep"], summary)


def _settle_bed(ctx: Ctx) -> None:
    change = resident.settle(ctx.st["resident"], ctx.t, ctx.now.wall, ctx.p["bed"])
    if change is None:
        return
    in_bed, true_t, true_wall, event, data = change
    if event is not None:
        ctx.emit(event, 3, data)
    minute.bed_changed(ctx.st, in_bed, true_t)
    night.on_bed_change(ctx, in_bed, true_wall)
    ctx.out.extend(sleep_report.on_bed(ctx.st["sleep"], in_bed, true_t, true_wall,
                                       ctx.p["sleep_report"]))


def _belt(ctx: Ctx, obs: BeltReading) -> None:
    st, r = ctx.st, obs.reading
    facts = resident.on_reading(st["resident"], r, ctx.t, ctx.p["bed"])
    night.on_reading(ctx)
    if r.kind not in ("instant", "window", "event"):
        return
    if r.kind == "window" and r.turnover_count is not None:
        sleep_report.on_turnovers(st["sleep"], r.turnover_count)
    if resident.seen(st["resident"], facts):
        activity.sign_of_life(ctx)
    _settle_bed(ctx)
    m, gap = minute.for_reading(st, ctx.t)
    if gap:
        vitals.on_unknown_minutes(ctx, gap)
        sleep_report.on_gap(st["sleep"], gap)
    minute.add(m, st, facts, ctx.t)
    if facts.large_movement:
        sleep_report.on_movement(st["sleep"], ctx.t)
    vitals.on_reading(ctx, facts)


def _apply(ctx: Ctx, obs) -> None:
    if isinstance(obs, BeltReading):
        _belt(ctx, obs)
    elif isinstance(obs, ButtonPress):
        activity.sign_of_life(ctx)
        if obs.button == "sos":
            buttons.sos(ctx, obs.source)
        else:
            buttons.ok(ctx, obs.source, {"vitals_absent": vitals.answered,
                                         "daytime_stillness": activity.watch_moved})
    elif isinstance(obs, WatchObservation):
        watch.on_observation(ctx, obs, buttons.sos, activity.sign_of_life, activity.watch_moved)
    elif isinstance(obs, DeviceStatus):
        if obs.device == "belt":       # (a reconnect re-asks MicRadar: see micradar.py)
            night.on_belt_status(ctx, obs.state)
        elif obs.device == "watch":
            watch.on_link(ctx, obs.state, obs.battery_pct)
    elif isinstance(obs, StaffAck):
        acknowledge(ctx, obs.alert_id, obs.by, obs.at)
    elif isinstance(obs, StaffClose):
        close(ctx, obs.alert_id, obs.by)
    elif not isinstance(obs, Tick):
        raise TypeError(f"not an observation: {type(obs).__name__}")


class AlertEngine:
    """The owner of one alert state: ``handle(observation, now) -> actions``.

    ``params`` is ``{**cfg["rules"], "alerts": cfg["alerts"], "sleep_report": cfg["sleep_report"],
    "bed": {...}}`` (missing tables and keys take their defaults). Pass a state loaded from the
    store to continue after a restart; persist ``engine.state`` (``json.dumps``) whenever
    ``handle`` returned actions and at least once a minute otherwise.
    """

    def __init__(self, params: dict | None = None, state: dict | None = None, *,
                 seed: str | None = None):
        self.params = merged_params(params)
        self.state = resume(state) if state is not None else initial_state(seed)
        self.readings_handled = 0       # belt readings judged by this run (lock-step players)

    def handle(self, observation, now: Now) -> list[Action]:
        if type(observation) is BeltReading:
            self.readings_handled += 1
        return step(self.state, observation, now, self.params)

    def active_alerts(self) -> list[dict]:
        """For ``carehub status``: rule, alert_id, priority, stage, message."""
        return [{"rule": r["rule"], "alert_id": r["id"], "priority": r["priority"],
                 "stage": r["stage"], "message": r["message"]}
                for r in self.state["alerts"].values()]

    def panel(self) -> tuple[str, str]:
        return panel_state(self.state)
