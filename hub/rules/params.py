"""Rule keys (placeholder: the spec's fixed keys only, until the alert engine lands)."""

from hub.configtypes import Key, boolean, duration, integer, window

RULES_SCHEMA = {
    "night_bed_exit": {
        "enabled": Key(boolean, True, "run this rule"),
        "window": Key(window, "21:00-07:00", "the night"),
        "min_in_bed": Key(duration(0, 86400), "10m", "an exit counts only after this long in bed"),
        "max_out_of_bed": Key(duration(60, 86400), "30m", "out of bed this long inside the window: alert"),
    },
    "vitals_absent": {
        "enabled": Key(boolean, True, "run this rule"),
        "alert_after": Key(duration(10, 3600), "120s", "no heart rate and no breathing this long: alert"),
    },
    "hr_high": {
        "enabled": Key(boolean, True, "run this rule"),
        "threshold": Key(integer(40, 250), 120, "bpm"),
        "persist": Key(duration(0, 86400), "10m", "how long above threshold"),
    },
}
ALERTS_SCHEMA = {}
