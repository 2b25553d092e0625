"""The serial link to the belt: a thin asyncio transport over pyserial URLs.

``serial.serial_for_url`` takes a device path, ``socket://``, ``rfc2217://`` or ``loop://``,
so the same code serves the Pi, a network bridge and tests. Reads block in a worker thread
with a short timeout and hand their bytes to the loop; nothing here decodes.

The belt counts as connected once bytes flow after an open, and as disconnected when the
port cannot be opened, a read fails (USB unplugged) or nothing arrives for
``stale_timeout_s``. Each change is reported once through ``on_status``; the port is then
reopened with capped exponential backoff (as pymodbus does) until the device is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Callable, Iterable, Protocol

import serial

LOGGER = logging.getLogger(__name__)

# Blocking read timeout: bounds how long stop() and stale detection can lag.
READ_TIMEOUT_S = 0.1
# First reopen delay; doubled after each failed attempt up to reconnect_max_s.
RECONNECT_MIN_S = 0.1
READ_CHUNK = 4096

CONNECTED, DISCONNECTED = "connected", "disconnected"


class PortInUse(serial.SerialException):
    """Another program holds the port (its exclusive lock): two readers would split the bytes."""


def open_exclusive(url: str, baudrate: int) -> serial.SerialBase:
    """Open ``url`` so that no second reader can (flock on a device; URL handlers ignore it)."""
    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=READ_TIMEOUT_S,
                                     write_timeout=1.0, exclusive=True)
    except serial.SerialException as exc:
        if "exclusively lock" in str(exc):
            raise PortInUse(f"{url} is in use by another program") from None
        raise


def port_in_use(url: str) -> bool:
    """Whether another program holds ``url`` right now (the monitor asks before it opens)."""
    try:
        open_exclusive(url, 9600).close()
    except PortInUse:
        return True
    except (serial.SerialException, OSError, ValueError):
        return False
    return False


class MonotonicClock(Protocol):
    def monotonic(self) -> float: ...


class BootClock:
    """CLOCK_BOOTTIME: keeps counting through suspend and never jumps (the hub passes its own)."""

    @staticmethod
    def monotonic() -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)


class BeltLink:
    """Owns one serial port: opens, reads, writes the handshake, notices loss, reopens."""

    def __init__(self, url: str, *, baudrate: int, on_bytes: Callable[[bytes], None],
                 on_status: Callable[[str, dict], None], stale_timeout_s: float = 30.0,
                 reconnect_max_s: float = 60.0, handshake: Iterable[bytes] = (),
                 clock: MonotonicClock | None = None, reconnect_min_s: float = RECONNECT_MIN_S):
        self.url = url
        self.baudrate = baudrate
        self.on_bytes = on_bytes
        self.on_status = on_status
        self.stale_timeout_s = stale_timeout_s
        self.reconnect_max_s = reconnect_max_s
        self.reconnect_min_s = min(reconnect_min_s, reconnect_max_s)
        self.handshake = list(handshake)
        self.clock = clock or BootClock()
        self.state: str | None = None
        self.bytes_received = 0
        self._serial: serial.SerialBase | None = None
        self._stop: asyncio.Event | None = None
        self._consumer_failed = False

    def __repr__(self) -> str:
        return f"<BeltLink {self.url} state={self.state}>"

    # --- public --------------------------------------------------------------------------
    async def run(self) -> None:
        """Until ``stop()``: keep the port open and the bytes flowing. Never raises for a
        missing, silent or vanished device."""
        self._stop = asyncio.Event()
        delay = self.reconnect_min_s
        try:
            while not self._stop.is_set():
                ser = await self._open()
                if ser is not None:
                    if await self._pump(ser):
                        delay = self.reconnect_min_s
                    await asyncio.to_thread(self._close, ser)
                if self._stop.is_set():
                    break
                await self._sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)
        finally:
            self._stop = None

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def write(self, data: bytes) -> bool:
        """Send bytes if the port is open; False (and nothing raised) when it is not."""
        ser = self._serial
        if ser is None or not data:
            return False
        try:
            await asyncio.to_thread(ser.write, data)
            return True
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            LOGGER.debug("belt write failed: %s", exc)
            return False

    # --- internals -----------------------------------------------------------------------
    def _report(self, state: str, info: dict) -> None:
        if state == self.state:
            return
        self.state = state
        if state == CONNECTED:
            LOGGER.info("belt connected on %s", self.url)
        else:
            LOGGER.warning("belt disconnected (%s): %s", self.url, info.get("reason"))
        try:
            self.on_status(state, info)
        except Exception:  # a broken listener must not stop the link
            LOGGER.exception("belt status listener failed")

    async def _open(self) -> serial.SerialBase | None:
        try:
            ser = await asyncio.to_thread(open_exclusive, self.url, self.baudrate)
        except PortInUse as exc:
            self._report(DISCONNECTED, {"url": self.url, "reason": str(exc)})
            return None
        except (serial.SerialException, OSError, ValueError) as exc:
            self._report(DISCONNECTED, {"url": self.url, "reason": f"cannot open: {exc}"})
            return None
        LOGGER.debug("belt port %s open", self.url)
        try:
            for frame in self.handshake:
                await asyncio.to_thread(ser.write, frame)
        except (serial.SerialException, OSError) as exc:
            await asyncio.to_thread(self._close, ser)
            self._report(DISCONNECTED, {"url": self.url, "reason": f"handshake write failed: {exc}"})
            return None
        self._serial = ser
        return ser

    @staticmethod
    def _close(ser) -> None:
        try:
            ser.close()
        except (serial.SerialException, OSError):
            pass

    @staticmethod
    def _read(ser) -> bytes:
        return ser.read(max(1, min(ser.in_waiting, READ_CHUNK)))

    async def _pump(self, ser) -> bool:
        """Read until stale, failure or stop; True when bytes flowed on this opening."""
        self._flowed = False
        self._last_mono = self.clock.monotonic()
        try:
            fd = getattr(ser, "fd", None)
            if isinstance(fd, int) and fd >= 0:
                await self._pump_fd(fd)
            else:
                await self._pump_polled(ser)
        finally:
            self._serial = None
        return self._flowed

    async def _pump_fd(self, fd: int) -> None:
        """A device (tty, pty): the loop watches the descriptor, so a quiet or slow sensor costs
        no wakeups; the only timer is the stale deadline."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        chunks: list[bytes] = []
        failure: list[BaseException] = []

        def readable() -> None:
            try:
                data = os.read(fd, READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EIO: the other end hung up (cable pulled, pty closed)
                failure.append(exc)
            else:
                if data:
                    chunks.append(data)
                else:
                    failure.append(OSError("device reports readiness to read but returned no data"))
            if failure:
                loop.remove_reader(fd)
            wake.set()

        stop_waiter = asyncio.ensure_future(self._stop.wait())
        loop.add_reader(fd, readable)
        try:
            while not self._stop.is_set():
                remaining = self.stale_timeout_s - (self.clock.monotonic() - self._last_mono)
                if remaining > 0:
                    waiter = asyncio.ensure_future(wake.wait())
                    await asyncio.wait({waiter, stop_waiter}, timeout=remaining,
                                       return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                wake.clear()
                if chunks:
                    data = b"".join(chunks)
                    chunks.clear()
                    self._received(data)
                if failure:
                    self._report(DISCONNECTED, {"url": self.url, "reason": f"read failed: {failure[0]}"})
                    return
                if not self._stop.is_set() and self._stale():
                    return
        finally:
            loop.remove_reader(fd)
            stop_waiter.cancel()

    async def _pump_polled(self, ser) -> None:
        """A URL handler without a descriptor (socket://, rfc2217://, loop://): read in a thread."""
        while not self._stop.is_set():
            try:
                data = await asyncio.to_thread(self._read, ser)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial's fd vanished under a concurrent close
                self._report(DISCONNECTED, {"url": self.url, "reason": f"read failed: {exc}"})
                return
            if data:
                self._received(data)
            elif self._stale():
                return

    def _received(self, data: bytes) -> None:
        self._last_mono = self.clock.monotonic()
        self.bytes_received += len(data)
        if not self._flowed:
            self._flowed = True
            self._report(CONNECTED, {"url": self.url, "baudrate": self.baudrate})
        try:
            self.on_bytes(data)
        except Exception:  # a broken consumer must not stop the link
            if not self._consumer_failed:
                LOGGER.exception("belt bytes consumer failed (logged once)")
            self._consumer_failed = True

    def _stale(self) -> bool:
        if self.clock.monotonic() - self._last_mono < self.stale_timeout_s:
            return False
        self._report(DISCONNECTED, {"url": self.url, "reason": f"no data for {self.stale_timeout_s:g}s"})
        return True

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass
