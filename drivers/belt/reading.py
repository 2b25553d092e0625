"""The one normalised bed-sensor reading that every protocol decodes into.

Every field is optional: ``None`` means "not reported or not valid", never 0, so a missing
heart rate can never look like a heart that stopped (reference: sleep-sensors.md section 9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

# resp_state values
RESP_NORMAL, RESP_FAST, RESP_SLOW, RESP_APNEA, RESP_HOLDING, RESP_MOVEMENT, RESP_NONE = (
    "normal", "fast", "slow", "apnea", "holding", "movement", "none")
# motion values
MOTION_NONE, MOTION_STILL, MOTION_ACTIVE = "none", "still", "active"
# sleep_stage values
STAGE_AWAKE, STAGE_LIGHT, STAGE_DEEP = "awake", "light", "deep"


@dataclass(frozen=True)
class Reading:
    """What one decoded frame (or NDJSON line) said; times are added by the pipeline, not here."""

    protocol: str
    kind: str = "instant"                  # "instant", "window", "night_summary", "event", "info",
                                           # "unknown" (kept raw, never guessed)
    window_s: float | None = None          # averaging window (600 for the 10-minute composite)
    presence: bool | None = None
    in_bed: bool | None = None             # None where the protocol has none: derived later
    heart_rate_bpm: float | None = None
    hr_clamped: bool | None = None         # the value sits at the device's limit: it may be higher
    resp_rate_per_min: float | None = None
    resp_state: str | None = None
    motion: str | None = None
    movement_index: float | None = None    # 0-100
    turnover_count: int | None = None      # turn-overs within window_s
    sleep_stage: str | None = None
    out_of_bed_count: int | None = None
    out_of_bed_min: float | None = None
    distance_m: float | None = None
    apnea_count: int | None = None
    firmware: str | None = None
    raw: Mapping[str, Any] | None = None   # (control, command) or type and payload hex, for audit
