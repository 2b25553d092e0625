"""The alert lifecycle every rule shares: prealert -> raised -> (escalated, renotified) -> acked
-> resolved, or a pre-alert cancelled; one open alert per rule, flapping merged (R15).

A rule family decides *whether* its condition holds; it calls ``settle`` (a condition rule's
verdict) or ``prealert`` / ``raise_alert`` (event rules) and this module does the rest.
"""

from __future__ import annotations

import logging

from . import sleep_report
from .actions import (BUZZER_ALERT, BUZZER_OFF, BUZZER_PREALERT, LED_ACKNOWLEDGED, LED_ALERT,
                      LED_OK, LED_PREALERT, Emit, Panel)

LOGGER = logging.getLogger(__name__)

EVENT_RULES = ("sos", "fall")   # no clearing condition: staff close them
PREALERT_EVENT_PRIORITY = 2
ACK_EVENT_PRIORITY = 2


class Ctx:
    """One step: the state, the instant, the parameters, and the actions produced."""

    __slots__ = ("st", "now", "p", "out", "t")

    def __init__(self, st, now, params):
        self.st, self.now, self.p, self.out = st, now, params, []
        self.t = st["t"]

    def on(self, rule: str) -> bool:
        return bool(self.p[rule].get("enabled", True))

    def emit(self, type_: str, priority: int, data: dict) -> None:
        self.out.append(Emit(type_, priority, data))


def find(st: dict, alert_id: str) -> dict | None:
    return next((r for r in st["alerts"].values() if r["id"] == alert_id), None)


def _new_record(ctx: Ctx, rule: str, priority: int, message: str, details: dict) -> dict:
    st = ctx.st
    st["n"] += 1
    rec = {"id": f"{st['seed']}-{st['n']:06d}", "rule": rule, "priority": priority,
           "stage": "new", "since": ctx.t, "raised_t": None, "notify_t": ctx.t,
           "renotified": 0, "count": 1, "flapping": False, "clear_t": None,
           "acked_t": None, "by": None, "message": message, "details": details}
    st["alerts"][rule] = rec
    return rec


def prealert(ctx: Ctx, rule, priority, message, details, cancel_within_s=None) -> None:
    rec = _new_record(ctx, rule, priority, message, details)
    rec["stage"] = "prealert"
    data = {"alert_id": rec["id"], "rule": rule, "priority": priority, "message": message,
            "details": details}
    if cancel_within_s is not None:
        data["cancel_within_s"] = cancel_within_s
    ctx.emit("alert.prealert", PREALERT_EVENT_PRIORITY, data)


def raise_alert(ctx: Ctx, rule, priority, message, details) -> None:
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
    ctx.emit("alert.raised", priority, {"alert_id": rec["id"], "rule": rule,
                                        "priority": priority, "message": message,
                                        "details": details})
    sleep_report.on_alert(st["sleep"], rule, priority, ctx.now.wall)


def settle(ctx: Ctx, rule, active: bool, priority=None, message="", details=None,
           reason="", by="resident") -> None:
    """A condition rule's verdict: set (raise, re-arm a flapping alert, escalate) or clear."""
    rec = ctx.st["alerts"].get(rule)
    if active:
        if rec is None or rec["stage"] == "prealert":
            raise_alert(ctx, rule, priority, message, details or {})
        elif rec["flapping"] and rec["clear_t"] is not None:
            rec["clear_t"], rec["count"] = None, rec["count"] + 1
        elif priority < rec["priority"]:
            rec["priority"], rec["message"], rec["notify_t"] = priority, message, ctx.t
            if rec["stage"] == "acked":
                rec["stage"] = "raised"     # a worse state needs a new acknowledgement
            ctx.emit("alert.escalated", priority, {"alert_id": rec["id"], "rule": rule,
                                                   "priority": priority, "message": message})
        return
    if rec is None:
        return
    if rec["stage"] == "prealert":
        cancel(ctx, rec, by, reason)
    elif rec["flapping"]:
        if rec["clear_t"] is None:
            rec["clear_t"] = ctx.t
    else:
        resolve(ctx, rec, reason)


def cancel(ctx: Ctx, rec: dict, by: str, reason: str) -> None:
    del ctx.st["alerts"][rec["rule"]]
    ctx.emit("alert.cancelled", PREALERT_EVENT_PRIORITY, {
        "alert_id": rec["id"], "rule": rec["rule"], "by": by, "reason": reason})


def resolve(ctx: Ctx, rec: dict, reason: str, by: str | None = None) -> None:
    del ctx.st["alerts"][rec["rule"]]
    data = {"alert_id": rec["id"], "rule": rec["rule"], "reason": reason}
    if rec["count"] > 1:
        data["count"] = rec["count"]
    if by is not None:
        data["by"] = by
    LOGGER.info("alert %s resolved: %s", rec["rule"], reason)
    prio = rec["priority"] if rec["stage"] != "prealert" else PREALERT_EVENT_PRIORITY
    ctx.emit("alert.resolved", prio, data)


def acknowledge(ctx: Ctx, alert_id: str, by: str, at: str | None) -> None:
    rec = find(ctx.st, alert_id)
    if rec is None or rec["stage"] == "acked":
        LOGGER.info("acknowledgement for %s: no such open alert, ignored", alert_id)
        return
    rec["stage"], rec["acked_t"], rec["by"] = "acked", ctx.t, by
    ctx.emit("alert.acknowledged", ACK_EVENT_PRIORITY, {
        "alert_id": rec["id"], "rule": rec["rule"], "by": by, "at": at,
        "response_s": round(ctx.t - (rec["raised_t"] or rec["since"]), 1)})


def close(ctx: Ctx, alert_id: str, by: str) -> None:
    rec = find(ctx.st, alert_id)
    if rec is not None:
        resolve(ctx, rec, "closed by staff", by=by)


def housekeeping(ctx: Ctx) -> None:
    """Flapping alerts that stayed clear resolve; acked events close; unacked ones re-notify."""
    st, t, a = ctx.st, ctx.t, ctx.p["alerts"]
    for rec in list(st["alerts"].values()):
        rule = rec["rule"]
        if rec["flapping"] and rec["clear_t"] is not None and t - rec["clear_t"] >= a[
                "flap_window"]:
            resolve(ctx, rec, f"stable for {a['flap_window'] / 60:.0f} min after "
                    f"{rec['count']} raises")
            continue
        if rule in EVENT_RULES and rec["stage"] == "acked" and \
                t - rec["acked_t"] >= a["close_acked_after"]:
            resolve(ctx, rec, "closed after acknowledgement")
            continue
        if rec["stage"] != "raised":
            continue
        every = ctx.p[rule].get("renotify") or a[f"renotify_p{rec['priority']}"]
        if every and t - rec["notify_t"] >= every:
            rec["notify_t"] = t
            rec["renotified"] += 1
            ctx.emit("alert.renotified", rec["priority"], {
                "alert_id": rec["id"], "rule": rule, "priority": rec["priority"],
                "count": rec["renotified"], "reason": "not acknowledged"})


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


def show_panel(ctx: Ctx) -> None:
    led, buzzer = panel_state(ctx.st)
    if ctx.st["panel"] != [led, buzzer]:
        ctx.st["panel"] = [led, buzzer]
        ctx.out.append(Panel(led, buzzer))
