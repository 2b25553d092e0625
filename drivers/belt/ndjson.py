"""NDJSON belt protocol: one JSON object per line, for belts bridged by a microcontroller.

The schema is written for vendors in docs/belt-ndjson.md. Keys are the ``Reading`` field
names; an absent key or ``null`` is "no reading". A heart or breathing rate of 0 is also "no
reading", except a breathing rate of 0 with ``"resp_state": "apnea"``, which is a measured stop.

Pure: bytes in, ``Reading``s out, no I/O.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

from drivers.belt.reading import Reading

LOGGER = logging.getLogger(__name__)

PROTOCOL = "ndjson"
DEFAULT_BAUDRATE = 115200
MAX_LINE = 1024
SCHEMA_VERSION = 1
# Largest count accepted (turn-overs, exits, apneas in one window): far above any real night,
# far below anything that could overflow arithmetic downstream.
MAX_COUNT = 100_000

RESP_STATES = frozenset(("normal", "fast", "slow", "apnea", "holding", "movement", "none"))
MOTIONS = frozenset(("none", "still", "active"))
STAGES = frozenset(("awake", "light", "deep"))
KINDS = frozenset(("instant", "window", "night_summary", "event", "info"))


def _bool(v):
    if isinstance(v, bool):
        return v
    raise ValueError("must be true or false")


def _num(lo: float, hi: float):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("must be a number")
        try:
            f = float(v)  # a 400-digit integer raises OverflowError here
        except OverflowError:
            raise ValueError(f"must be between {lo} and {hi}") from None
        if not math.isfinite(f):
            raise ValueError("must be a number")
        if not lo <= f <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return f
    return check


def _count(v):
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_COUNT:
        raise ValueError(f"must be a whole number between 0 and {MAX_COUNT}")
    return v


def _one_of(allowed):
    def check(v):
        if not isinstance(v, str) or v not in allowed:
            raise ValueError("must be one of " + ", ".join(sorted(allowed)))
        return v
    return check


def _text(v):
    # printable: no control characters, and no lone surrogate (it could not be stored as UTF-8)
    if not isinstance(v, str) or len(v) > 64 or not v.isprintable():
        raise ValueError("must be a string of at most 64 printable characters")
    return v


# key -> validator; the schema of docs/belt-ndjson.md
FIELDS = {
    "kind": _one_of(KINDS),
    "window_s": _num(0, 86400),
    "presence": _bool,
    "in_bed": _bool,
    "heart_rate_bpm": _num(0, 300),
    "resp_rate_per_min": _num(0, 120),
    "resp_state": _one_of(RESP_STATES),
    "motion": _one_of(MOTIONS),
    "movement_index": _num(0, 100),
    "turnover_count": _count,
    "sleep_stage": _one_of(STAGES),
    "out_of_bed_count": _count,
    "out_of_bed_min": _num(0, 1440),
    "distance_m": _num(0, 20),
    "apnea_count": _count,
    "firmware": _text,
}
IGNORED = frozenset(("v", "t", "seq"))   # accepted and not stored (the hub stamps its own time)


@dataclass(frozen=True)
class Line:
    """One decoded line: the fields kept, the keys rejected (with why), the keys unknown."""

    fields: dict
    rejected: dict
    unknown: tuple


def encode(**fields) -> bytes:
    """One line; ``None`` values are left out."""
    obj = {k: v for k, v in fields.items() if v is not None}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def encode_reading(reading: Reading) -> bytes:
    return encode(**{k: getattr(reading, k) for k in FIELDS if k != "kind" or
                     reading.kind != "instant"})


def handshake_frames() -> list[bytes]:
    return []


def parse_object(obj: dict) -> Line:
    fields, rejected, unknown = {}, {}, []
    for key, value in obj.items():
        check = FIELDS.get(key)
        if check is None:
            if key not in IGNORED:
                unknown.append(key)
            continue
        if value is None:
            continue
        try:
            fields[key] = check(value)
        except (ValueError, TypeError, OverflowError) as exc:
            rejected[key] = str(exc)
    for key in ("heart_rate_bpm", "resp_rate_per_min"):
        if fields.get(key) == 0.0 and not (key == "resp_rate_per_min"
                                          and fields.get("resp_state") == "apnea"):
            del fields[key]
    return Line(fields, rejected, tuple(unknown))


def to_reading(line: Line) -> Reading:
    return Reading(PROTOCOL, **line.fields)


class Reassembler:
    """Splits lines and parses each; bounded, never raises, counts what it drops."""

    def __init__(self):
        self._buf = bytearray()
        self._skipping = False      # inside an oversize line: drop until its newline
        self.counters = {"frames_ok": 0, "bad_json": 0, "bad_field": 0, "oversize": 0,
                         "garbage_bytes": 0}

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """Forget whatever is buffered (the facade's last resort after an unexpected error)."""
        self._buf.clear()
        self._skipping = False

    def feed(self, data: bytes) -> list[Line]:
        buf = self._buf
        buf += data
        out: list[Line] = []
        pos = 0
        try:
            while True:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if len(buf) - pos > MAX_LINE:
                        if not self._skipping:
                            self.counters["oversize"] += 1
                        self.counters["garbage_bytes"] += len(buf) - pos
                        self._skipping = True
                        pos = len(buf)
                    break
                raw = bytes(buf[pos:nl])
                pos = nl + 1   # consumed before it is parsed: a line that breaks the parser is gone
                if self._skipping:
                    self.counters["garbage_bytes"] += len(raw) + 1
                    self._skipping = False
                    continue
                if len(raw) > MAX_LINE:
                    self.counters["oversize"] += 1
                    self.counters["garbage_bytes"] += len(raw) + 1
                    continue
                line = self._parse(raw)
                if line is not None:
                    out.append(line)
        finally:
            if pos:
                del buf[:pos]
        return out

    def _parse(self, raw: bytes) -> Line | None:
        text = raw.strip()
        if not text:
            return None
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            self.counters["bad_json"] += 1
            self.counters["garbage_bytes"] += len(raw) + 1
            return None
        line = parse_object(obj)
        if line.rejected:
            self.counters["bad_field"] += len(line.rejected)
        self.counters["frames_ok"] += 1
        return line
