"""The ``[rules.NAME]``, ``[alerts]`` and ``[sleep_report]`` configuration keys.

Defaults come from docs/alerts.md, which cites the public source of each threshold;
``hub.config`` imports these tables and hands the parsed values back as plain dicts
(durations in float seconds, windows as ``Window``, times of day as minutes after midnight).
"""

from __future__ import annotations

import logging
import re

from hub.configtypes import BadValue, Key, boolean, duration, integer, number, window

LOGGER = logging.getLogger(__name__)

_TIME_RE = re.compile(r"^(\d{2}):(\d{2})$")


def time_of_day(value) -> int:
    """``"09:00"`` -> minutes after local midnight (540)."""
    if isinstance(value, str):
        m = _TIME_RE.match(value.strip())
        if m and int(m.group(1)) < 24 and int(m.group(2)) < 60:
            return int(m.group(1)) * 60 + int(m.group(2))
    raise BadValue(f'{value!r} is not a time of day (use "HH:MM", e.g. "09:00")')


def _on(doc: str = "run this rule") -> Key:
    return Key(boolean, True, doc)


def _vital(threshold, persist, clear_key, clear_level, urgent, urgent_persist, unit, lo, hi,
           direction):
    """The shared shape of hr_high / hr_low / rr_high / rr_low (reference section 2, R7/R8)."""
    cmp = ">=" if direction == "high" else "<="
    return {
        "enabled": _on(),
        "threshold": Key(number(lo, hi), threshold,
                         f"warn (P2) when 1-minute medians are {cmp} this ({unit})"),
        "persist": Key(duration(60, 3 * 3600), persist, "for this long (persistence)"),
        "urgent_threshold": Key(number(lo, hi), urgent,
                                f"urgent (P1) when medians are {cmp} this ({unit}); absent: none"),
        "urgent_persist": Key(duration(60, 3 * 3600), urgent_persist,
                              "for this long at the urgent level"),
        clear_key: Key(number(lo, hi), clear_level,
                       f"the alert clears only when medians are back past this ({unit})"),
        "clear_persist": Key(duration(60, 3 * 3600), "5m", "for this long (hysteresis)"),
        "min_coverage": Key(number(0.1, 1.0), 0.75,
                            "share of the persistence window with valid, quiet, in-bed minutes"),
        "quiet_for": Key(duration(0, 900), "2m",
                         "minutes within this long after a large movement are not judged"),
        "renotify": Key(duration(0, 24 * 3600), "30m",
                        "re-send an unacknowledged alert this often (0: never)"),
    }


RULES_SCHEMA: dict[str, dict[str, Key]] = {
    "sos": {
        "enabled": _on("the SOS button (panel and watch) raises P1 at once; never cancelled"),
    },
    "fall": {
        "enabled": _on("the watch's fall flag raises P1 after a cancel window"),
        "cancel_window": Key(duration(10, 300), "45s",
                             "pre-alert before sending; the resident's OK press cancels"),
    },
    "night_bed_exit": {
        "enabled": _on(),
        "window": Key(window, "21:00-07:00", "the night: exits starting and alerting inside it"),
        "min_in_bed": Key(duration(0, 4 * 3600), "10m",
                          "an exit counts only after this long in bed"),
        "max_out_of_bed": Key(duration(60, 4 * 3600), "30m",
                              "out of bed this long inside the window: alert (P2)"),
        "escalate_after": Key(duration(60, 8 * 3600), "60m",
                              "out of bed this long in all: escalate to P1"),
    },
    "vitals_absent": {
        "enabled": _on(),
        "prealert_after": Key(duration(10, 600), "60s",
                              "in bed, fresh readings, no heart rate, breathing or movement "
                              "this long: local pre-alert"),
        "alert_after": Key(duration(20, 900), "120s",
                           "in bed, presence detected, no heart rate and no breathing this long: "
                           "alert (P1)"),
        "max_sample_gap": Key(duration(1, 120), "15s",
                              "a longer gap between readings breaks the evidence (that is "
                              "belt_offline, never vitals_absent)"),
        "still_movement_index": Key(number(0, 100), 5.0,
                                    "a movement index above this counts as movement"),
    },
    "hr_high": _vital(120, "10m", "clear_below", 110, 130, "10m", "bpm", 60, 250, "high"),
    "hr_low": _vital(40, "10m", "clear_above", 45, None, "10m", "bpm", 20, 80, "low"),
    "rr_high": _vital(25, "15m", "clear_below", 22, 30, "10m", "breaths/min", 10, 60, "high"),
    "rr_low": _vital(8, "5m", "clear_above", 10, 8, "5m", "breaths/min", 2, 20, "low"),
    "not_up": {
        "enabled": _on(),
        "latest": Key(time_of_day, "09:00", "still in bed at this time: alert (P2)"),
        "rise_margin": Key(duration(0, 6 * 3600), "2h",
                           "with a baseline, alert at max(latest, median rise + this)"),
        "baseline_nights": Key(integer(3, 60), 14,
                               "rise times needed before the learned time is used"),
        "day_start": Key(time_of_day, "05:00", "the morning starts here for 'has got up'"),
        "up_after": Key(duration(60, 4 * 3600), "30m",
                        "out of bed this long after day_start counts as up for the day"),
        "until": Key(time_of_day, "18:00", "no not-up alert after this time"),
    },
    "stuck_in_bed": {
        "enabled": _on(),
        "max_in_bed": Key(duration(3600, 48 * 3600), "16h",
                          "continuously in bed this long: alert (P2)"),
    },
    "daytime_stillness": {
        "enabled": _on(),
        "window": Key(window, "08:00-20:00", "only during the day"),
        "still_for": Key(duration(600, 8 * 3600), "2h",
                         "watch worn, out of bed, no watch movement this long: pre-alert"),
        "prompt_for": Key(duration(30, 3600), "10m",
                          "pre-alert ('I'm OK?') this long before alerting (P2)"),
    },
    "no_sign_of_life": {
        "enabled": _on(),
        "after": Key(duration(3600, 48 * 3600), "12h",
                     "no bed presence, watch movement or button press this long: alert (P1)"),
    },
    "belt_offline": {
        "enabled": _on("disable where no belt is installed"),
        "alert_after": Key(duration(60, 24 * 3600), "30m",
                           "no reading from the bed sensor this long: technical alert (P3)"),
    },
    "watch_offline": {
        "enabled": _on("only once a watch has been seen"),
        "alert_after": Key(duration(600, 24 * 3600), "2h",
                           "watch not seen or not worn this long: technical alert (P3)"),
        "window": Key(window, "08:00-20:00", "raised only during the day"),
    },
    "watch_battery_low": {
        "enabled": _on(),
        "below": Key(integer(1, 50), 10, "battery under this percentage: technical alert (P3)"),
        "clear_above": Key(integer(2, 100), 15, "clears at or above this percentage"),
    },
}

ALERTS_SCHEMA: dict[str, Key] = {
    "renotify_p1": Key(duration(0, 24 * 3600), "5m",
                       "re-send an unacknowledged P1 alert this often (0: never)"),
    "renotify_p2": Key(duration(0, 24 * 3600), "10m",
                       "re-send an unacknowledged P2 alert this often (0: never)"),
    "renotify_p3": Key(duration(0, 24 * 3600), "0s",
                       "re-send an unacknowledged P3 alert this often (0: never)"),
    "flap_count": Key(integer(2, 100), 3,
                      "this many raises of one rule within flap_window merge into one alert"),
    "flap_window": Key(duration(60, 24 * 3600), "30m",
                       "and the merged alert resolves once clear this long"),
    "close_acked_after": Key(duration(60, 24 * 3600), "1h",
                             "SOS and fall alerts, which have no clearing condition, resolve this "
                             "long after staff acknowledged them"),
}

SLEEP_SCHEMA: dict[str, Key] = {
    "enabled": Key(boolean, True, "emit sleep.report when the night's session ends"),
    "earliest_start": Key(time_of_day, "18:00", "a session starts at a bed entry after this"),
    "min_first_bout": Key(duration(60, 4 * 3600), "20m",
                          "the first bed stay must last this long to start a session"),
    "end_gap": Key(duration(300, 6 * 3600), "60m",
                   "the session ends at the last exit followed by this long out of bed"),
    "latest_end": Key(time_of_day, "12:00", "or at this time at the latest"),
    "min_exit": Key(duration(0, 3600), "1m", "exits shorter than this are not counted"),
}


def defaults() -> dict:
    """Every rule, ``[alerts]`` and ``[sleep_report]`` key at its parsed default.

    The shape is what ``evaluate`` takes as ``params``; tests and replay start from it.
    """
    def table(schema):
        return {k: (None if key.default is None else key.parse(key.default))
                for k, key in schema.items()}

    out = {name: table(keys) for name, keys in RULES_SCHEMA.items()}
    out["alerts"] = table(ALERTS_SCHEMA)
    out["sleep_report"] = table(SLEEP_SCHEMA)
    return out
