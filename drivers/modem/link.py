"""The modem link: one owner of the AT port, over any pyserial URL, on the asyncio loop.

It initialises the modem (echo off, numeric errors, the SIM PIN at most once, PDU mode,
new-message indications, registration), watches registration and signal, sends texts
(``AT+CMGS=<n>``, the ``> `` prompt, the PDU, Ctrl-Z), reads and deletes incoming texts,
dials, and recovers from a modem that stops answering: resync, re-initialise, then the reset
line the hub provides. One command is in flight at a time; every command has a deadline.

Each change of state is reported once through ``on_status``; failures are retried with capped
backoff. A send never blocks its caller's loop and never raises for a modem problem: it returns
a ``SendResult`` when the text went, failed for good, or ran out of time.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import serial

from drivers.errors import DriverError
from drivers.modem import at, pdu

LOGGER = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.2  # bounds how long stop() lags; bytes are returned as they come
CTRL_Z, ESC = b"\x1a", b"\x1b"

# States reported through on_status(state, info).
READY = "ready"                    # initialised and registered
NOT_REGISTERED = "not_registered"  # initialised, no network yet: sends are still tried
SEND_FAILING = "send_failing"      # the last submit failed with a temporary error
NO_ANSWER = "no_answer"            # the modem does not answer AT
NO_SIM = "no_sim"                  # SIM absent or not ready
PIN_REQUIRED = "pin_required"      # the SIM wants a PIN and none is configured
PIN_REJECTED = "pin_rejected"      # the configured PIN was refused: never sent again
PUK_REQUIRED = "puk_required"      # three wrong PINs: a person must enter the PUK
DISCONNECTED = "disconnected"      # the port cannot be opened or went away
USABLE = (READY, NOT_REGISTERED, SEND_FAILING)

# SendResult.result
SENT, RETRYING, FAILED, TIMED_OUT = "sent", "retry", "failed", "timeout"


class ModemError(DriverError):
    """Base of the link's own errors (never raised out of run() or send_text())."""


class CommandTimeout(ModemError):
    pass


class ModemRebooted(ModemError):
    pass


class LinkDown(ModemError):
    pass


class _InitFailed(ModemError):
    def __init__(self, state: str, reason: str):
        super().__init__(reason)
        self.state = state
        self.reason = reason


@dataclass(frozen=True)
class Timeouts:
    """Seconds. Defaults from the SIM800/EC2x manuals' maximum response times."""

    command_s: float = 2.0
    slow_s: float = 5.0       # +CPIN, +CMGR, +CMGD
    prompt_s: float = 10.0    # AT+CMGS=<n> to "> "
    submit_s: float = 120.0   # Ctrl-Z to +CMGS
    list_s: float = 25.0      # +CMGL
    dial_s: float = 30.0      # ATD to its first result


@dataclass(frozen=True)
class SendResult:
    ok: bool
    result: str               # "sent", "retry" (an attempt failed, another follows), "failed", "timeout"
    attempt: int
    refs: tuple = ()          # TP-MR of each part, for status reports
    code: int | None = None   # +CMS ERROR code where there was one
    reason: str = ""


@dataclass(frozen=True)
class IncomingSms:
    sender: str
    text: str
    sent_at: Any              # datetime from the SMSC time stamp, or None
    received_mono: float
    index: int | None
    alphanumeric_sender: bool = False
    concat: pdu.Concat | None = None


@dataclass(frozen=True)
class ModemStatus:
    state: str | None
    registration: int | None
    rssi: int | None
    dbm: int | None
    operator: str
    garbage_lines: int
    parts_sent: int
    messages_received: int
    last_error: str


class _Monotonic:
    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class _Pending:
    command: str
    done: asyncio.Future
    expect: str = ""                       # an info prefix the answer must carry
    prompt: asyncio.Future | None = None
    items: list = field(default_factory=list)


class ModemLink:
    """``run()`` owns the port until ``stop()``; ``send_text()``/``dial()`` from any task."""

    def __init__(self, url: str, *, on_status: Callable[[str, dict], None],
                 on_message: Callable[[IncomingSms], Any] | None = None,
                 on_report: Callable[[pdu.StatusReport], Any] | None = None,
                 pin: str | None = None, baudrate: int = 115200,
                 reset: Callable[[], Any] | None = None, clock=None,
                 timeouts: Timeouts = Timeouts(), validity_s: float = 12 * 3600,
                 registration_wait_s: float = 30.0, poll_interval_s: float = 60.0,
                 sweep_interval_s: float = 300.0, sync_attempts: int = 10, sync_interval_s: float = 1.0,
                 retry_delays_s: tuple = (10.0, 30.0, 60.0, 120.0, 300.0),
                 reconnect_min_s: float = 1.0, reconnect_max_s: float = 60.0,
                 reset_after_failures: int = 3, reset_boot_wait_s: float = 15.0,
                 min_submit_gap_s: float = 3.0, send_deadline_s: float = 600.0,
                 voice: bool = False):
        self.url = url
        self.on_status = on_status
        self.on_message = on_message
        self.on_report = on_report
        self.pin = pin or None
        self.baudrate = baudrate
        self.reset = reset
        self.clock = clock or _Monotonic()
        self.timeouts = timeouts
        self.validity_s = validity_s
        self.registration_wait_s = registration_wait_s
        self.poll_interval_s = poll_interval_s
        self.sweep_interval_s = sweep_interval_s
        self.sync_attempts = sync_attempts
        self.sync_interval_s = sync_interval_s
        self.retry_delays_s = tuple(retry_delays_s) or (10.0,)
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.reset_after_failures = reset_after_failures
        self.reset_boot_wait_s = reset_boot_wait_s
        self.min_submit_gap_s = min_submit_gap_s
        self.send_deadline_s = send_deadline_s
        self.voice = voice

        self.state: str | None = None
        self.info: dict = {}
        self.registration: int | None = None
        self.rssi: int | None = None
        self.operator = ""
        self.parts_sent = 0
        self.messages_received = 0
        self.resets = 0
        self.last_error = ""
        self._reader = at.AtReader()
        self._ser = None
        self._pending: _Pending | None = None
        self._lock = asyncio.Lock()
        self._urcs: asyncio.Queue = asyncio.Queue(maxsize=256)
        self._usable = asyncio.Event()
        self._trouble = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self._initialising = False
        self._pin_sent = False
        self._concat_ref = 0
        self._last_submit = -1e9
        self._call_end: str | None = None
        self._read_stop = asyncio.Event()

    def __repr__(self) -> str:
        return f"<ModemLink {self.url} state={self.state}>"

    # --- public ------------------------------------------------------------------------------
    @property
    def status(self) -> ModemStatus:
        dbm = at.SignalQuality(self.rssi, 99).dbm if self.rssi is not None else None
        return ModemStatus(self.state, self.registration, self.rssi, dbm, self.operator,
                           self._reader.garbage, self.parts_sent, self.messages_received,
                           self.last_error)

    async def run(self) -> None:
        """Until ``stop()``. Never raises for a missing, silent, rebooting or locked modem."""
        self._stop = asyncio.Event()
        delay = self.reconnect_min_s
        failures = 0
        try:
            while not self._stop.is_set():
                ser = await self._open()
                served = False
                if ser is not None:
                    self._read_stop = asyncio.Event()
                    reader = asyncio.create_task(self._read_loop(ser))
                    try:
                        served = await self._session()
                    finally:
                        self._usable.clear()
                        self._read_stop.set()
                        await reader
                        self._ser = None
                        await asyncio.to_thread(_close, ser)
                if self._stop.is_set():
                    break
                if served:
                    failures, delay = 0, self.reconnect_min_s
                    continue
                failures += 1
                if self.reset is not None and failures >= self.reset_after_failures \
                        and self.state in (NO_ANSWER, DISCONNECTED):
                    failures = 0
                    await self._hardware_reset()
                    continue
                await self._sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)
        finally:
            self._stop = None

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._trouble.set()

    async def wait_usable(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._usable.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def send_text(self, number: str, text: str, *, deadline_s: float | None = None,
                        status_report: bool = False,
                        on_attempt: Callable[[SendResult], Any] | None = None) -> SendResult:
        """Send, retrying temporary failures with capped backoff until ``deadline_s``.

        ``on_attempt`` hears every attempt's outcome (the hub's ``alert.notified`` per attempt).
        A part that went out is not sent again; one whose fate is unknown (timeout, reboot) is:
        a duplicate text is acceptable, a lost one is not.
        """
        self._concat_ref = (self._concat_ref + 1) % 256
        try:
            parts = pdu.encode_submit(number, text, validity_s=self.validity_s,
                                      status_report=status_report, concat_ref=self._concat_ref)
        except pdu.PduError as e:
            result = SendResult(False, FAILED, 0, reason=str(e))
            await _call(on_attempt, result)
            return result
        deadline = self.clock.monotonic() + (self.send_deadline_s if deadline_s is None else deadline_s)
        refs: dict[int, int] = {}
        attempt = 0
        while True:
            left = deadline - self.clock.monotonic()
            if left <= 0 or not await self.wait_usable(left):
                result = SendResult(False, TIMED_OUT, attempt, tuple(refs.values()),
                                    reason=f"modem {self.state or 'not started'}")
                await _call(on_attempt, result)
                return result
            attempt += 1
            code, reason = None, ""
            try:
                for part in parts:
                    if part.part not in refs:
                        refs[part.part] = await self._submit(part)
                if self.state == SEND_FAILING:
                    self._report(READY if self._registered() else NOT_REGISTERED, {})
                result = SendResult(True, SENT, attempt, tuple(refs[p.part] for p in parts))
                await _call(on_attempt, result)
                return result
            except _Rejected as e:
                code, reason = e.code, e.reason
                action = at.cms_action(code) if code is not None else at.RETRY
                if action in (at.PERMANENT_NUMBER, at.PERMANENT_SIM, at.OUR_BUG):
                    self.last_error = f"+CMS ERROR: {code} ({action})"
                    result = SendResult(False, FAILED, attempt, tuple(refs.values()), code, action)
                    await _call(on_attempt, result)
                    return result
                if action == at.REINIT:
                    self._trouble.set()
                self._report(SEND_FAILING, {"code": code, "reason": reason})
            except (CommandTimeout, ModemRebooted, LinkDown) as e:
                reason = f"{type(e).__name__}: {e}"
                self._trouble.set()
            self.last_error = reason
            result = SendResult(False, RETRYING, attempt, tuple(refs.values()), code, reason)
            await _call(on_attempt, result)
            delay = self.retry_delays_s[min(attempt - 1, len(self.retry_delays_s) - 1)]
            await asyncio.sleep(max(0.0, min(delay, deadline - self.clock.monotonic())))

    async def dial(self, number: str, ring_for_s: float, *, poll_s: float = 1.0) -> str:
        """Ring ``number`` and hang up on answer or after ``ring_for_s``: "answered",
        "no_answer", "busy" or "failed". A ring is a wake-up, never an acknowledgement."""
        if not self._usable.is_set():
            return "failed"
        self._call_end = None
        try:
            final, _ = await self._command(f"ATD{number};", self.timeouts.dial_s)
        except ModemError:
            return "failed"
        if not getattr(final, "ok", False):
            await self._hangup()
            return {"BUSY": "busy", "NO ANSWER": "no_answer"}.get(getattr(final, "code", ""), "failed")
        result = "no_answer"
        end = self.clock.monotonic() + ring_for_s
        seen = False
        while self.clock.monotonic() < end:
            await asyncio.sleep(poll_s)
            if self._call_end:
                result = {"BUSY": "busy"}.get(self._call_end, "no_answer")
                break
            try:
                _, items = await self._command("AT+CLCC", self.timeouts.command_s)
            except ModemError:
                result = "failed"
                break
            calls = [c for c in items if isinstance(c, at.CallState)]
            if any(c.stat == 0 for c in calls):
                result = "answered"
                break
            if seen and not calls:
                break
            seen = seen or bool(calls)
        await self._hangup()
        return result

    # --- the port ----------------------------------------------------------------------------
    async def _open(self):
        try:
            ser = await asyncio.to_thread(serial.serial_for_url, self.url, baudrate=self.baudrate,
                                          timeout=READ_TIMEOUT_S, write_timeout=2.0)
        except (serial.SerialException, OSError, ValueError) as e:
            self._report(DISCONNECTED, {"reason": f"cannot open {self.url}: {e}"})
            return None
        self._reader.reset()
        self._ser = ser
        self._trouble.clear()
        return ser

    async def _read_loop(self, ser) -> None:
        """Bytes to the reassembler. A port with a file descriptor (a tty, a pty) is watched by
        the loop itself, costing nothing while the modem is quiet; others are polled from a
        worker thread."""
        fd = _fileno(ser)
        if fd is None:
            while not self._read_stop.is_set():
                try:
                    data = await asyncio.to_thread(_read, ser)
                except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                    self._read_failed(e)
                    return
                if data:
                    self._dispatch(data)
            return
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = ser.read(ser.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                loop.remove_reader(fd)
                self._read_failed(e)
                self._read_stop.set()
                return
            if data:
                self._dispatch(data)

        loop.add_reader(fd, readable)
        try:
            await self._read_stop.wait()
        finally:
            loop.remove_reader(fd)

    def _read_failed(self, e: Exception) -> None:
        self._report(DISCONNECTED, {"reason": f"read failed: {e}"})
        self._fail_pending(LinkDown(str(e)))
        self._trouble.set()

    async def _write(self, data: bytes) -> None:
        ser = self._ser
        if ser is None:
            raise LinkDown("port closed")
        try:
            await asyncio.to_thread(ser.write, data)
        except (serial.SerialException, OSError, TypeError, AttributeError) as e:
            self._trouble.set()
            raise LinkDown(f"write failed: {e}") from None

    def _dispatch(self, data: bytes) -> None:
        for item in self._reader.feed(data):
            p = self._pending
            if isinstance(item, at.Garbage):
                LOGGER.debug("modem: skipped garbage %r", item.raw)
                continue
            if isinstance(item, at.Prompt):
                if p is not None and p.prompt is not None and not p.prompt.done():
                    p.prompt.set_result(True)
                continue
            if isinstance(item, at.URCS):
                if isinstance(item, at.Boot):
                    if self._initialising:
                        continue  # "SMS DONE" after the PIN, expected
                    self._fail_pending(ModemRebooted(item.text))
                self._queue(item)
                continue
            if isinstance(item, at.Final) and item.code in ("NO CARRIER", "BUSY", "NO ANSWER") \
                    and (p is None or not p.command.startswith("ATD")):
                self._call_end = item.code
                continue
            if isinstance(item, at.Registration) and (p is None or not item.solicited):
                self._queue(item)
                continue
            if isinstance(item, at.SimStatus) and (p is None or not p.command.startswith("AT+CPIN")):
                self._queue(item)
                continue
            if p is None:
                LOGGER.debug("modem: stale %r dropped", item)
                continue
            if isinstance(item, at.FINALS):
                if p.expect and item.ok and not any(
                        getattr(i, "text", "").startswith(p.expect) or _kind_of(i) == p.expect
                        for i in p.items):
                    LOGGER.debug("modem: %r without %s: stale, dropped", item, p.expect)
                    continue
                if not p.done.done():
                    p.done.set_result(item)
                continue
            p.items.append(item)

    def _queue(self, item) -> None:
        try:
            self._urcs.put_nowait(item)
        except asyncio.QueueFull:
            LOGGER.warning("modem: URC queue full, dropped %r", item)

    def _fail_pending(self, exc: Exception) -> None:
        p = self._pending
        if p is not None:
            for fut in (p.done, p.prompt):
                if fut is not None and not fut.done():
                    fut.set_exception(exc)

    async def _command(self, command: str, timeout_s: float, expect: str = ""):
        async with self._lock:
            return await self._exchange(command, timeout_s, expect)

    async def _exchange(self, command: str, timeout_s: float, expect: str = ""):
        loop = asyncio.get_running_loop()
        p = _Pending(command, loop.create_future(), expect)
        self._pending = p
        self._reader.echo = command
        try:
            await self._write(command.encode("latin-1") + b"\r")
            try:
                final = await asyncio.wait_for(asyncio.shield(p.done), timeout_s)
            except asyncio.TimeoutError:
                raise CommandTimeout(f"{command}: no answer in {timeout_s:g}s") from None
            return final, p.items
        finally:
            self._pending = None
            _retrieve(p.done)

    async def _submit(self, part: pdu.SubmitPdu) -> int:
        async with self._lock:
            gap = self._last_submit + self.min_submit_gap_s - self.clock.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            loop = asyncio.get_running_loop()
            command = f"AT+CMGS={part.tpdu_length}"
            p = _Pending(command, loop.create_future(), prompt=loop.create_future())
            self._pending = p
            self._reader.echo = command
            self._reader.expect_prompt = True
            try:
                await self._write(command.encode() + b"\r")
                done, _ = await asyncio.wait({p.prompt, p.done}, timeout=self.timeouts.prompt_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if p.done in done:
                    _raise_final(p.done.result())
                if p.prompt not in done:
                    await self._write(ESC)
                    raise CommandTimeout(f"no '> ' prompt in {self.timeouts.prompt_s:g}s")
                p.prompt.result()
                self._reader.expect_prompt = False
                self._reader.echo = part.hex
                await self._write(part.hex.encode() + CTRL_Z)
                try:
                    final = await asyncio.wait_for(asyncio.shield(p.done), self.timeouts.submit_s)
                except asyncio.TimeoutError:
                    raise CommandTimeout(f"no +CMGS in {self.timeouts.submit_s:g}s after Ctrl-Z") from None
                _raise_final(final)
                ref = next((i.ref for i in p.items if isinstance(i, at.Submitted)), 0)
                self.parts_sent += 1
                return ref
            finally:
                self._last_submit = self.clock.monotonic()
                self._reader.expect_prompt = False
                self._pending = None
                _retrieve(p.done)
                _retrieve(p.prompt)

    # --- a session: initialise, then serve ---------------------------------------------------
    async def _session(self) -> bool:
        """True when the modem was initialised and served (the caller resets its backoff)."""
        try:
            await self._initialise()
        except _InitFailed as e:
            self.last_error = e.reason
            self._report(e.state, {"reason": e.reason})
            return False
        except CommandTimeout as e:
            self.last_error = str(e)
            self._report(NO_ANSWER, {"reason": str(e)})
            return False
        except (ModemRebooted, LinkDown):
            return False
        await self._serve()
        return True

    async def _ok(self, command: str, timeout_s: float | None = None, expect: str = ""):
        final, items = await self._command(command, timeout_s or self.timeouts.command_s, expect)
        return final, items

    async def _initialise(self) -> None:
        self._initialising = True
        self._usable.clear()
        while not self._urcs.empty():
            self._urcs.get_nowait()
        try:
            await self._sync(self.sync_attempts)
            await self._ok("ATE0")
            await self._ok("AT+CMEE=1")
            await self._unlock_sim()
            await self._pdu_mode()
            for command in ("AT+CNMI=2,1,0,0,0", "AT+CREG=1", "AT+CEREG=1"):
                await self._ok(command)
            if self.voice:
                await self._ok("AT+CVHU=0")
            await self._wait_registration()
            await self._poll()
        finally:
            self._initialising = False
        self._report(READY if self._registered() else NOT_REGISTERED, self._health())
        self._usable.set()
        await self._sweep()

    async def _sync(self, attempts: int) -> None:
        """``AT+CSQ`` until it answers with its +CSQ line (a stale OK cannot pass for it)."""
        for i in range(attempts):
            try:
                final, _ = await self._ok("AT+CSQ", self.timeouts.command_s, expect="+CSQ")
                if final.ok:
                    return
            except CommandTimeout:
                pass
            await self._sleep(self.sync_interval_s)
            if self._stop is not None and self._stop.is_set():
                break
        raise CommandTimeout(f"modem does not answer AT ({attempts} tries)")

    async def _unlock_sim(self) -> None:
        for _ in range(10):
            final, items = await self._ok("AT+CPIN?", self.timeouts.slow_s)
            if isinstance(final, at.CmeError):
                if final.code == 10:
                    raise _InitFailed(NO_SIM, "no SIM card (+CME ERROR: 10)")
                if final.code in (14, None, 13):
                    await self._sleep(2.0 if final.code == 14 else 1.0)
                    continue
                raise _InitFailed(NO_SIM, f"SIM failure (+CME ERROR: {final.code})")
            sim = next((i for i in items if isinstance(i, at.SimStatus)), None)
            state = sim.state if sim else ""
            if state == "READY":
                return
            if state == "SIM PIN":
                if self.pin is None:
                    raise _InitFailed(PIN_REQUIRED, "the SIM wants a PIN and no pin_file is configured")
                if self._pin_sent:
                    raise _InitFailed(PIN_REJECTED, "the SIM PIN was refused; it is not sent again "
                                                    "(fix pin_file, then restart the hub)")
                self._pin_sent = True  # at most once per run: three wrong PINs lock the SIM
                final, _ = await self._ok(f'AT+CPIN="{self.pin}"', self.timeouts.slow_s)
                if not final.ok:
                    raise _InitFailed(PIN_REJECTED, f"the SIM refused the PIN ({_show(final)}); "
                                                    "it is not sent again")
                await self._sleep(0.2)
                continue
            if state in ("SIM PUK", "SIM PUK2"):
                raise _InitFailed(PUK_REQUIRED, "the SIM is locked (PUK needed); enter it in a phone")
            if state in ("NOT INSERTED", "NOT READY", ""):
                await self._sleep(1.0)
                continue
            raise _InitFailed(NO_SIM, f"SIM state {state!r}")
        raise _InitFailed(NO_SIM, "the SIM did not become ready")

    async def _pdu_mode(self) -> None:
        # Right after a boot or PIN, +CMGF can give ERROR/+CMS ERROR: 302 until "SMS Ready".
        for _ in range(30):
            final, _ = await self._ok("AT+CMGF=0")
            if final.ok:
                return
            await self._sleep(1.0)
        raise _InitFailed(NO_SIM, "the modem refuses PDU mode (AT+CMGF=0)")

    async def _wait_registration(self) -> None:
        end = self.clock.monotonic() + self.registration_wait_s
        while True:
            await self._query_registration()
            if self._registered() or self.clock.monotonic() >= end:
                return
            await self._sleep(min(2.0, max(0.05, end - self.clock.monotonic())))

    async def _query_registration(self) -> None:
        best = None
        for command in ("AT+CREG?", "AT+CEREG?"):
            final, items = await self._ok(command)
            for r in items:
                if isinstance(r, at.Registration) and (best is None or r.registered):
                    best = r
        if best is not None:
            self.registration = best.stat

    def _registered(self) -> bool:
        return self.registration is not None and at.Registration("", self.registration, True).registered

    def _health(self) -> dict:
        dbm = at.SignalQuality(self.rssi, 99).dbm if self.rssi is not None else None
        return {"registration": self.registration, "rssi": self.rssi, "dbm": dbm,
                "operator": self.operator}

    async def _poll(self) -> None:
        final, items = await self._ok("AT+CSQ", expect="+CSQ")
        for i in items:
            if isinstance(i, at.SignalQuality):
                self.rssi = i.rssi
        final, items = await self._ok("AT+COPS?")
        for i in items:
            if isinstance(i, at.Info) and i.text.startswith("+COPS:"):
                f = i.text.split(",")
                self.operator = f[2].strip('"') if len(f) > 2 else ""
        await self._query_registration()

    async def _serve(self) -> None:
        next_poll = self.clock.monotonic() + self.poll_interval_s
        next_sweep = self.clock.monotonic() + self.sweep_interval_s
        while not self._stop.is_set():
            if self._trouble.is_set():
                self._trouble.clear()
                if self._stop.is_set() or not await self._recover():
                    return
            wait = max(0.0, min(next_poll, next_sweep) - self.clock.monotonic())
            item = await self._next_urc(wait)
            try:
                if item is not None:
                    if not await self._handle(item):
                        return
                now = self.clock.monotonic()
                if now >= next_poll:
                    next_poll = now + self.poll_interval_s
                    await self._poll()
                    if self.state != SEND_FAILING:
                        self._report(READY if self._registered() else NOT_REGISTERED, self._health())
                if now >= next_sweep:
                    next_sweep = now + self.sweep_interval_s
                    await self._sweep()
            except CommandTimeout:
                self._trouble.set()
            except (ModemRebooted, LinkDown):
                return

    async def _next_urc(self, wait_s: float):
        get = asyncio.ensure_future(self._urcs.get())
        trouble = asyncio.ensure_future(self._trouble.wait())
        done, _ = await asyncio.wait({get, trouble}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        trouble.cancel()
        if get in done:
            return get.result()
        get.cancel()
        try:
            await get
        except asyncio.CancelledError:
            pass
        else:  # it completed between wait() and cancel(): keep the item
            return get.result()
        return None

    async def _recover(self) -> bool:
        """After a timeout or an error that needs it: resync; re-initialise when asked to."""
        if self._ser is None:
            return False
        await self._sleep(self.timeouts.command_s)  # let late answers arrive and be dropped
        try:
            await self._sync(3)
        except CommandTimeout as e:
            self.last_error = str(e)
            self._report(NO_ANSWER, {"reason": str(e)})
            self._usable.clear()
            return False
        except (ModemRebooted, LinkDown):
            return False
        try:
            await self._initialise()
        except _InitFailed as e:
            self._report(e.state, {"reason": e.reason})
            return False
        except ModemError as e:
            self._report(NO_ANSWER, {"reason": str(e)})
            return False
        return True

    async def _handle(self, item) -> bool:
        """One URC; False when the session must end (the caller re-initialises)."""
        if isinstance(item, at.Boot):
            LOGGER.warning("modem restarted (%s): initialising again", item.text)
            self._usable.clear()
            self._trouble.set()
            # drain the rest of the boot URCs before initialising
            await self._sleep(0.2)
            return True
        if isinstance(item, at.NewMessage):
            await self._read_stored(item.index)
        elif isinstance(item, at.RoutedMessage):
            await self._deliver(item.pdu, item.length, None)
        elif isinstance(item, at.Registration):
            self.registration = item.stat
            if self.state in (READY, NOT_REGISTERED):
                self._report(READY if item.registered else NOT_REGISTERED, self._health())
        elif isinstance(item, at.SimStatus) and not item.ready:
            self._usable.clear()
            self._report(NO_SIM, {"reason": f"+CPIN: {item.state}"})
            self._trouble.set()
        elif isinstance(item, at.PowerWarning):
            LOGGER.warning("modem: %s (check its power supply: bursts need ~2 A)", item.text)
        elif isinstance(item, (at.Ring, at.CallerId)):
            LOGGER.info("modem: incoming call %s", item)
        return True

    async def _read_stored(self, index: int) -> None:
        final, items = await self._ok(f"AT+CMGR={index}", self.timeouts.slow_s)
        msg = next((i for i in items if isinstance(i, at.StoredMessage)), None)
        if not final.ok or msg is None:
            return
        if await self._deliver(msg.pdu, msg.length, index):
            await self._ok(f"AT+CMGD={index}", self.timeouts.slow_s)

    async def _sweep(self) -> None:
        """``AT+CMGL=4``: every stored message, since a +CMTI is lost while the hub restarts."""
        final, items = await self._ok("AT+CMGL=4", self.timeouts.list_s)
        for msg in items:
            if isinstance(msg, at.StoredMessage) and msg.index is not None:
                if await self._deliver(msg.pdu, msg.length, msg.index):
                    await self._ok(f"AT+CMGD={msg.index}", self.timeouts.slow_s)

    async def _deliver(self, pdu_hex: str, length: int, index: int | None) -> bool:
        """Hand the message over; True when it may be deleted (handled, or unreadable)."""
        try:
            decoded = pdu.decode(pdu_hex, length)
        except pdu.PduError as e:
            LOGGER.warning("modem: unreadable message %s dropped: %s", index, e)
            return True
        try:
            if isinstance(decoded, pdu.StatusReport):
                await _call(self.on_report, decoded)
                return True
            self.messages_received += 1
            sms = IncomingSms(decoded.sender, decoded.text, decoded.sent_at,
                              self.clock.monotonic(), index, decoded.alphanumeric_sender,
                              decoded.concat)
            await _call(self.on_message, sms)
            return True
        except Exception:  # the listener failed: keep the message on the SIM for the next sweep
            LOGGER.exception("modem: message listener failed; message %s kept", index)
            return False

    async def _hangup(self) -> None:
        try:
            await self._command("ATH", self.timeouts.command_s)
        except ModemError:
            pass

    async def _hardware_reset(self) -> None:
        self.resets += 1
        LOGGER.warning("modem does not answer: pulsing its reset line")
        try:
            if asyncio.iscoroutinefunction(self.reset):
                await self.reset()
            else:
                await asyncio.to_thread(self.reset)
        except Exception:
            LOGGER.exception("modem reset callback failed")
        await self._sleep(self.reset_boot_wait_s)

    # --- helpers -----------------------------------------------------------------------------
    def _report(self, state: str, info: dict) -> None:
        if state == self.state:
            return
        self.state = state
        self.info = dict(info)
        if state in USABLE:
            LOGGER.info("modem %s on %s %s", state, self.url, info or "")
        else:
            LOGGER.warning("modem %s on %s: %s", state, self.url, info.get("reason", ""))
        try:
            self.on_status(state, dict(info))
        except Exception:
            LOGGER.exception("modem status listener failed")

    async def _sleep(self, seconds: float) -> None:
        if self._stop is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass


class _Rejected(ModemError):
    def __init__(self, code: int | None, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _raise_final(final) -> None:
    if isinstance(final, at.CmsError):
        raise _Rejected(final.code, f"+CMS ERROR: {final.code if final.code is not None else final.text}")
    if isinstance(final, at.CmeError):
        raise _Rejected(None, f"+CME ERROR: {final.code}")
    if not final.ok:
        raise _Rejected(None, final.code)


def _show(final) -> str:
    if isinstance(final, (at.CmsError, at.CmeError)):
        return f"+{'CMS' if isinstance(final, at.CmsError) else 'CME'} ERROR: {final.code}"
    return getattr(final, "code", str(final))


def _kind_of(item) -> str:
    if isinstance(item, at.SignalQuality):
        return "+CSQ"
    return ""


def _retrieve(fut) -> None:
    """Mark a future's exception as seen (it may have been set after we stopped waiting)."""
    if fut is not None and fut.done() and not fut.cancelled():
        fut.exception()


async def _call(fn, *args) -> None:
    if fn is None:
        return
    res = fn(*args)
    if inspect.isawaitable(res):
        await res


def _fileno(ser) -> int | None:
    try:
        fd = ser.fileno()
    except (AttributeError, OSError, ValueError, serial.SerialException):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def _read(ser) -> bytes:
    return ser.read(max(1, min(ser.in_waiting, 4096)))


def _close(ser) -> None:
    try:
        ser.close()
    except (serial.SerialException, OSError):
        pass
