"""BTHome v2 service data (UUID 0xFCD2), as broadcast by Shelly BLU buttons and the like.

Layout (https://bthome.io/format/): byte 0 device info (bit 0 encrypted, bit 2 trigger-based,
bits 5-7 version = 2), then ``[object id][value]`` pairs in id order, little-endian, each id
with a fixed length. Decoding stops at an unknown id (its length cannot be known) and keeps
what came before it. Encrypted packets are not decoded (no bindkey support).
"""

from __future__ import annotations

from dataclasses import dataclass

BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"

PACKET_ID, BATTERY, BUTTON = 0x00, 0x01, 0x3A
BUTTON_EVENTS = {0x00: None, 0x01: "press", 0x02: "double_press", 0x03: "triple_press",
                 0x04: "long_press", 0x05: "long_double_press", 0x06: "long_triple_press",
                 0x80: "hold"}

# object id -> value length in bytes (bthome.io/format, checked against bthome-ble const.py)
_LENGTHS = {0x00: 1, 0x01: 1, 0x02: 2, 0x03: 2, 0x04: 3, 0x05: 3, 0x06: 2, 0x07: 2, 0x08: 2,
            0x09: 1, 0x0A: 3, 0x0B: 3, 0x0C: 2, 0x0D: 2, 0x0E: 2, 0x12: 2, 0x13: 2, 0x14: 2,
            0x2E: 1, 0x2F: 1, 0x3A: 1, 0x3C: 2, 0x3D: 2, 0x3E: 4, 0x3F: 2, 0x40: 2, 0x41: 2,
            0x42: 3, 0x43: 2, 0x44: 2, 0x45: 2, 0x46: 1, 0x47: 2, 0x48: 2, 0x49: 2, 0x4A: 2,
            0x4B: 3, 0x4C: 4, 0x4D: 4, 0x4E: 4, 0x4F: 4, 0x50: 4, 0x51: 2, 0x52: 2,
            0xF0: 2, 0xF1: 4, 0xF2: 3}
_LENGTHS.update({i: 1 for i in range(0x0F, 0x12)})      # binary sensors
_LENGTHS.update({i: 1 for i in range(0x15, 0x2E)})


@dataclass(frozen=True)
class BTHomePacket:
    packet_id: int | None = None
    battery_pct: int | None = None
    buttons: tuple[str, ...] = ()     # one event per button, in order ("press", ...)
    trigger: bool = False


def decode_bthome(data: bytes) -> BTHomePacket | None:
    """One advertisement's FCD2 service data -> a packet; None if not plain BTHome v2."""
    if len(data) < 1:
        return None
    info = data[0]
    if info >> 5 != 2 or info & 0x01:
        return None
    packet_id = battery = None
    buttons: list[str] = []
    i = 1
    while i < len(data):
        oid = data[i]
        size = _LENGTHS.get(oid)
        if size is None or i + 1 + size > len(data):
            break
        value = int.from_bytes(data[i + 1:i + 1 + size], "little")
        if oid == PACKET_ID:
            packet_id = value
        elif oid == BATTERY and value <= 100:
            battery = value
        elif oid == BUTTON:
            event = BUTTON_EVENTS.get(value)
            buttons.append(event or "none")
        i += 1 + size
    return BTHomePacket(packet_id, battery, tuple(buttons), bool(info & 0x04))
