"""A GSM modem on a pseudo-terminal, for tests, benchmarks and the demo.

It answers AT commands the way SIMCom/Quectel modules do (echo until ``ATE0``, ``\\r\\n``
framing, ``+CMEE`` numeric errors, the ``> `` prompt with no line end, a TPDU length check, an
SMS store behind ``+CMTI``/``+CMGR``/``+CMGL``/``+CMGD``), and it fails on request: no SIM,
wrong PIN, not registered, ``+CMS ERROR``, silence, late answers, garbled lines, a reboot in
the middle of a send. Every PDU it is sent is decoded and kept in ``sent``.

It runs in its own thread, so the code under test talks to it through a real tty exactly as it
would to a USB modem.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from drivers.modem import pdu

LOGGER = logging.getLogger(__name__)
CTRL_Z, ESC = b"\x1a", b"\x1b"


@dataclass
class Faults:
    """Switch these at any time; the simulator reads them on every command."""

    sim: str = "READY"            # "READY", "SIM PIN", "SIM PUK", "absent"
    pin: str = "1234"             # the PIN that unlocks "SIM PIN"
    registration: int = 1         # +CREG/+CEREG stat: 1 home, 2 searching, 0 none, 5 roaming
    cms_errors: list = field(default_factory=list)  # codes answered to the next submits, in turn
    mute: bool = False            # answer nothing at all
    delay_s: float = 0.0          # wait this long before every final result code
    submit_delay_s: float = 0.0   # and this long before +CMGS
    garble: bool = False          # a garbage line before every answer
    reboot_on_submit: int = 0     # reboot instead of answering the next N submits
    silent_after_boot_s: float = 0.0  # after a reboot, ignore commands this long


@dataclass(frozen=True)
class SentText:
    number: str
    text: str
    parts: tuple


class FakeModem:
    """``with FakeModem() as m: link = ModemLink(m.port, …)``."""

    poll_s = 0.05  # how often the thread checks for stop() while the line is quiet

    def __init__(self, faults: Faults | None = None, *, sms_ready_delay_s: float = 0.0):
        self.faults = faults or Faults()
        self.sms_ready_delay_s = sms_ready_delay_s
        self.commands: list[str] = []
        self.submits: list[pdu.Submit] = []     # every part, decoded
        self.submit_times: list[float] = []     # time.monotonic() when AT+CMGS= arrived
        self.pin_attempts: list[str] = []
        self.dialled: list[str] = []
        self.hangups = 0
        self.reboots = 0
        self.answer_call_after_polls: int | None = None  # None: the callee never answers
        self.store: dict[int, tuple[str, int]] = {}
        self._next_index = 1
        self._mr = 0
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._reset_state()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.echo = True
        self.cmee = 0
        self.cmgf = 1                   # text mode is the power-on default
        self.cnmi = ""
        self.unlocked = False           # a PIN was entered since power-on
        self._call_polls = None
        self._deaf_until = 0.0

    def start(self) -> "FakeModem":
        self._thread = threading.Thread(target=self._run, name="fake-modem", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # --- what tests drive --------------------------------------------------------------------
    def texts(self) -> list[SentText]:
        """Whole texts, concatenated parts joined (by reference, in sequence)."""
        with self._lock:
            out, pending = [], {}
            for i, s in enumerate(self.submits):
                if s.concat is None:
                    out.append(SentText(s.number, s.text, (s,)))
                    continue
                key = (s.number, s.concat.ref)
                pending.setdefault(key, {})[s.concat.seq] = (i, s)
                if len(pending[key]) == s.concat.total:
                    got = pending.pop(key)
                    parts = [got[n][1] for n in range(1, s.concat.total + 1)]
                    out.append(SentText(s.number, "".join(p.text for p in parts), tuple(parts)))
            return out

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def inject_sms(self, sender: str, text: str, *, sent_at: datetime | None = None,
                   ucs2: bool | None = None, announce: bool = True) -> int:
        """Store an incoming text and announce it with ``+CMTI`` (as ``CNMI=2,1`` does)."""
        sent_at = sent_at or datetime(2025, 5, 1, 10, 30, tzinfo=timezone(timedelta(hours=8)))
        hexpdu, length = pdu.encode_deliver(sender, text, sent_at, ucs2=ucs2)
        with self._lock:
            index = self._next_index
            self._next_index += 1
            self.store[index] = (hexpdu, length)
        if announce and self.cnmi.startswith("2,1"):
            self._urc(f'+CMTI: "SM",{index}')
        return index

    def urc(self, line: str) -> None:
        self._urc(line)

    def reboot(self) -> None:
        """As after a brown-out: state reset, echo on, boot URCs."""
        with self._lock:
            self.reboots += 1
            self._reset_state()
            self._deaf_until = time.monotonic() + self.faults.silent_after_boot_s
        self._write(b"\r\nRDY\r\n\r\n+CFUN: 1\r\n")
        if self.faults.sim == "READY":
            self._write(b"\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n")
        else:
            self._write(b"\r\n+CPIN: " + self._sim_word().encode() + b"\r\n")

    # --- the tty side ------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        try:
            os.write(self._master, data)
        except OSError:
            pass

    def _urc(self, line: str) -> None:
        self._write(f"\r\n{line}\r\n".encode("latin-1"))

    def _line(self, text: str) -> None:
        self._write(f"\r\n{text}\r\n".encode("latin-1"))

    def _run(self) -> None:
        buf = b""
        pdu_mode_len: int | None = None
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self._master], [], [], self.poll_s)
                if not r:
                    continue
                data = os.read(self._master, 4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while True:
                if pdu_mode_len is not None:
                    z = min((i for i in (buf.find(CTRL_Z), buf.find(ESC)) if i >= 0), default=-1)
                    if z < 0:
                        break
                    body, term, buf = buf[:z], buf[z:z + 1], buf[z + 1:]
                    length, pdu_mode_len = pdu_mode_len, None
                    self._submit(body.decode("latin-1").strip(), length, cancel=term == ESC)
                    continue
                cr = buf.find(b"\r")
                if cr < 0:
                    break
                cmd, buf = buf[:cr].decode("latin-1"), buf[cr + 1:]
                cmd = cmd.strip("\n").strip()
                if not cmd:
                    continue
                pdu_mode_len = self._command(cmd)

    def _final(self, text: str) -> None:
        if self.faults.delay_s:
            time.sleep(self.faults.delay_s)
        self._line(text)

    def _error(self, code: int, kind: str = "CME") -> None:
        if kind == "CMS" or self.cmee:
            self._final(f"+{kind} ERROR: {code}")
        else:
            self._final("ERROR")

    def _sim_ready(self) -> bool:
        return self.faults.sim == "READY" or (self.faults.sim == "SIM PIN" and self.unlocked)

    def _sim_word(self) -> str:
        return {"absent": "NOT INSERTED"}.get(self.faults.sim, self.faults.sim)

    def _command(self, cmd: str) -> int | None:
        """Answer one command line; returns a TPDU length when a PDU body must follow."""
        with self._cond:
            self.commands.append(cmd)
            self._cond.notify_all()
        f = self.faults
        if f.mute or time.monotonic() < self._deaf_until:
            return None
        if self.echo:
            self._write(cmd.encode("latin-1") + b"\r")
        if f.garble:
            self._write(b"\r\n\xff\x00\xfe garbled\x07\r\n")
        up = cmd.upper()
        if not up.startswith("AT"):
            self._final("ERROR")
            return None
        body = up[2:]
        if body in ("", "Z"):
            return self._ok()
        if body in ("E0", "E1"):
            self.echo = body == "E1"
            return self._ok()
        if body.startswith("+CMEE="):
            self.cmee = int(body[6:] or 0)
            return self._ok()
        if body == "+CPIN?":
            if f.sim == "absent":
                return self._error(10)
            self._line(f"+CPIN: {'READY' if self._sim_ready() else self._sim_word()}")
            return self._ok()
        if body.startswith("+CPIN="):
            given = cmd[8:].strip().strip('"')
            self.pin_attempts.append(given)
            if f.sim == "absent":
                return self._error(10)
            if self._sim_ready() or f.sim != "SIM PIN" or given != f.pin:
                return self._error(16)
            self.unlocked = True
            self._ok()
            self._urc("+CPIN: READY")
            if self.sms_ready_delay_s:
                threading.Timer(self.sms_ready_delay_s, self._urc, ("SMS DONE",)).start()
            else:
                self._urc("SMS DONE")
            return None
        # Everything below needs a usable SIM.
        if body.startswith(("+CMGF", "+CNMI", "+CMGS", "+CMGR", "+CMGL", "+CMGD", "+CPMS", "+CSCA")):
            if f.sim == "absent":
                return self._error(310, "CMS")
            if not self._sim_ready():
                return self._error(311, "CMS")
        if body.startswith("+CMGF="):
            self.cmgf = int(body[6:])
            return self._ok()
        if body.startswith("+CNMI="):
            self.cnmi = body[6:]
            return self._ok()
        if body.startswith(("+CREG", "+CEREG", "+CGREG")):
            name = body[1:].split("?")[0].split("=")[0]
            if body.endswith("?"):
                self._line(f"+{name}: 1,{f.registration}")
            return self._ok()
        if body == "+CSQ":
            self._line("+CSQ: 17,99" if f.registration in (1, 5) else "+CSQ: 99,99")
            return self._ok()
        if body == "+COPS?":
            self._line('+COPS: 0,0,"CHINA MOBILE",7' if f.registration in (1, 5) else "+COPS: 0")
            return self._ok()
        if body == "+CSCA?":
            self._line('+CSCA: "+8613800100500",145')
            return self._ok()
        if body.startswith("+CMGS="):
            if self.cmgf != 0:
                return self._error(302, "CMS")
            with self._cond:
                self.submit_times.append(time.monotonic())
            self._write(b"\r\n> ")
            return int(body[6:])
        if body.startswith("+CMGR="):
            entry = self.store.get(int(body[6:].split(",")[0]))
            if entry is None:
                return self._error(321, "CMS")
            self._line(f"+CMGR: 0,,{entry[1]}")
            self._line(entry[0])
            return self._ok()
        if body.startswith("+CMGL="):
            for index, (hexpdu, length) in sorted(self.store.items()):
                self._line(f"+CMGL: {index},0,,{length}")
                self._line(hexpdu)
            return self._ok()
        if body.startswith("+CMGD="):
            with self._cond:
                self.store.pop(int(body[6:].split(",")[0]), None)
                self._cond.notify_all()
            return self._ok()
        if body.startswith("+CFUN=1,1"):
            self._ok()
            threading.Timer(0.05, self.reboot).start()
            return None
        if body.startswith("D") and body.endswith(";"):
            with self._cond:
                self.dialled.append(cmd[3:-1])
                self._call_polls = 0
                self._cond.notify_all()
            return self._ok()
        if body == "+CLCC":
            if self._call_polls is not None:
                self._call_polls += 1
                answered = (self.answer_call_after_polls is not None
                            and self._call_polls > self.answer_call_after_polls)
                self._line(f"+CLCC: 1,0,{0 if answered else 3},0,0,\"{self.dialled[-1]}\",145")
            return self._ok()
        if body in ("H", "+CHUP"):
            with self._cond:
                self.hangups += 1
                self._call_polls = None
                self._cond.notify_all()
            return self._ok()
        if body.startswith(("+CLIP", "+CVHU", "+CSCS", "+CPMS", "+CSMP", "&W", "+IPR")):
            return self._ok()
        self._final("ERROR")
        return None

    def _ok(self) -> None:
        self._final("OK")
        return None

    def _submit(self, hexpdu: str, length: int, cancel: bool) -> None:
        f = self.faults
        if cancel:
            self._final("OK")
            return
        if f.reboot_on_submit > 0:
            f.reboot_on_submit -= 1
            self.reboot()
            return
        if len(hexpdu) != 2 * (1 + int(hexpdu[:2] or "0", 16) + length):
            self._error(304, "CMS")
            return
        try:
            decoded = pdu.decode_submit(hexpdu)
        except pdu.PduError:
            self._error(304, "CMS")
            return
        if f.submit_delay_s:
            time.sleep(f.submit_delay_s)
        if f.cms_errors:
            self._error(f.cms_errors.pop(0), "CMS")
            return
        if f.registration not in (1, 5):
            self._error(331, "CMS")
            return
        with self._cond:
            self._mr = (self._mr + 1) % 256
            self.submits.append(decoded)
            self._cond.notify_all()
        self._line(f"+CMGS: {self._mr}")
        self._final("OK")
