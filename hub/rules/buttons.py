"""The resident's buttons (panel and watch): SOS (R1) and OK.

SOS raises P1 at once and a second press never cancels it [Lifeline]; OK answers a pre-alert,
and while an SOS or fall is raised it is reported, never closing it (staff close those).
"""

from __future__ import annotations

from .lifecycle import ACK_EVENT_PRIORITY, EVENT_RULES, Ctx, cancel, raise_alert

RULES = ("sos",)


def sos(ctx: Ctx, source: str) -> None:
    if not ctx.on("sos"):
        return
    rec = ctx.st["alerts"].get("sos")
    if rec is not None:         # a second press never cancels; it insists
        rec["presses"] = rec.get("presses", 1) + 1
        rec["notify_t"] = ctx.t
        ctx.emit("alert.renotified", 1, {
            "alert_id": rec["id"], "rule": "sos", "priority": 1, "count": rec["presses"],
            "reason": f"SOS pressed again on the {source}"})
        return
    details = {"source": source}
    if source == "watch" and ctx.st["watch"]["location"] is not None:
        details["location"] = ctx.st["watch"]["location"]
    raise_alert(ctx, "sos", 1, f"SOS pressed on the {source}", details)


def ok(ctx: Ctx, source: str, answered: dict) -> None:
    """``answered`` maps a rule to the hook that restarts its count once its prompt is answered."""
    st = ctx.st
    pending = [r for r in st["alerts"].values() if r["stage"] == "prealert"]
    for rec in pending:
        cancel(ctx, rec, "resident", f"OK pressed on the {source}")
        hook = answered.get(rec["rule"])
        if hook is not None:
            hook(ctx)
    if pending:
        return
    for rule in EVENT_RULES:
        rec = st["alerts"].get(rule)
        if rec is not None:     # reported, never closes: staff close SOS and falls
            ctx.emit("alert.resident_ok", ACK_EVENT_PRIORITY, {
                "alert_id": rec["id"], "rule": rule, "source": source})
