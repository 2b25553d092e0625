"""A profile-aware decoder: notification and advertisement bytes in, reports out.

State is small and bounded: the last location fix (to join Location and Speed's second
notification to its first), the last accepted press per kind (duplicate notifications after
a reconnect, bleak#2002, must not raise twice) and the last BTHome packet id (a button's
advertisement repeats one packet many times). Time is passed in, never read.
"""

from __future__ import annotations

import dataclasses
import logging

from drivers.watch import gatt
from drivers.watch.bthome import decode_bthome
from drivers.watch.pattern import ITAG_BUTTON, is_itag_press, matches
from drivers.watch.profiles import Profile
from drivers.watch.reports import Battery, Location, Press, WatchReport

LOGGER = logging.getLogger(__name__)

DEDUPE_S = 2.0          # the same press again within this is the same press
LOCATION_JOIN_S = 2.0   # a second Location and Speed part this soon belongs to the last fix


class WatchDecoder:
    def __init__(self, profile: Profile, dedupe_s: float = DEDUPE_S):
        self.profile = profile
        self.dedupe_s = dedupe_s
        self.garbage = 0            # notifications that decoded to nothing
        self.duplicates = 0         # presses dropped as repeats
        self._last_press: dict[tuple, float] = {}
        self._last_packet_id: int | None = None
        self._fix: Location | None = None
        self._accuracy_m: float | None = None
        self.location: Location | None = None   # the last known fix, for alerts

    # --- GATT notifications and reads ----------------------------------------------------
    def notification(self, char: str, data: bytes, mono: float) -> list[WatchReport]:
        data = bytes(data)
        char = char.lower()
        before = self.duplicates
        out = self._decode(char, data, mono)
        if not out and self.duplicates == before:
            self.garbage += 1
            LOGGER.debug("watch: %s sent %s, which means nothing here", char, data.hex())
        return out

    def _decode(self, char: str, data: bytes, mono: float) -> list[WatchReport]:
        p = self.profile
        if char == p.event_char:
            for kind, pat in (("sos", p.sos), ("fall", p.fall), ("ok", p.ok)):
                if matches(pat, data):
                    return self._press(kind, None, (char, data), mono)
            return []
        if char == ITAG_BUTTON:
            return self._press("sos", None, (char, data), mono) if is_itag_press(data) else []
        if char == gatt.HEART_RATE_MEASUREMENT:
            hr = gatt.decode_heart_rate(data)
            return [dataclasses.replace(hr, mono=mono)] if hr else []
        if char == gatt.BATTERY_LEVEL:
            b = gatt.decode_battery(data)
            return [dataclasses.replace(b, mono=mono)] if b else []
        if char == gatt.LOCATION_AND_SPEED:
            return self._location(data, mono)
        if char == gatt.POSITION_QUALITY:
            acc = gatt.decode_position_quality(data)
            if acc is None:
                return []
            self._accuracy_m = acc
            if self._fix is not None and mono - self._fix.mono <= LOCATION_JOIN_S:
                return self._emit(dataclasses.replace(self._fix, accuracy_m=acc))
            return []
        return []

    def _location(self, data: bytes, mono: float) -> list[WatchReport]:
        ls = gatt.decode_location_speed(data)
        if ls is None:
            return []
        fix = gatt.location_of(ls, self._accuracy_m)
        if fix is not None:
            return self._emit(dataclasses.replace(fix, mono=mono))
        # the second part: elevation / heading / time of the fix just received
        if self._fix is None or mono - self._fix.mono > LOCATION_JOIN_S:
            return []
        extra = {k: v for k, v in (("elevation_m", ls.elevation_m), ("heading_deg", ls.heading_deg),
                                   ("utc", ls.utc)) if v is not None}
        if not extra:
            return []
        return self._emit(dataclasses.replace(self._fix, **extra))

    def _emit(self, fix: Location) -> list[WatchReport]:
        self._fix = self.location = fix
        return [fix]

    def _press(self, kind: str, press_id: int | None, key, mono: float) -> list[WatchReport]:
        last = self._last_press.get((kind, key))
        if last is not None and mono - last < self.dedupe_s:
            self.duplicates += 1
            LOGGER.debug("watch: %s repeated within %.1f s: the same press", kind, mono - last)
            return []
        self._last_press = {k: t for k, t in self._last_press.items() if mono - t < self.dedupe_s}
        self._last_press[(kind, key)] = mono
        return [Press(kind, press_id, mono)]

    # --- advertisements --------------------------------------------------------------------
    def advertisement(self, service_data: dict[str, bytes], mono: float) -> list[WatchReport]:
        p = self.profile
        if p.adv_uuid is None or p.adv_uuid not in service_data:
            return []
        data = bytes(service_data[p.adv_uuid])
        pkt = decode_bthome(data)
        if pkt is None:
            self.garbage += 1
            return []
        if pkt.packet_id is not None:
            if pkt.packet_id == self._last_packet_id:
                self.duplicates += 1
                return []
            self._last_packet_id = pkt.packet_id
        out: list[WatchReport] = []
        if pkt.battery_pct is not None:
            out.append(Battery(pkt.battery_pct, mono))
        for event in pkt.buttons:
            kind = "sos" if event == p.bthome_sos else "ok" if event == p.bthome_ok else None
            if kind is None:
                continue
            if pkt.packet_id is not None:
                out.append(Press(kind, pkt.packet_id, mono))
            else:   # no packet id: fall back to a time window
                out.extend(self._press(kind, None, ("adv", data), mono))
        return out
