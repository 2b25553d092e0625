"""Bed and night rules: night_bed_exit (R3), stuck_in_bed (R5), belt_offline (R12).

Durations run from the true time of the bed change (resident.py), not from the moment the
debounce let it through: out of bed 30 min means 30 min since the resident left; and they stop
at the true time of a change still being debounced (back 5 s early is no alert).
"""

from __future__ import annotations

from datetime import timedelta

from .lifecycle import Ctx, settle
from .resident import held_until

RULES = ("night_bed_exit", "stuck_in_bed", "belt_offline")


def initial() -> dict:
    return {"exit_in_window": False, "belt_status": None}


def on_bed_change(ctx: Ctx, in_bed: bool, true_wall) -> None:
    """An exit counts for the night rule when it began inside the night window."""
    if not in_bed:
        ctx.st["night"]["exit_in_window"] = \
            ctx.p["night_bed_exit"]["window"].contains_time(true_wall)


def on_reading(ctx: Ctx) -> None:
    if "belt_offline" in ctx.st["alerts"]:
        settle(ctx, "belt_offline", False, reason="readings resumed")


def on_belt_status(ctx: Ctx, state: str) -> None:
    ctx.st["night"]["belt_status"] = state


def on_time(ctx: Ctx) -> None:
    st, t, alerts, res = ctx.st, ctx.t, ctx.st["alerts"], ctx.st["resident"]
    in_bed, since, held = res["in_bed"], res["in_bed_since"], held_until(res, t)
    if ctx.on("night_bed_exit"):
        p = ctx.p["night_bed_exit"]
        if in_bed is False and since is not None and st["night"]["exit_in_window"] \
                and res["previous_stay_s"] >= p["min_in_bed"]:
            out_s = held - since
            details = {"minutes_out_of_bed": round(out_s / 60, 1),
                       "in_bed_before_min": round(res["previous_stay_s"] / 60, 1)}
            msg = f"out of bed for {out_s / 60:.0f} min at night, not back"
            if out_s >= p["escalate_after"] and "night_bed_exit" in alerts:
                settle(ctx, "night_bed_exit", True, 1, msg, details)
            elif out_s >= p["max_out_of_bed"] and p["window"].contains_time(ctx.now.wall):
                settle(ctx, "night_bed_exit", True, 1 if out_s >= p["escalate_after"] else 2,
                       msg, details)
        elif in_bed is True and "night_bed_exit" in alerts:
            settle(ctx, "night_bed_exit", False, reason="back in bed")
    if ctx.on("stuck_in_bed"):
        if in_bed is True and held - since >= ctx.p["stuck_in_bed"]["max_in_bed"]:
            in_s = held - since
            settle(ctx, "stuck_in_bed", True, 2, f"in bed for {in_s / 3600:.1f} h without a break",
                   {"hours_in_bed": round(in_s / 3600, 1)})
        elif in_bed is False and "stuck_in_bed" in alerts:
            settle(ctx, "stuck_in_bed", False, reason="out of bed")
    if ctx.on("belt_offline"):
        last = res["last_reading_t"]
        gap = t - (last if last is not None else 0.0)
        rec = alerts.get("belt_offline")
        if gap >= ctx.p["belt_offline"]["alert_after"] and (rec is None
                                                            or rec["clear_t"] is not None):
            last_wall = None if last is None else \
                (ctx.now.wall - timedelta(seconds=gap)).isoformat()
            settle(ctx, "belt_offline", True, 3, f"no data from the bed sensor for "
                   f"{gap / 60:.0f} min", {"last_reading_at": last_wall,
                                           "link": st["night"]["belt_status"]})
