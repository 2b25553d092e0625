"""The event envelope of spec section 3: what the queue stores and sends, unchanged however often
it is retried, and the facts about this boot that every envelope carries.

It lives here, below the hub, because the store and the uploader handle envelopes without knowing
what the events mean; the hub's ``EventFactory`` (hub/events.py) decides types and priorities.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def read_boot_id() -> str:
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError:
        return "unknown"


# --- clock synchronisation ---------------------------------------------------------------
# adjtimex(2) with modes=0 only reads the kernel's NTP state; no privilege, no subprocess, no D-Bus.
# It is the same source `timedatectl` ("System clock synchronized") reads through systemd-timedated,
# and it is kept by chrony, ntpd and systemd-timesyncd alike, so it is right whichever one the
# image runs. It returns TIME_ERROR (5) while the clock is unsynchronised (STA_UNSYNC set).
_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_padding", ctypes.c_int * 11),
    ]


_libc = None


def kernel_clock_synced() -> bool:
    """Whether the kernel believes its clock is NTP-synchronised (adjtimex, read-only)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = _libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return False
    return state not in (-1, _TIME_ERROR) and not (tx.status & _STA_UNSYNC)


# --- identifiers ---------------------------------------------------------------------------
_id_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit ms time, 12-bit counter, 62 random bits.

    Time-ordered within this process even when the wall clock stands still or steps back
    (the counter, then the last time, carry on); identity only, never used for ordering.
    """
    global _last_ms, _counter
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _counter = secrets.randbits(8)
        _last_ms = ms
        counter = _counter
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= secrets.randbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_utc(when: datetime) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-23T14:05:07.120Z``."""
    if when.tzinfo is None:
        raise ValueError("wall times must be timezone-aware")
    u = when.astimezone(timezone.utc)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


def _freeze(value):
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value):
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Event:
    """One event, created once and sent unchanged however often it is retried.

    ``seq`` is ``None`` until the store commits the event; ``with_seq`` gives the committed copy.
    """

    id: str
    type: str
    priority: int
    occurred_at: str
    clock_synced: bool
    boot_id: str
    uptime_s: float
    hub_id: str
    resident_id: str
    data: Mapping[str, Any] = field(default_factory=dict)
    seq: int | None = None

    def __post_init__(self):
        if self.priority not in (1, 2, 3):
            raise ValueError(f"priority must be 1, 2 or 3, not {self.priority!r}")
        object.__setattr__(self, "data", _freeze(self.data))

    def with_seq(self, seq: int) -> "Event":
        return replace(self, seq=seq)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ENVELOPE_FIELDS}
        d["data"] = _thaw(self.data)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, sort_keys=False)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Event":
        return cls(**{k: d[k] for k in ENVELOPE_FIELDS if k in d})


ENVELOPE_FIELDS = (
    "id", "seq", "type", "priority", "occurred_at", "clock_synced",
    "boot_id", "uptime_s", "hub_id", "resident_id", "data",
)
