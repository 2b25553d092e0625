"""Codecs for the Bluetooth SIG characteristics a watch uses (all fields little-endian).

Each ``decode_*`` takes the bytes of one notification or read and returns a frozen report, or
None when the bytes are too short or malformed; nothing here raises on bad input. Layouts:
Bluetooth SIG GATT Specification Supplement (https://www.bluetooth.com/specifications/gss/),
cross-checked against google/bumble ``bumble/profiles/heart_rate_service.py`` and Nordic's nRF5
SDK ``ble_lns.c`` (Location and Speed flag bits).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.watch.reports import Battery, HeartRate, Location

BASE_UUID = "-0000-1000-8000-00805f9b34fb"


def uuid16(short: int) -> str:
    """A 16-bit SIG UUID as bleak spells it: 128-bit, lower case."""
    return f"0000{short:04x}{BASE_UUID}"


HEART_RATE_SERVICE = uuid16(0x180D)
HEART_RATE_MEASUREMENT = uuid16(0x2A37)
BATTERY_SERVICE = uuid16(0x180F)
BATTERY_LEVEL = uuid16(0x2A19)
LN_SERVICE = uuid16(0x1819)
LOCATION_AND_SPEED = uuid16(0x2A67)
POSITION_QUALITY = uuid16(0x2A69)

_POSITION_STATUS = {1: "ok", 2: "estimated", 3: "last_known"}


def decode_heart_rate(data: bytes) -> HeartRate | None:
    """Heart Rate Measurement 0x2A37: flags, uint8/uint16 bpm, [energy kJ], [RR 1/1024 s ...]."""
    if len(data) < 2:
        return None
    flags = data[0]
    i = 1
    if flags & 0x01:
        if len(data) < 3:
            return None
        bpm = int.from_bytes(data[1:3], "little")
        i = 3
    else:
        bpm = data[1]
        i = 2
    energy = None
    if flags & 0x08:
        if len(data) < i + 2:
            return None
        energy = int.from_bytes(data[i:i + 2], "little")
        i += 2
    rr: tuple[float, ...] = ()
    if flags & 0x10:
        rest = data[i:]
        rr = tuple(int.from_bytes(rest[k:k + 2], "little") / 1024
                   for k in range(0, len(rest) - 1, 2))
    contact = bool(flags & 0x02) if flags & 0x04 else None
    return HeartRate(bpm, rr, energy, contact)


def decode_battery(data: bytes) -> Battery | None:
    """Battery Level 0x2A19: one byte, 0-100 %; anything else is not a level."""
    if len(data) != 1 or data[0] > 100:
        return None
    return Battery(data[0])


@dataclass(frozen=True)
class LocationSpeed:
    """One Location and Speed notification: only the fields its flags said are present."""

    lat: float | None = None
    lon: float | None = None
    status: str | None = None
    speed_mps: float | None = None
    distance_m: float | None = None
    elevation_m: float | None = None
    heading_deg: float | None = None
    utc: str | None = None


def _int(b: bytes, signed: bool = False) -> int:
    return int.from_bytes(b, "little", signed=signed)


# (flag bit, field, size, signed, scale)
_LNS_FIELDS = (
    (0x0001, "speed_mps", 2, False, 1 / 100),
    (0x0002, "distance_m", 3, False, 1 / 10),
    (0x0004, "latlon", 8, True, 1e-7),
    (0x0008, "elevation_m", 3, True, 1 / 100),
    (0x0010, "heading_deg", 2, False, 1 / 100),
    (0x0020, "rolling_s", 1, False, 1),
    (0x0040, "utc", 7, False, 1),
)


def decode_location_speed(data: bytes) -> LocationSpeed | None:
    """Location and Speed 0x2A67. A long record comes as two notifications, each with its own
    flags (Nordic ``ble_lns.c``); each is decoded on its own and ``decoder`` joins them."""
    if len(data) < 2:
        return None
    flags = _int(data[0:2])
    i = 2
    out: dict = {"status": _POSITION_STATUS.get((flags >> 7) & 0x03)}
    for bit, name, size, signed, scale in _LNS_FIELDS:
        if not flags & bit:
            continue
        raw = data[i:i + size]
        if len(raw) < size:
            return None
        i += size
        if name == "latlon":
            lat, lon = _int(raw[:4], True) * scale, _int(raw[4:], True) * scale
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                return None
            out["lat"], out["lon"] = round(lat, 7), round(lon, 7)
        elif name == "utc":
            year, month, day, h, m, s = _int(raw[0:2]), *raw[2:7]
            if year and 1 <= month <= 12 and 1 <= day <= 31 and h < 24 and m < 60 and s < 60:
                out["utc"] = f"{year:04d}-{month:02d}-{day:02d}T{h:02d}:{m:02d}:{s:02d}Z"
        elif name != "rolling_s":
            out[name] = round(_int(raw, signed) * scale, 2)
    return LocationSpeed(**out)


def decode_position_quality(data: bytes) -> float | None:
    """Position Quality 0x2A69 -> the estimated horizontal position error in metres (EHPE),
    None when not present. Fields in flag order: beacons in solution u8, in view u8,
    time to first fix u16, EHPE u32 (1/100 m), ..."""
    if len(data) < 2:
        return None
    flags = _int(data[0:2])
    i = 2 + (1 if flags & 0x01 else 0) + (1 if flags & 0x02 else 0) + (2 if flags & 0x04 else 0)
    if not flags & 0x08 or len(data) < i + 4:
        return None
    return _int(data[i:i + 4]) / 100


def location_of(ls: LocationSpeed, accuracy_m: float | None = None) -> Location | None:
    """A fix, or None: no coordinates, or Position Status 0 ("no position", whatever they say)."""
    if ls.lat is None or ls.lon is None or ls.status is None:
        return None
    return Location(ls.lat, ls.lon, accuracy_m, ls.status, ls.elevation_m, ls.speed_mps,
                    ls.heading_deg, ls.utc)
