"""Byte patterns for vendor characteristics: the iTag button and the ``custom`` profile.

A pattern is hex with ``??`` for any byte, e.g. ``"?? ?? 01"`` (the Bangle.js fall app's
``[impact, no_motion, alert]`` with alert set). A notification matches when it starts with
the pattern; the technician writes what the watch's documentation (or nRF Connect) shows.
"""

from __future__ import annotations

import re

ITAG_SERVICE = "0000ffe0-0000-1000-8000-00805f9b34fb"
ITAG_BUTTON = "0000ffe1-0000-1000-8000-00805f9b34fb"   # notifies 0x01 per press
ITAG_PRESS = b"\x01"

Pattern = tuple[int | None, ...]   # None: any byte

_UUID128 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_UUID16 = re.compile(r"^(0x)?([0-9a-f]{4})$")


def normalize_uuid(text: str) -> str:
    """"ffe1", "0xFFE1" or a full UUID -> the 128-bit lower-case form bleak looks up."""
    t = text.strip().lower()
    if m := _UUID16.match(t):
        return f"0000{m.group(2)}-0000-1000-8000-00805f9b34fb"
    if _UUID128.match(t):
        return t
    raise ValueError(f"{text!r} is not a UUID (use e.g. \"ffe1\" or "
                     "\"6e400003-b5a3-f393-e0a9-e50e24dcca9e\")")


def parse_pattern(text: str) -> Pattern:
    """"01 ?? 02" -> (1, None, 2). Empty text is the empty pattern (matches nothing)."""
    tokens = text.replace(",", " ").split()
    if len(tokens) == 1 and len(tokens[0]) > 2:       # "01??02" written without spaces
        tokens = [tokens[0][k:k + 2] for k in range(0, len(tokens[0]), 2)]
    out: list[int | None] = []
    for tok in tokens:
        if tok in ("??", "xx", "XX"):
            out.append(None)
        elif re.fullmatch(r"[0-9a-fA-F]{2}", tok):
            out.append(int(tok, 16))
        else:
            raise ValueError(f"{text!r} is not a byte pattern (hex bytes, ?? for any byte, "
                             "e.g. \"01 ?? 02\")")
    return tuple(out)


def matches(pattern: Pattern, data: bytes) -> bool:
    if not pattern or len(data) < len(pattern):
        return False
    return all(p is None or p == b for p, b in zip(pattern, data))


def is_itag_press(data: bytes) -> bool:
    return bytes(data) == ITAG_PRESS
