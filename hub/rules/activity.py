"""Activity rules: not_up (R4), daytime_stillness (R10), no_sign_of_life (R11).

A sign of life is the belt showing the resident (presence, in bed, a heartbeat or breath), the
worn watch moving or measuring a heart rate, or a button press.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .lifecycle import Ctx, cancel, prealert, settle
from .minute import median
from .watch import WATCH_FRESH_S

RULES = ("not_up", "daytime_stillness", "no_sign_of_life")
BELT_FRESH_S = 120.0            # a belt reading this recent means the belt is reporting
BREATHING_RECENT_S = 300.0      # not_up's message says "breathing detected" within this


def initial() -> dict:
    return {"last_sign_t": 0.0, "still_s": 0.0}


def initial_not_up() -> dict:
    return {"rises": [], "fired": None, "up": None, "morning": None}


def sign_of_life(ctx: Ctx) -> None:
    ctx.st["activity"]["last_sign_t"] = ctx.t


def accumulate(ctx: Ctx, dt: float) -> None:
    """Stillness counts only while its condition held during the time that passed."""
    st = ctx.st
    w = st["watch"]
    holds = (ctx.on("daytime_stillness") and w["worn"] is True
             and st["resident"]["in_bed"] is not True
             and w["last"] is not None and ctx.t - w["last"] <= WATCH_FRESH_S
             and ctx.p["daytime_stillness"]["window"].contains_time(ctx.now.wall))
    st["activity"]["still_s"] = st["activity"]["still_s"] + dt if holds else 0.0


def watch_moved(ctx: Ctx) -> None:
    ctx.st["activity"]["still_s"] = 0.0
    if "daytime_stillness" in ctx.st["alerts"]:
        settle(ctx, "daytime_stillness", False, reason="moving again", by="resident")


def on_time(ctx: Ctx) -> None:
    st, t, alerts = ctx.st, ctx.t, ctx.st["alerts"]
    _not_up(ctx)
    if ctx.on("daytime_stillness"):
        p, still = ctx.p["daytime_stillness"], st["activity"]["still_s"]
        rec = alerts.get("daytime_stillness")
        details = {"still_min": round(still / 60, 1)}
        if still >= p["still_for"] + p["prompt_for"] and rec is not None:
            settle(ctx, "daytime_stillness", True, 2, "no movement on the watch for "
                   f"{still / 3600:.1f} h during the day", details)
        elif still >= p["still_for"] and rec is None:
            prealert(ctx, "daytime_stillness", 2, "no movement on the watch: resident asked",
                     details, cancel_within_s=p["prompt_for"])
        elif still == 0.0 and rec is not None and rec["stage"] == "prealert":
            cancel(ctx, rec, "resident", "condition ended")
    if ctx.on("no_sign_of_life"):       # judged only while some device is reporting
        quiet_s = t - st["activity"]["last_sign_t"]
        belt_last, watch_last = st["resident"]["last_reading_t"], st["watch"]["last"]
        belt_fresh = belt_last is not None and t - belt_last <= BELT_FRESH_S
        watch_fresh = watch_last is not None and t - watch_last <= WATCH_FRESH_S
        if quiet_s >= ctx.p["no_sign_of_life"]["after"] and (belt_fresh or watch_fresh):
            settle(ctx, "no_sign_of_life", True, 1, f"no sign of life for {quiet_s / 3600:.1f} h",
                   {"hours_without_sign": round(quiet_s / 3600, 1)})
        elif quiet_s == 0.0 and "no_sign_of_life" in alerts:
            settle(ctx, "no_sign_of_life", False, reason="sign of life")


def _not_up(ctx: Ctx) -> None:
    """R4: still in bed at max(latest, median rise + margin), once a day.

    "Still" needs evidence of the morning: the engine ran before the due time, or the current
    stay in bed began before day_start; a hub started at 15:00 beside a napping resident is silent.
    """
    if not ctx.on("not_up"):
        return
    st, p, wall, res = ctx.st, ctx.p["not_up"], ctx.now.wall, ctx.st["resident"]
    nu = st["not_up"]
    in_bed, since = res["in_bed"], res["in_bed_since"]
    today = wall.date().isoformat()
    minute = wall.hour * 60 + wall.minute
    if in_bed is False and minute >= p["day_start"] and ctx.t - since >= p["up_after"]:
        nu["up"] = today
    due = p["latest"]
    rises = nu["rises"][-p["baseline_nights"]:]
    if len(rises) >= p["baseline_nights"]:
        due = max(due, median(rises) + p["rise_margin"] / 60)
    if minute < due:
        nu["morning"] = today   # the engine saw this morning before the due time
    if in_bed is True and due <= minute < p["until"] and nu["up"] != today \
            and nu["fired"] != today:
        since_wall = wall - timedelta(seconds=ctx.t - since)
        from_night = since_wall.date() < wall.date() or \
            since_wall.hour * 60 + since_wall.minute < p["day_start"]
        if nu["morning"] == today or from_night:
            nu["fired"] = today
            rr_t = res["rr_t"]
            breathing = rr_t is not None and ctx.t - rr_t <= BREATHING_RECENT_S
            when = "%02d:%02d" % (due // 60, due % 60)
            msg = f"not up by {when}: in bed" + (", breathing detected" if breathing else "")
            settle(ctx, "not_up", True, 2, msg, {"due": when, "breathing_detected": breathing})
    elif in_bed is False and "not_up" in st["alerts"]:
        settle(ctx, "not_up", False, reason="got up")


def note_rise(ctx: Ctx) -> None:
    """Learn rise times from nights that ended by getting up (for not_up's baseline)."""
    sl = ctx.st["sleep"]
    end = sl.pop("last_end_wall", None)
    why = sl.pop("last_end_reason", None)
    if end and why == "out of bed":
        w = datetime.fromisoformat(end)
        rises = ctx.st["not_up"]["rises"]
        rises.append(w.hour * 60 + w.minute)
        del rises[:-60]
