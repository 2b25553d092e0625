"""Hi-Link TinyFrame codec (Seeed MR60BHA2, HLK-LD6002), reference sleep-sensors.md section 2.

Wire layout (header fields big-endian, data little-endian)::

    [ 01 ][ id u16 ][ len u16 ][ type u16 ][ ~xor(b0..b6) ][ data * len ][ ~xor(data) ]

The data checksum is absent when len is 0. SOF 0x01 is a common byte, so the header
checksum is what makes resync work. HR and RR read exactly 0.0 when the module sees no
one: that is "no reading", never a value.

Pure: bytes in, frozen dataclasses and ``Reading``s out, no I/O.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass

from drivers.belt.reading import Reading

LOGGER = logging.getLogger(__name__)

PROTOCOL = "tinyframe"
DEFAULT_BAUDRATE = 115200
SOF = 0x01
HEADER_LEN = 8
# HLK caps LEN at 1024 (Seeed's library at 512).
MAX_DATA_LEN = 1024

TYPE_PRESENCE = 0x0F09
TYPE_PHASES = 0x0A13
TYPE_RESP_RATE = 0x0A14
TYPE_HEART_RATE = 0x0A15
TYPE_DISTANCE = 0x0A16
TYPE_TARGETS = 0x0A04
TYPE_TRACK = 0x0A17
TYPE_FIRMWARE = 0xFFFF

# Beyond these the module is not measuring a person (the NDJSON schema's limits): no reading.
MAX_HR_BPM = 300.0
MAX_RR_PER_MIN = 120.0

_F32 = struct.Struct("<f")
_FLAG_F32 = struct.Struct("<If")


@dataclass(frozen=True)
class Frame:
    type: int
    data: bytes = b""
    id: int = 0

    def to_bytes(self) -> bytes:
        return encode(self.type, self.data, self.id)


def xor_checksum(data) -> int:
    x = 0
    for b in data:
        x ^= b
    return ~x & 0xFF


def encode(type_: int, data: bytes = b"", frame_id: int = 0) -> bytes:
    if len(data) > MAX_DATA_LEN:
        raise ValueError(f"TinyFrame data longer than {MAX_DATA_LEN} bytes")
    head = bytes((SOF,)) + struct.pack(">HHH", frame_id & 0xFFFF, len(data), type_)
    out = head + bytes((xor_checksum(head),))
    if data:
        out += bytes(data) + bytes((xor_checksum(data),))
    return out


# --- frames the hub sends, and report encoders for tests and the simulator ----------------
def query_firmware(frame_id: int = 1) -> bytes:
    return encode(TYPE_FIRMWARE, b"", frame_id)


def handshake_frames() -> list[bytes]:
    return [query_firmware()]


def presence(present: bool, frame_id: int = 0) -> bytes:
    return encode(TYPE_PRESENCE, b"\x01\x00" if present else b"\x00\x00", frame_id)


def resp_rate(per_min: float, frame_id: int = 0) -> bytes:
    return encode(TYPE_RESP_RATE, _F32.pack(per_min), frame_id)


def heart_rate(bpm: float, frame_id: int = 0) -> bytes:
    return encode(TYPE_HEART_RATE, _F32.pack(bpm), frame_id)


def distance(cm: float, valid: bool = True, frame_id: int = 0) -> bytes:
    return encode(TYPE_DISTANCE, _FLAG_F32.pack(1 if valid else 0, cm), frame_id)


def firmware_reply(project: int, major: int, sub: int, modified: int, frame_id: int = 0) -> bytes:
    return encode(TYPE_FIRMWARE, bytes((project, major, sub, modified)), frame_id)


# --- reassembler ---------------------------------------------------------------------------
class Reassembler:
    """Finds frames in a byte stream; bounded, never raises, counts what it drops."""

    def __init__(self):
        self._buf = bytearray()
        self.counters = {"frames_ok": 0, "bad_header_checksum": 0, "bad_checksum": 0,
                         "oversize": 0, "garbage_bytes": 0}

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        counters = self.counters
        size = len(buf)
        pos = 0
        while True:
            i = buf.find(SOF, pos)
            if i < 0:
                counters["garbage_bytes"] += size - pos
                pos = size
                break
            if i > pos:
                counters["garbage_bytes"] += i - pos
                pos = i
            if size - i < HEADER_LEN:
                break
            b = buf[i:i + HEADER_LEN]
            if (~(b[0] ^ b[1] ^ b[2] ^ b[3] ^ b[4] ^ b[5] ^ b[6])) & 0xFF != b[7]:
                counters["bad_header_checksum"] += 1
                counters["garbage_bytes"] += 1
                pos = i + 1
                continue
            n = (b[3] << 8) | b[4]
            if n > MAX_DATA_LEN:
                counters["oversize"] += 1
                counters["garbage_bytes"] += 1
                pos = i + 1
                continue
            start = i + HEADER_LEN
            end = start + n + (1 if n else 0)
            if size < end:
                break
            payload = bytes(buf[start:start + n])
            if n and xor_checksum(payload) != buf[start + n]:
                counters["bad_checksum"] += 1
                counters["garbage_bytes"] += 1
                pos = i + 1
                continue
            frames.append(Frame((b[5] << 8) | b[6], payload, (b[1] << 8) | b[2]))
            pos = end
        if pos:
            del buf[:pos]
        counters["frames_ok"] += len(frames)
        return frames


# --- interpretation ------------------------------------------------------------------------
def _rate(data: bytes, limit: float) -> float | None:
    (value,) = _F32.unpack_from(data)
    if value == 0.0 or not math.isfinite(value) or value < 0 or value > limit:
        return None
    return round(value, 2)


def _raw(frame: Frame, **extra) -> dict:
    raw = {"type": frame.type, "id": frame.id, "hex": frame.data.hex()}
    raw.update(extra)
    return raw


def interpret(frame: Frame) -> Reading:
    """One frame -> one Reading; unknown or malformed frames come back as kind "unknown"."""
    t, d = frame.type, frame.data
    n = len(d)
    if t == TYPE_HEART_RATE and n >= 4:
        return Reading(PROTOCOL, heart_rate_bpm=_rate(d, MAX_HR_BPM))
    if t == TYPE_RESP_RATE and n >= 4:
        return Reading(PROTOCOL, resp_rate_per_min=_rate(d, MAX_RR_PER_MIN))
    if t == TYPE_PRESENCE and n >= 1:
        return Reading(PROTOCOL, presence=bool(int.from_bytes(d[:2], "little")))
    if t == TYPE_DISTANCE and n >= 8:
        flag, cm = _FLAG_F32.unpack_from(d)
        valid = flag == 1 and math.isfinite(cm) and cm > 0
        return Reading(PROTOCOL, distance_m=round(cm / 100.0, 4) if valid else None)
    if t == TYPE_FIRMWARE and n == 4:
        return Reading(PROTOCOL, kind="info", firmware="%d.%d.%d.%d" % tuple(d), raw=_raw(frame))
    if t == TYPE_FIRMWARE and n == 0:
        return Reading(PROTOCOL, kind="info", raw=_raw(frame, query="firmware"))  # our own query
    if t in (TYPE_PHASES, TYPE_TARGETS, TYPE_TRACK):
        return Reading(PROTOCOL, kind="info", raw=_raw(frame))
    return Reading(PROTOCOL, kind="unknown", raw=_raw(frame, reason="unknown type or payload"))
