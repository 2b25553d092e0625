"""Profiles: which characteristics (or advertisements) a kind of watch uses, and what they mean.

``itag``: the de-facto DIY SOS button (press notifies 0x01 on 0xFFE1; battery 0x2A19).
``standard``: SIG Heart Rate 0x2A37, Battery 0x2A19, Location and Speed 0x2A67 (and
Position Quality 0x2A69); SOS from an iTag-style 0xFFE1 button where the watch has one.
``bthome``: BTHome v2 button events in advertisements, no connection.
``custom``: a vendor characteristic and the byte patterns meaning SOS, fall and OK.
Every connected profile also takes whichever SIG characteristics the watch has.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.watch import gatt
from drivers.watch.bthome import BTHOME_UUID, BUTTON_EVENTS
from drivers.watch.pattern import ITAG_BUTTON, Pattern, normalize_uuid, parse_pattern

PROFILES = ("itag", "standard", "bthome", "custom")
BUTTON_EVENT_NAMES = tuple(e for e in BUTTON_EVENTS.values() if e)
SIG_NOTIFY = (gatt.HEART_RATE_MEASUREMENT, gatt.LOCATION_AND_SPEED, gatt.POSITION_QUALITY,
              gatt.BATTERY_LEVEL)


@dataclass(frozen=True)
class Profile:
    name: str
    connect: bool = True
    notify: tuple[str, ...] = SIG_NOTIFY   # subscribed to when the watch has them
    required: tuple[str, ...] = ()          # without these the connection is no use
    read: tuple[str, ...] = (gatt.BATTERY_LEVEL,)   # read after connecting, then periodically
    event_char: str | None = None           # custom: the vendor characteristic
    sos: Pattern = ()
    fall: Pattern = ()
    ok: Pattern = ()
    bthome_sos: str = "press"
    bthome_ok: str = "double_press"
    adv_uuid: str | None = None             # bthome: the service data to read


def make_profile(name: str, *, event_char: str = "", sos_pattern: str = "",
                 fall_pattern: str = "", ok_pattern: str = "", bthome_sos: str = "press",
                 bthome_ok: str = "double_press") -> Profile:
    """Build a profile from the [watch] keys; ValueError names what is wrong."""
    if name == "itag":
        return Profile("itag", notify=(ITAG_BUTTON, gatt.BATTERY_LEVEL), required=(ITAG_BUTTON,))
    if name == "standard":
        return Profile("standard", notify=SIG_NOTIFY + (ITAG_BUTTON,))
    if name == "bthome":
        if bthome_sos not in BUTTON_EVENT_NAMES or bthome_ok not in BUTTON_EVENT_NAMES:
            raise ValueError(f"button events are {', '.join(BUTTON_EVENT_NAMES)}")
        return Profile("bthome", connect=False, notify=(), read=(), adv_uuid=BTHOME_UUID,
                       bthome_sos=bthome_sos, bthome_ok=bthome_ok)
    if name == "custom":
        if not event_char:
            raise ValueError("the custom profile needs event_char (the vendor characteristic)")
        char = normalize_uuid(event_char)
        sos, fall, ok = parse_pattern(sos_pattern), parse_pattern(fall_pattern), parse_pattern(ok_pattern)
        if not (sos or fall):
            raise ValueError("the custom profile needs sos_pattern or fall_pattern")
        return Profile("custom", notify=SIG_NOTIFY + (char,), required=(char,), event_char=char,
                       sos=sos, fall=fall, ok=ok)
    raise ValueError(f"profile {name!r} is not one of {', '.join(PROFILES)}")


def profile_from_config(watch: dict) -> Profile:
    """The validated [watch] table (hub/config.py) -> its Profile."""
    return make_profile(watch["profile"], event_char=watch.get("event_char") or "",
                        sos_pattern=watch.get("sos_pattern") or "",
                        fall_pattern=watch.get("fall_pattern") or "",
                        ok_pattern=watch.get("ok_pattern") or "",
                        bthome_sos=watch.get("bthome_sos") or "press",
                        bthome_ok=watch.get("bthome_ok") or "double_press")
