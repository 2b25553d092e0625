"""Watch rules: fall (R2), watch_offline and watch_battery_low (R12).

``WatchObservation`` carries what any watch reports (hub/watch.py maps the driver's reports
onto it) and ``on_link`` what its link says; this module owns the watch's slice of state.
A watch counts as seen while its link is up, so ``watch_offline`` measures from the moment
it went out of range (or stopped reporting) and clears when it is back and worn.
"""

from __future__ import annotations

from .lifecycle import Ctx, prealert, raise_alert, settle

RULES = ("fall", "watch_offline", "watch_battery_low")
WATCH_FRESH_S = 900.0           # a watch report this recent means the watch is reporting


def initial() -> dict:
    return {"seen": False, "last": None, "worn": None, "unworn_since": None,
            "battery": None, "location": None, "linked": False}


def on_observation(ctx: Ctx, w, sos, sign_of_life, moved) -> None:
    """``sos``, ``sign_of_life`` and ``moved`` are the other families' hooks."""
    ws = ctx.st["watch"]
    ws["seen"], ws["last"] = True, ctx.t
    if w.location is not None:
        ws["location"] = dict(w.location)
    if w.worn is not None:
        if w.worn is False and ws["worn"] is not False:
            ws["unworn_since"] = ctx.t
        ws["worn"] = w.worn
    if w.moving or (w.hr_bpm is not None and ws["worn"] is True):
        sign_of_life(ctx)
    if w.moving:
        moved(ctx)
    if w.battery_pct is not None:
        battery(ctx, w.battery_pct)
    if "watch_offline" in ctx.st["alerts"] and ws["worn"] is not False:
        settle(ctx, "watch_offline", False, reason="watch seen and worn")
    if w.sos:
        sos(ctx, "watch")
    if w.fall and w.worn is not False and ctx.on("fall") and "fall" not in ctx.st["alerts"]:
        details = {"source": "watch"}
        if ws["location"] is not None:
            details["location"] = ws["location"]
        prealert(ctx, "fall", 1, "fall detected by the watch: resident prompted", details,
                 cancel_within_s=ctx.p["fall"]["cancel_window"])


def on_link(ctx: Ctx, state: str, battery_pct: float | None) -> None:
    """The watch's device.status: connected is a report from the watch, disconnected is not."""
    ws = ctx.st["watch"]
    if state == "connected":
        ws["seen"], ws["last"], ws["linked"] = True, ctx.t, True
        if "watch_offline" in ctx.st["alerts"] and ws["worn"] is not False:
            settle(ctx, "watch_offline", False, reason="watch back in range")
    elif ws["linked"]:
        ws["linked"] = False
        ws["last"] = ctx.t     # reported after [watch] offline_grace; alert_after runs from here
    if battery_pct is not None:
        battery(ctx, battery_pct)


def battery(ctx: Ctx, pct: float) -> None:
    ctx.st["watch"]["battery"] = pct
    if not ctx.on("watch_battery_low"):
        return
    p = ctx.p["watch_battery_low"]
    if pct < p["below"]:
        settle(ctx, "watch_battery_low", True, 3, f"watch battery low ({pct:g}%)",
               {"battery_pct": pct})
    elif pct >= p["clear_above"]:
        settle(ctx, "watch_battery_low", False, reason=f"watch battery at {pct:g}%")


def on_fall_timer(ctx: Ctx) -> None:
    rec = ctx.st["alerts"].get("fall")
    if rec is not None and rec["stage"] == "prealert" and \
            ctx.t - rec["since"] >= ctx.p["fall"]["cancel_window"]:
        details = dict(rec["details"])
        if details.get("location"):     # how old the fix is now, when the alert is raised
            loc = details["location"] = dict(details["location"])
            loc["age_s"] = round(loc.get("age_s", 0.0) + ctx.t - rec["since"], 1)
        raise_alert(ctx, "fall", 1, "fall detected by the watch, not cancelled", details)


def on_time(ctx: Ctx) -> None:
    ws = ctx.st["watch"]
    if not (ctx.on("watch_offline") and ws["seen"]):
        return
    p, t = ctx.p["watch_offline"], ctx.t
    unseen = 0.0 if ws.get("linked") else t - ws["last"]
    unworn = t - ws["unworn_since"] if ws["worn"] is False else 0.0
    if max(unseen, unworn) >= p["alert_after"] and p["window"].contains_time(ctx.now.wall):
        what = "not seen" if unseen >= unworn else "not worn"
        settle(ctx, "watch_offline", True, 3,
               f"watch {what} for {max(unseen, unworn) / 60:.0f} min", {"state": what})
