"""The BLE link to the watch: a supervisor that keeps it connected without anyone touching it.

The recipe (Home Assistant's Bluetooth developer docs and the bleak issues behind them): scan
with a filter for a fresh ``BLEDevice`` every time; connect through bleak-retry-connector's
``establish_connection`` with a **new** client per connection; subscribe again after every
connect (subscriptions belong to the connection); always ``await client.disconnect()`` on the
old one (leaked watchers deliver notifications twice, bleak#2002); on BlueZ's
``InProgress`` (a stale pending Connect, bleak-retry-connector#226) close stale connections
and clear the device's cache before the next try; back off, capped. Notifications from an
old connection are ignored; repeats of a press within ``dedupe_s`` are one press. When a scan
finds nothing, a connection BlueZ still holds for a crashed process is closed (a connected
watch does not advertise).

A watch that is absent never blocks anything: ``run()`` is its own task and only ever
waits. The link reports ``disconnected`` once it has been down ``offline_grace_s`` (a drop
that reconnects sooner is not news) and ``connected`` when it is back, each once per change.
The battery is read after each connect and every ``battery_interval_s``: that read is also
the heartbeat that notices a link BlueZ still thinks is up. ``bthome`` watches are never
connected: their advertisements are listened to, and "connected" means "heard lately".
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from bleak import BleakScanner
from bleak_retry_connector import (BleakClientWithServiceCache, clear_cache,
                                   close_stale_connections_by_address, establish_connection)

from drivers.watch.decoder import DEDUPE_S, WatchDecoder
from drivers.watch.profiles import Profile
from drivers.watch.reports import Battery, LinkStatus, WatchReport

LOGGER = logging.getLogger(__name__)

CONNECTED, DISCONNECTED = "connected", "disconnected"
OUT_OF_RANGE = "out of range"
RECONNECT_MIN_S = 1.0
SCAN_TIMEOUT_S = 10.0
CONNECT_ATTEMPTS = 3         # establish_connection's own retries, per scan
GATT_TIMEOUT_S = 10.0        # one read or subscribe


class _BootClock:
    """Monotonic seconds that keep counting through suspend (as hub.clock.SystemClock)."""

    @staticmethod
    def monotonic() -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)


class _Session:
    """One connection: its own lost-event, so callbacks of an old client change nothing."""

    def __init__(self):
        self.lost = asyncio.Event()
        self.ours = False          # we asked for the disconnect: not a loss to report


class WatchLink:
    """Owns the watch's BLE link; reports what it says and whether it is there."""

    def __init__(self, address: str, profile: Profile, *,
                 on_report: Callable[[WatchReport], None],
                 on_status: Callable[[LinkStatus], None] | None = None,
                 clock: Any = None, offline_grace_s: float = 30.0,
                 reconnect_min_s: float = RECONNECT_MIN_S, reconnect_max_s: float = 60.0,
                 battery_interval_s: float = 600.0, scan_timeout_s: float = SCAN_TIMEOUT_S,
                 connect_attempts: int = CONNECT_ATTEMPTS, dedupe_s: float = DEDUPE_S,
                 recorder: Any = None, tick_s: float = 1.0,
                 client_backend: type | None = None, scanner_backend: type | None = None):
        self.address = address.upper()
        self.profile = profile
        self.on_report = on_report
        self.on_status = on_status
        self.clock = clock or _BootClock()
        self.offline_grace_s = offline_grace_s
        self.reconnect_min_s = min(reconnect_min_s, reconnect_max_s)
        self.reconnect_max_s = reconnect_max_s
        self.battery_interval_s = battery_interval_s
        self.scan_timeout_s = scan_timeout_s
        self.connect_attempts = connect_attempts
        self.recorder = recorder
        self.tick_s = tick_s
        self.client_backend = client_backend
        self.scanner_backend = scanner_backend
        self.decoder = WatchDecoder(profile, dedupe_s)
        self.state: str | None = None
        self.battery_pct: int | None = None
        self.rssi: int | None = None
        self.connects = 0
        self.stale_notifications = 0
        self._down_since: float | None = None
        self._reason: str | None = None
        self._heard: float | None = None     # bthome: last advertisement
        self._session: _Session | None = None
        self._stop: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<WatchLink {self.address} {self.profile.name} state={self.state}>"

    # --- public --------------------------------------------------------------------------
    async def run(self) -> None:
        """Until ``stop()``: find, connect, listen, reconnect. Never raises for a missing,
        silent or misbehaving watch or adapter."""
        self._stop = asyncio.Event()
        self._down_since = self.clock.monotonic()
        work = asyncio.ensure_future(self._supervise() if self.profile.connect else self._listen())
        watchdog = asyncio.ensure_future(self._watchdog())
        try:
            await self._stop.wait()
        finally:
            for task in (work, watchdog):
                task.cancel()
            await asyncio.gather(work, watchdog, return_exceptions=True)
            self._stop = None

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    @property
    def location(self):
        """The last position fix the watch sent (a ``reports.Location``), or None."""
        return self.decoder.location

    # --- status ----------------------------------------------------------------------------
    def _report(self, state: str, reason: str | None = None) -> None:
        if state == self.state:
            return
        self.state = state
        if state == CONNECTED:
            LOGGER.info("watch %s connected (%s profile)", self.address, self.profile.name)
        else:
            LOGGER.warning("watch %s disconnected: %s", self.address, reason)
        if self.recorder is not None:
            self.recorder.link(state, reason)
        if self.on_status is not None:
            status = LinkStatus(state, reason, self.battery_pct, self.rssi, self.clock.monotonic())
            try:
                self.on_status(status)
            except Exception:  # a broken listener must not stop the link
                LOGGER.exception("watch status listener failed")

    def _up(self) -> None:
        self._down_since = None
        self._reason = None
        self._report(CONNECTED)

    def _down(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = self.clock.monotonic()
        if reason != self._reason:
            self._reason = reason
            LOGGER.debug("watch %s: %s", self.address, reason)
        self._check_grace()

    def _check_grace(self) -> None:
        now = self.clock.monotonic()
        if not self.profile.connect and self._heard is not None \
                and now - self._heard >= self.offline_grace_s and self._down_since is None:
            self._down_since, self._reason = self._heard, OUT_OF_RANGE
        if self._down_since is not None and now - self._down_since >= self.offline_grace_s:
            self._report(DISCONNECTED, self._reason or OUT_OF_RANGE)

    async def _watchdog(self) -> None:
        while True:
            self._check_grace()
            await asyncio.sleep(self.tick_s)

    def _deliver(self, reports: list[WatchReport]) -> None:
        for r in reports:
            if isinstance(r, Battery):
                self.battery_pct = r.battery_pct
            try:
                self.on_report(r)
            except Exception:
                LOGGER.exception("watch report listener failed")

    # --- connected profiles ----------------------------------------------------------------
    async def _supervise(self) -> None:
        delay = self.reconnect_min_s
        while True:
            device = await self._find()
            got = await self._connect(device) if device is not None else None
            if got is not None:
                if await self._run_session(*got):
                    delay = self.reconnect_min_s
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_s)

    async def _find(self):
        def wanted(device, adv) -> bool:
            if device.address.upper() != self.address:
                return False
            self.rssi = adv.rssi
            return True

        try:
            device = await BleakScanner.find_device_by_filter(
                wanted, timeout=self.scan_timeout_s, backend=self.scanner_backend)
        except asyncio.CancelledError:
            raise
        except Exception as exc:   # no adapter, no bluetoothd, InProgress, D-Bus gone...
            self._down(f"cannot scan: {type(exc).__name__}: {exc}")
            return None
        if device is None:
            self._down(OUT_OF_RANGE)
            # A connection BlueZ still holds for a process that died (a hub restart after a
            # crash) keeps the watch from advertising, so no scan would ever find it.
            await self._quietly(close_stale_connections_by_address)
        return device

    async def _connect(self, device):
        session = _Session()

        def lost(_client) -> None:
            if not session.ours:
                LOGGER.debug("watch %s: link lost", self.address)
            session.lost.set()

        try:
            client = await establish_connection(
                BleakClientWithServiceCache, device, f"watch {self.address}",
                disconnected_callback=lost, max_attempts=self.connect_attempts,
                backend=self.client_backend)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if "InProgress" in str(exc):
                await self._recover_stale()
            self._down(f"cannot connect: {type(exc).__name__}: {exc}")
            return None
        return client, session

    async def _recover_stale(self) -> None:
        """BlueZ kept a pending Connect: close what it holds and forget the device."""
        LOGGER.info("watch %s: BlueZ reports an operation in progress; clearing its state",
                    self.address)
        for step in (close_stale_connections_by_address, clear_cache):
            await self._quietly(step)

    async def _quietly(self, step) -> None:
        """A bleak-retry-connector BlueZ helper (a no-op off BlueZ); failures only logged."""
        try:
            await asyncio.wait_for(step(self.address), GATT_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            LOGGER.debug("watch %s: %s failed: %s", self.address, step.__name__, exc)

    async def _run_session(self, client, session: _Session) -> bool:
        """Subscribe, read, wait for the end. True when the session got going."""
        self._session = session
        started = False
        try:
            started = await self._subscribe(client, session)
            if started:
                self.connects += 1
                self._up()
                await self._listen_session(client, session)
            if not session.ours:
                self._down(OUT_OF_RANGE if started else self._reason or "setup failed")
        finally:
            session.ours = True
            self._session = None
            try:
                await asyncio.wait_for(client.disconnect(), GATT_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOGGER.debug("watch %s: disconnect: %s", self.address, exc)
        return started

    async def _subscribe(self, client, session: _Session) -> bool:
        services = client.services
        missing = [c for c in self.profile.required if services.get_characteristic(c) is None]
        if missing:
            self._down(f"the watch has no {', '.join(missing)} (is the profile right?)")
            return False
        try:
            for char in self.profile.notify:
                if services.get_characteristic(char) is not None:
                    await asyncio.wait_for(
                        client.start_notify(char, self._notify_callback(session, char)),
                        GATT_TIMEOUT_S)
            await self._read_all(client, session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._down(f"cannot subscribe: {type(exc).__name__}: {exc}")
            return False
        return not session.lost.is_set()

    def _notify_callback(self, session: _Session, char: str):
        def callback(_characteristic, data: bytearray) -> None:
            if session is not self._session:
                self.stale_notifications += 1   # a watcher of an old connection
                return
            self._handle(char, bytes(data))
        return callback

    def _handle(self, char: str, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder.notification(char, data)
        self._deliver(self.decoder.notification(char, data, self.clock.monotonic()))

    async def _read_all(self, client, session: _Session) -> None:
        for char in self.profile.read:
            if client.services.get_characteristic(char) is None:
                continue
            data = await asyncio.wait_for(client.read_gatt_char(char), GATT_TIMEOUT_S)
            if session is self._session:
                self._handle(char, bytes(data))

    async def _listen_session(self, client, session: _Session) -> None:
        while not session.lost.is_set():
            try:
                await asyncio.wait_for(session.lost.wait(), self.battery_interval_s)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self._read_all(client, session)
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # BlueZ says connected, the watch does not answer
                LOGGER.info("watch %s: heartbeat read failed (%s); reconnecting", self.address, exc)
                return

    # --- bthome: advertisements only -------------------------------------------------------
    async def _listen(self) -> None:
        delay = self.reconnect_min_s
        while True:
            scanner = None
            try:
                scanner = BleakScanner(self._on_advertisement, backend=self.scanner_backend)
                await scanner.start()
                delay = self.reconnect_min_s
                await asyncio.Event().wait()    # until cancelled by stop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(f"cannot scan: {type(exc).__name__}: {exc}")
            finally:
                if scanner is not None:
                    try:
                        await asyncio.wait_for(scanner.stop(), GATT_TIMEOUT_S)
                    except Exception as exc:
                        LOGGER.debug("watch scanner stop: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_s)

    def _on_advertisement(self, device, adv) -> None:
        if device.address.upper() != self.address:
            return
        now = self.clock.monotonic()
        self._heard, self.rssi = now, adv.rssi
        if self.profile.adv_uuid in adv.service_data and self.recorder is not None:
            self.recorder.advertisement(self.profile.adv_uuid, adv.service_data[self.profile.adv_uuid],
                                        adv.rssi)
        reports = self.decoder.advertisement(adv.service_data, now)
        self._up()
        self._deliver(reports)
