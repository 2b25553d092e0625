"""Vital-sign rules: vitals_absent (R9) and heart/breathing rate limits (R7/R8).

vitals_absent reads the fused resident state on every reading and tick: in bed, presence not
false, readings fresh, and no heart rate, breathing or movement since ``absent_since`` (the first
reading after the last vital sign). A frame that carries no heart rate (MicRadar's in-bed
frame, a distance frame) is no evidence of anything by itself. The duration counts from the later
of that start and the true start of the stay in bed, up to the last reading (absence is proven
only by readings), so the alert comes within one reading period of the configured time.

The rate rules judge closed one-minute medians (minute.py) while in bed and quiet.
"""

from __future__ import annotations

import math

from .lifecycle import Ctx, prealert, resolve, settle

RATE_RULES = ("hr_high", "hr_low", "rr_high", "rr_low")
RULES = ("vitals_absent",) + RATE_RULES
_KIND = {"hr_high": "heart rate high", "hr_low": "heart rate low",
         "rr_high": "breathing rate high", "rr_low": "breathing rate low"}
MAX_HISTORY_MIN = 400


def initial() -> dict:
    return {"absent": {"absent_since": None, "last_reading_t": None},
            **{rule: {"warn": [], "urgent": [], "clear": [], "out_of_bed_min": 0}
               for rule in RATE_RULES}}


# --- vitals_absent ----------------------------------------------------------------------------

def on_reading(ctx: Ctx, facts) -> None:
    if facts.reading.kind != "instant":
        return
    p, absent = ctx.p["vitals_absent"], ctx.st["vitals"]["absent"]
    last = absent["last_reading_t"]
    if last is not None and ctx.t - last > p["max_sample_gap"]:
        absent["absent_since"] = None          # a gap breaks the evidence
    absent["last_reading_t"] = ctx.t
    r = facts.reading
    moving = facts.large_movement or (r.movement_index is not None
                                      and r.movement_index > p["still_movement_index"])
    if facts.vital_signs or moving:
        absent["absent_since"] = None
    elif absent["absent_since"] is None:
        absent["absent_since"] = ctx.t


def judge_absent(ctx: Ctx) -> None:
    if not ctx.on("vitals_absent"):
        return
    st, t, p = ctx.st, ctx.t, ctx.p["vitals_absent"]
    absent, res = st["vitals"]["absent"], st["resident"]
    rec = st["alerts"].get("vitals_absent")
    last = absent["last_reading_t"]
    if last is None or t - last > p["max_sample_gap"]:
        # readings stopped: that is not evidence (belt_offline's business)
        absent["absent_since"] = None
        if rec is not None and rec["stage"] == "prealert":
            resolve(ctx, rec, "belt readings stopped; see belt_offline")
        return
    in_bed = res["in_bed"] is True
    if absent["absent_since"] is None or not in_bed or res["presence"] is False:
        if rec is not None:
            why = "out of bed" if not in_bed else (
                "presence lost" if res["presence"] is False else "movement or breathing resumed")
            settle(ctx, "vitals_absent", False, reason=why, by="resident")
        return
    # absence is proven only up to the last reading: a tick adds no evidence
    elapsed = last - max(absent["absent_since"], res["in_bed_since"])
    details = {"seconds_without_vitals": round(elapsed, 1), "presence": res["presence"],
               "resp_state": res["resp_state"], "movement_index": res["movement_index"]}
    if elapsed >= p["alert_after"]:
        settle(ctx, "vitals_absent", True, 1,
               "in bed, no heart rate, breathing or movement detected", details)
    elif elapsed >= p["prealert_after"] and rec is None:
        prealert(ctx, "vitals_absent", 1, "in bed, no vital signs detected: resident prompted",
                 details)


def answered(ctx: Ctx) -> None:
    """The resident pressed OK during the pre-alert: the count starts again."""
    ctx.st["vitals"]["absent"]["absent_since"] = None


# --- heart and breathing rate limits ---------------------------------------------------------

def on_unknown_minutes(ctx: Ctx, n: int) -> None:
    for rule in RATE_RULES:
        v = ctx.st["vitals"][rule]
        for key in ("warn", "urgent", "clear"):
            v[key] = (v[key] + ["u"] * min(n, MAX_HISTORY_MIN))[-MAX_HISTORY_MIN:]


def _met(seq: list, n: int, coverage: float) -> bool:
    return len(seq) >= n and "n" not in seq[-n:] and seq[-n:].count("y") >= math.ceil(
        coverage * n - 1e-9)


def on_minute(ctx: Ctx, mnt: dict) -> None:
    """R7/R8: judge each closed minute for hr_high, hr_low, rr_high, rr_low."""
    st = ctx.st
    last_move = st["resident"]["large_movement_t"]
    for rule in RATE_RULES:
        if ctx.on(rule):
            _judge_rate(ctx, rule, mnt, last_move)


def _judge_rate(ctx: Ctx, rule: str, mnt: dict, last_move) -> None:
    st, p, v = ctx.st, ctx.p[rule], ctx.st["vitals"][rule]
    high = rule.endswith("_high")
    value = mnt["hr_med"] if rule.startswith("hr") else mnt["rr_med"]
    quiet = last_move is None or last_move < mnt["start_t"] - p["quiet_for"]
    judged = mnt["in_bed"] and quiet and value is not None
    v["out_of_bed_min"] = 0 if mnt["in_bed"] else v["out_of_bed_min"] + 1

    def status(level):
        if not judged or level is None:
            return "u"
        return "y" if (value >= level if high else value <= level) else "n"

    clear_level = p["clear_below"] if high else p["clear_above"]
    n_warn, n_urgent, n_clear = (max(1, round(p[k] / 60))
                                 for k in ("persist", "urgent_persist", "clear_persist"))
    v["warn"] = (v["warn"] + [status(p["threshold"])])[-n_warn:]
    v["urgent"] = (v["urgent"] + [status(p["urgent_threshold"])])[-n_urgent:]
    if judged:
        beyond = value < clear_level if high else value > clear_level
        v["clear"] = (v["clear"] + ["y" if beyond else "n"])[-n_clear:]
    else:
        v["clear"] = (v["clear"] + ["u"])[-n_clear:]
    cov = p["min_coverage"]
    urgent = p["urgent_threshold"] is not None and _met(v["urgent"], n_urgent, cov)
    warn = _met(v["warn"], n_warn, cov)
    rec = st["alerts"].get(rule)
    if rule == "hr_low" and rec is not None and any(
            r in st["alerts"] and st["alerts"][r]["stage"] != "prealert"
            for r in ("rr_low", "vitals_absent")):
        urgent = True       # reference: low HR pages only with low/absent breathing
    details = {"median_per_min" if rule.startswith("rr") else "median_bpm": value,
               "threshold": p["threshold"], "minutes_judged": v["warn"].count("y")}
    if urgent or warn:
        settle(ctx, rule, True, 1 if urgent else 2, f"{_KIND[rule]} in bed at rest ({value:g})",
               details)
    elif _met(v["clear"], n_clear, 1.0) and "u" not in v["clear"]:
        settle(ctx, rule, False, reason=f"{_KIND[rule]}: back to normal")
    elif rec is not None and v["out_of_bed_min"] >= n_clear:
        settle(ctx, rule, False, reason="out of bed, no longer measured")
