"""The value types of the configuration, parsed in one place.

Each ``Key`` knows its type, default and one-line meaning; ``hub.config`` assembles the schema
from these and the rule modules add their own ``[rules.NAME]`` keys with the same types.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_WINDOW_RE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")

DURATION_HELP = 'use e.g. "30m", "90s", "1h30m", or a number of seconds'
WINDOW_HELP = 'use "HH:MM-HH:MM", e.g. "21:00-07:00"; "00:00-24:00" is the whole day'


def show(value: Any) -> str:
    """A value as the technician wrote it in TOML: strings in double quotes."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class BadValue(ValueError):
    """A value has the wrong shape; the message says what is allowed."""


def parse_duration(value: Any) -> float:
    """``"1h30m"``, ``"90s"``, ``"2h"`` or a plain number of seconds -> seconds (float)."""
    if isinstance(value, bool):
        raise BadValue(f"{show(value)} is not a duration ({DURATION_HELP})")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadValue(f"{show(value)} is not a finite number ({DURATION_HELP})")
        if value < 0:
            raise BadValue(f"{show(value)} is negative ({DURATION_HELP})")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        m = _DURATION_RE.match(text)
        if text and m and any(m.groups()):
            h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            return h * 3600 + mi * 60 + s
    raise BadValue(f"{show(value)} is not a duration ({DURATION_HELP})")


@dataclass(frozen=True)
class Window:
    """A daily window in minutes after local midnight; it may wrap past midnight."""

    start_min: int
    end_min: int

    def contains(self, minute_of_day: float) -> bool:
        if self.start_min == self.end_min:
            return False
        if self.start_min < self.end_min:
            return self.start_min <= minute_of_day < self.end_min
        return minute_of_day >= self.start_min or minute_of_day < self.end_min

    def contains_time(self, when) -> bool:
        """``when`` is a zone-aware datetime already in the hub's timezone."""
        return self.contains(when.hour * 60 + when.minute + when.second / 60)

    def __str__(self) -> str:
        def hm(m):
            return f"{m // 60:02d}:{m % 60:02d}"

        return f"{hm(self.start_min)}-{hm(self.end_min)}"


def parse_window(value: Any) -> Window:
    if isinstance(value, str):
        m = _WINDOW_RE.match(value.strip())
        if m:
            h1, m1, h2, m2 = (int(g) for g in m.groups())
            ok = h1 < 24 and m1 < 60 and m2 < 60 and (h2 < 24 or (h2 == 24 and m2 == 0))
            if ok and (h1, m1) != (h2, m2):
                return Window(h1 * 60 + m1, h2 * 60 + m2)
    raise BadValue(f"{show(value)} is not a daily window ({WINDOW_HELP})")


@dataclass(frozen=True)
class Key:
    """One configuration key: how to parse it, its default, what it means.

    ``parse`` takes the TOML value and returns the parsed value or raises ``BadValue``.
    ``default`` is given in TOML form (it is parsed too); ``None`` with ``required`` unset
    means the key may be absent and reads as ``None``.
    """

    parse: Callable[[Any], Any]
    default: Any
    doc: str
    required: bool = False


def _typed(kind, name):
    def parse(value):
        if isinstance(value, bool) and kind is not bool:
            raise BadValue(f"{show(value)} is not {name}")
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            raise BadValue(f"{show(value)} is not {name}")
        return value

    return parse


def _ranged(base, lo, hi, unit: str = ""):
    """``base`` then a range check; the message says the allowed range as the technician writes it.

    NaN and infinity are refused first: every comparison with NaN is false, so a range check
    alone lets it through (``threshold = nan`` would silently switch a rule off).
    """
    def parse(value):
        v = base(value)
        if isinstance(v, float) and not math.isfinite(v):
            raise BadValue(f"{show(value)} is not a finite number")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            low = "" if lo is None else f"{lo:g}{unit}"
            high = "" if hi is None else f"{hi:g}{unit}"
            raise BadValue(f"{show(value)} is out of range (allowed {low}..{high})")
        return v

    return parse


def integer(lo: int | None = None, hi: int | None = None):
    return _ranged(_typed(int, "an integer"), lo, hi)


def number(lo: float | None = None, hi: float | None = None):
    return _ranged(_typed(float, "a number"), lo, hi)


boolean = _typed(bool, "true or false")
string = _typed(str, "a string")


def choice(*allowed: str):
    def parse(value):
        if value not in allowed:
            raise BadValue(f"{show(value)} is not allowed (use one of: {', '.join(allowed)})")
        return value

    return parse


def pattern(regex: str, explain: str):
    rx = re.compile(regex)

    def parse(value):
        if not isinstance(value, str) or not rx.fullmatch(value):
            raise BadValue(f"{show(value)} is not allowed ({explain})")
        return value

    return parse


def duration(lo_s: float | None = None, hi_s: float | None = None):
    return _ranged(parse_duration, lo_s, hi_s, "s")


def window(value):
    return parse_window(value)
