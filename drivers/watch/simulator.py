"""A simulated watch that bleak itself talks to, through its public ``backend=`` argument.

``SimulatedWatch`` is the watch and its radio; ``watch.client_backend`` and
``watch.scanner_backend`` are ``BaseBleakClient`` / ``BaseBleakScanner`` subclasses bound to
it, passed to ``BleakClient``/``BleakScanner`` (and so through bleak-retry-connector's
``establish_connection``) exactly where the BlueZ backend would be. Used by the tests, the
demo and bench/watch.py; no Bluetooth is needed.

bleak calls its backends "not part of the stable API" (docs/backends/index.rst): this file is
written against bleak 3.1.0, which setup.py pins.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError

from drivers.watch import gatt
from drivers.watch.bthome import BTHOME_UUID
from drivers.watch.pattern import ITAG_BUTTON, ITAG_SERVICE

LOGGER = logging.getLogger(__name__)

# service -> characteristics, per kind of simulated watch
LAYOUTS = {
    "itag": {ITAG_SERVICE: [ITAG_BUTTON], gatt.BATTERY_SERVICE: [gatt.BATTERY_LEVEL]},
    "standard": {gatt.HEART_RATE_SERVICE: [gatt.HEART_RATE_MEASUREMENT],
                 gatt.BATTERY_SERVICE: [gatt.BATTERY_LEVEL],
                 gatt.LN_SERVICE: [gatt.LOCATION_AND_SPEED, gatt.POSITION_QUALITY],
                 ITAG_SERVICE: [ITAG_BUTTON]},
    "bthome": {},
}


def encode_heart_rate(bpm: int, rr_s: tuple[float, ...] = ()) -> bytes:
    flags = 0x06 | (0x10 if rr_s else 0) | (0x01 if bpm > 255 else 0)
    hr = bpm.to_bytes(2 if bpm > 255 else 1, "little")
    return bytes([flags]) + hr + b"".join(round(r * 1024).to_bytes(2, "little") for r in rr_s)


def encode_location(lat: float, lon: float) -> bytes:
    """Location and Speed with a location and status OK (flags 0x0084)."""
    return (0x0084).to_bytes(2, "little") + round(lat * 1e7).to_bytes(4, "little", signed=True) \
        + round(lon * 1e7).to_bytes(4, "little", signed=True)


def encode_position_quality(ehpe_m: float) -> bytes:
    return (0x0008).to_bytes(2, "little") + round(ehpe_m * 100).to_bytes(4, "little")


class SimulatedWatch:
    """The watch: its GATT table, its battery, whether it is in range, what it sends."""

    def __init__(self, address: str = "C0:FF:EE:00:00:01", name: str = "CareWatch",
                 layout: str = "standard", battery_pct: int = 87, rssi: int = -60,
                 extra: dict[str, list[str]] | None = None):
        self.address = address
        self.name = name
        self.layout = {**LAYOUTS[layout], **(extra or {})}
        self.values: dict[str, bytes] = {gatt.BATTERY_LEVEL: bytes([battery_pct])}
        self.rssi = rssi
        self.in_range = True
        self.duplicate_notifications = False    # bleak#2002: every notification twice
        self.connect_errors: list[BaseException] = []   # raised by the next connects, in order
        self.connects = 0
        self.client: SimClient | None = None
        self.scanners: set[SimScanner] = set()
        self.service_data: dict[str, bytes] = {}
        self.advert_interval_s = 0.05
        self.client_backend = type("BoundSimClient", (SimClient,), {"watch": self})
        self.scanner_backend = type("BoundSimScanner", (SimScanner,), {"watch": self})

    # --- what the resident and the radio do ------------------------------------------------
    def notify(self, char: str, data: bytes) -> bool:
        """Send a notification; False when nobody is subscribed (not connected)."""
        client = self.client
        cb = client.subscribed.get(char) if client is not None else None
        if cb is None:
            return False
        for _ in range(2 if self.duplicate_notifications else 1):
            cb(bytearray(data))
        return True

    def press(self, data: bytes = b"\x01", char: str = ITAG_BUTTON) -> bool:
        return self.notify(char, data)

    def set_battery(self, pct: int, notify: bool = True) -> None:
        self.values[gatt.BATTERY_LEVEL] = bytes([pct])
        if notify:
            self.notify(gatt.BATTERY_LEVEL, bytes([pct]))

    def walk_away(self) -> None:
        """Out of range: the link drops (supervision timeout) and adverts stop."""
        self.in_range = False
        if self.client is not None:
            self.client._lost()

    def come_back(self) -> None:
        self.in_range = True

    def broadcast(self, service_data: dict[str, bytes]) -> None:
        """Change what the watch advertises (BTHome) and send it at once."""
        self.service_data = dict(service_data)
        for scanner in list(self.scanners):
            scanner._advertise()

    def bthome(self, payload: bytes) -> None:
        self.broadcast({BTHOME_UUID: payload})


class SimClient(BaseBleakClient):
    watch: SimulatedWatch   # set by SimulatedWatch.client_backend

    def __init__(self, address_or_ble_device, **kwargs: Any):
        kwargs.setdefault("timeout", 10.0)
        kwargs.setdefault("disconnected_callback", None)
        super().__init__(address_or_ble_device, **{k: kwargs[k] for k in
                                                   ("timeout", "disconnected_callback")})
        self._connected = False
        self.subscribed: dict[str, Callable[[bytearray], None]] = {}

    @property
    def name(self) -> str:
        return self.watch.name

    @property
    def mtu_size(self) -> int:
        return 23

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self, pair: bool = False, **kwargs: Any) -> None:
        w = self.watch
        await asyncio.sleep(0)
        if w.connect_errors:
            raise w.connect_errors.pop(0)
        if not w.in_range:
            raise BleakError("[org.bluez.Error.Failed] le-connection-abort-by-local")
        if w.client is not None and w.client is not self:
            w.client._lost()    # the watch takes one central at a time
        services = BleakGATTServiceCollection()
        handle = 1
        for suuid, chars in w.layout.items():
            service = BleakGATTService(None, handle, suuid)
            services.add_service(service)
            handle += 1
            for cuuid in chars:
                services.add_characteristic(BleakGATTCharacteristic(
                    None, handle, cuuid, ["read", "notify"], lambda: 20, service))
                handle += 2
        self.services = services
        self._connected = True
        w.client = self
        w.connects += 1

    def _lost(self) -> None:
        if not self._connected:
            return
        self._connected = False
        self.subscribed.clear()
        if self.watch.client is self:
            self.watch.client = None
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        self._lost()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def unpair(self) -> None:
        pass

    def _check(self) -> None:
        if not self._connected:
            raise BleakError("Not connected")

    async def read_gatt_char(self, characteristic, **kwargs: Any) -> bytearray:
        self._check()
        uuid = characteristic.uuid if hasattr(characteristic, "uuid") else str(characteristic)
        return bytearray(self.watch.values.get(uuid, b""))

    async def read_gatt_descriptor(self, descriptor, **kwargs: Any) -> bytearray:
        self._check()
        return bytearray()

    async def write_gatt_char(self, characteristic, data, response: bool = False) -> None:
        self._check()
        self.watch.values[characteristic.uuid] = bytes(data)

    async def write_gatt_descriptor(self, descriptor, data) -> None:
        self._check()

    async def start_notify(self, characteristic, callback, **kwargs: Any) -> None:
        self._check()
        self.subscribed[characteristic.uuid] = callback

    async def stop_notify(self, characteristic) -> None:
        self.subscribed.pop(getattr(characteristic, "uuid", characteristic), None)


class SimScanner(BaseBleakScanner):
    watch: SimulatedWatch   # set by SimulatedWatch.scanner_backend

    def __init__(self, detection_callback, service_uuids, scanning_mode="active", *,
                 bluez=None, cb=None, **kwargs: Any):
        super().__init__(detection_callback, service_uuids)
        self._task: asyncio.Task | None = None

    def _advertise(self) -> None:
        w = self.watch
        if not w.in_range:
            return
        uuids = list(w.layout)
        adv = AdvertisementData(local_name=w.name, manufacturer_data={},
                                service_data=dict(w.service_data), service_uuids=uuids,
                                tx_power=None, rssi=w.rssi, platform_data=())
        if not self.is_allowed_uuid(uuids + list(w.service_data)):
            return
        device = self.create_or_update_device(w.address, w.address, w.name, w, adv)
        self.call_detection_callbacks(device, adv)

    async def _loop(self) -> None:
        while True:
            self._advertise()
            await asyncio.sleep(self.watch.advert_interval_s)

    async def start(self) -> None:
        self.seen_devices = {}
        self.watch.scanners.add(self)
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        self.watch.scanners.discard(self)
        if self._task is not None:
            self._task.cancel()
            self._task = None


def device_of(watch: SimulatedWatch) -> BLEDevice:
    return BLEDevice(watch.address, watch.name, watch)
