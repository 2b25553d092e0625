"""AT responses and unsolicited result codes: lines in, frozen dataclasses out. No I/O.

``parse_line`` reads one line (ITU-T V.250 framing, 3GPP TS 27.007 / 27.005 result codes).
``AtReader`` is the bounded reassembler: it splits the byte stream into lines, drops the
command echo and blank lines, joins the two-line forms (``+CMGR``/``+CMGL``/``+CMT``/``+CDS``
header plus PDU), spots the ``> `` prompt that has no line end, and skips and counts garbage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE = 1024  # a PDU line is at most ~360 hex chars; anything longer is noise
FINAL_CODES = ("OK", "ERROR", "NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE", "CONNECT")
BOOT_URCS = ("RDY", "+CFUN: 1", "CALL READY", "SMS READY", "SMS DONE", "PB DONE", "+QUSIM: 1",
             "+QIND: SMS DONE", "+QIND: PB DONE", "+QIND: \"SMS DONE\"")
POWER_URCS = ("NORMAL POWER DOWN", "UNDER-VOLTAGE WARNNING", "UNDER-VOLTAGE POWER DOWN",
              "OVER-VOLTAGE WARNNING", "OVER-VOLTAGE POWER DOWN")
_HEX_RE = re.compile(r"^[0-9A-Fa-f]+$")


# --- what a line can be --------------------------------------------------------------------
@dataclass(frozen=True)
class Final:
    """A final result code: OK, ERROR, NO CARRIER, BUSY, NO ANSWER, NO DIALTONE, CONNECT."""

    code: str

    @property
    def ok(self) -> bool:
        return self.code in ("OK", "CONNECT")


@dataclass(frozen=True)
class CmeError:
    """``+CME ERROR``: 10 SIM not inserted, 11 PIN required, 12 PUK, 13 SIM failure, 14 busy,
    16 incorrect password (27.007 section 9.2). ``code`` is None for a verbose-only form."""

    code: int | None
    text: str = ""
    ok = False


@dataclass(frozen=True)
class CmsError:
    """``+CMS ERROR`` (27.005 section 3.2.5)."""

    code: int | None
    text: str = ""
    ok = False


@dataclass(frozen=True)
class Prompt:
    """The ``> `` after ``AT+CMGS=<n>``: send the PDU and Ctrl-Z now."""


@dataclass(frozen=True)
class Registration:
    """``+CREG``/``+CGREG``/``+CEREG``. ``solicited`` when it answers a query (it carries ``n``)."""

    kind: str
    stat: int
    solicited: bool
    n: int | None = None
    lac: str = ""
    ci: str = ""
    act: int | None = None

    @property
    def registered(self) -> bool:
        # home, roaming, SMS-only home/roaming, CSFB-not-preferred home/roaming
        return self.stat in (1, 5, 6, 7, 9, 10)


@dataclass(frozen=True)
class SignalQuality:
    """``+CSQ: <rssi>,<ber>``; 99 is unknown."""

    rssi: int
    ber: int

    @property
    def dbm(self) -> int | None:
        return None if self.rssi == 99 or not 0 <= self.rssi <= 31 else -113 + 2 * self.rssi


@dataclass(frozen=True)
class SimStatus:
    """``+CPIN: READY`` / ``SIM PIN`` / ``SIM PUK`` / ``NOT INSERTED`` / ``NOT READY`` …"""

    state: str

    @property
    def ready(self) -> bool:
        return self.state == "READY"


@dataclass(frozen=True)
class Submitted:
    """``+CMGS: <mr>``: the network took the part; ``ref`` matches a status report."""

    ref: int


@dataclass(frozen=True)
class NewMessage:
    """``+CMTI: <mem>,<index>`` (stored SMS) or ``+CDSI`` (stored status report)."""

    mem: str
    index: int
    report: bool = False


@dataclass(frozen=True)
class StoredMessage:
    """``+CMGR: <stat>,[<alpha>],<length>`` (index None) or ``+CMGL: <index>,<stat>,…``, with
    its PDU line. ``pdu`` is "" when the modem sent no body line."""

    index: int | None
    stat: int
    length: int
    pdu: str


@dataclass(frozen=True)
class RoutedMessage:
    """``+CMT: [<alpha>],<length>`` or ``+CDS: <length>`` (``report``), with its PDU line."""

    length: int
    pdu: str
    report: bool = False


@dataclass(frozen=True)
class Ring:
    """``RING`` or ``+CRING: <type>``: an incoming call."""

    kind: str = ""


@dataclass(frozen=True)
class CallerId:
    number: str


@dataclass(frozen=True)
class CallState:
    """``+CLCC: <id>,<dir>,<stat>,<mode>,<mpty>[,<number>,<type>]``; stat 0 active, 2 dialing,
    3 alerting, 6 disconnect (SIM800)."""

    call_id: int
    direction: int
    stat: int
    mode: int
    number: str = ""


@dataclass(frozen=True)
class Boot:
    """A URC a modem prints as it (re)starts: RDY, +CFUN: 1, SMS Ready, SMS DONE, …"""

    text: str


@dataclass(frozen=True)
class PowerWarning:
    text: str


@dataclass(frozen=True)
class Info:
    """Any other information line (``+CSCA: …``, ``+COPS: …``, vendor noise)."""

    text: str

    @property
    def prefix(self) -> str:
        return self.text.split(":", 1)[0] if ":" in self.text else ""


@dataclass(frozen=True)
class Garbage:
    """Bytes that are no line of any modem; skipped and counted."""

    raw: bytes


FINALS = (Final, CmeError, CmsError)
# Lines a modem prints on its own, never as an answer.
URCS = (NewMessage, RoutedMessage, Ring, CallerId, Boot, PowerWarning)


# --- parsing one line ----------------------------------------------------------------------
def _fields(rest: str) -> list[str]:
    """Comma-separated fields; commas inside quotes do not split."""
    out, cur, quoted = [], [], False
    for ch in rest:
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == "," and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return out


def _unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def _int(s: str) -> int:
    return int(_unquote(s).strip())


def _error_code(rest: str):
    rest = rest.strip()
    try:
        return int(rest), ""
    except ValueError:
        return None, rest


def _registration(kind: str, rest: str) -> Registration:
    f = _fields(rest)
    # With n present (a query's answer) the second field is an unquoted stat; in the URC the
    # first field is the stat and the second, if any, is a quoted LAC/TAC.
    solicited = len(f) >= 2 and f[1] != "" and not f[1].startswith('"')
    if solicited:
        n, stat, extra = _int(f[0]), _int(f[1]), f[2:]
    else:
        n, stat, extra = None, _int(f[0]), f[1:]
    lac = _unquote(extra[0]) if len(extra) > 0 else ""
    ci = _unquote(extra[1]) if len(extra) > 1 else ""
    act = _int(extra[2]) if len(extra) > 2 and extra[2] else None
    return Registration(kind, stat, solicited, n, lac, ci, act)


def parse_line(line: str):
    """One line, without its CR LF, to a dataclass. Never raises: unparseable is ``Info``."""
    upper = line.upper()
    if upper in FINAL_CODES:
        return Final(upper)
    if upper.startswith("CONNECT "):
        return Final("CONNECT")
    if upper.startswith("+CME ERROR:"):
        return CmeError(*_error_code(line[11:]))
    if upper.startswith("+CMS ERROR:"):
        return CmsError(*_error_code(line[11:]))
    if upper in BOOT_URCS or upper.startswith("^BOOT"):
        return Boot(line)
    if upper in POWER_URCS:
        return PowerWarning(line)
    if upper == "RING":
        return Ring()
    head, sep, rest = line.partition(":")
    if not sep:
        return Info(line)
    head = head.strip().upper()
    try:
        if head in ("+CREG", "+CGREG", "+CEREG"):
            return _registration(head[1:], rest)
        if head == "+CSQ":
            rssi, ber = _fields(rest)[:2]
            return SignalQuality(_int(rssi), _int(ber))
        if head == "+CPIN":
            return SimStatus(_unquote(rest.strip()).upper())
        if head == "+CMGS":
            return Submitted(_int(_fields(rest)[0]))
        if head in ("+CMTI", "+CDSI"):
            mem, index = _fields(rest)[:2]
            return NewMessage(_unquote(mem), _int(index), report=head == "+CDSI")
        if head == "+CRING":
            return Ring(rest.strip())
        if head == "+CLIP":
            return CallerId(_unquote(_fields(rest)[0]))
        if head == "+CLCC":
            f = _fields(rest)
            number = _unquote(f[5]) if len(f) > 5 else ""
            return CallState(_int(f[0]), _int(f[1]), _int(f[2]), _int(f[3]), number)
    except (ValueError, IndexError):
        return Info(line)
    return Info(line)


def _header(line: str):
    """A two-line form's header: (kind, fields), or None."""
    upper = line.upper()
    for prefix in ("+CMGR:", "+CMGL:", "+CMT:", "+CDS:"):
        if upper.startswith(prefix):
            return prefix[:-1], _fields(line[len(prefix):])
    return None


def _two_line(kind: str, f: list[str], pdu: str):
    try:
        if kind == "+CMGR":
            return StoredMessage(None, _int(f[0]), _int(f[-1]), pdu)
        if kind == "+CMGL":
            return StoredMessage(_int(f[0]), _int(f[1]), _int(f[-1]), pdu)
        if kind == "+CMT":
            return RoutedMessage(_int(f[-1]), pdu)
        return RoutedMessage(_int(f[0]), pdu, report=True)
    except (ValueError, IndexError):
        return None


# --- the reassembler -----------------------------------------------------------------------
def _printable(line: str) -> bool:
    return all(" " <= ch <= "~" for ch in line)


class AtReader:
    """Bytes in, items out. Bounded: a line longer than ``max_line`` is dropped as garbage.

    ``echo`` is the command last sent: a line equal to it is dropped once (echo may be on after a
    modem reset). ``expect_prompt`` makes a bare ``>`` count as the prompt too.
    """

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self.echo: str | None = None
        self.expect_prompt = False
        self.garbage = 0
        self._buf = bytearray()
        self._header: tuple[str, list[str]] | None = None
        self._overflow = False

    def reset(self) -> None:
        self._buf.clear()
        self._header = None
        self._overflow = False

    def feed(self, data: bytes) -> list:
        out: list = []
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            raw = bytes(self._buf[:nl])
            del self._buf[:nl + 1]
            if self._overflow:
                self._overflow = False
                continue
            self._line(raw, out)
        tail = bytes(self._buf).lstrip(b"\r")
        if tail in (b"> ", b">") and (tail == b"> " or self.expect_prompt):
            self._buf.clear()
            self._flush_header(out)
            out.append(Prompt())
        elif len(self._buf) > self.max_line:
            self.garbage += 1
            out.append(Garbage(bytes(self._buf[:64])))
            self._buf.clear()
            self._overflow = True
        return out

    def _line(self, raw: bytes, out: list) -> None:
        # Several CRs are common (\r\r\n); a \r mid-line is the echo of a command without LF
        text = raw.replace(b"\r", b"\n").decode("latin-1")
        for part in text.split("\n"):
            part = part.strip()
            if not part:
                continue
            if len(part) > self.max_line or not _printable(part):
                self.garbage += 1
                out.append(Garbage(part.encode("latin-1")[:64]))
                continue
            if self.echo is not None and part == self.echo:
                self.echo = None
                continue
            if self._header is not None:
                kind, f = self._header
                self._header = None
                if _HEX_RE.match(part):
                    item = _two_line(kind, f, part.upper())
                    out.append(item if item is not None else Info(f"{kind}: {','.join(f)}"))
                    continue
                item = _two_line(kind, f, "")
                out.append(item if item is not None else Info(f"{kind}: {','.join(f)}"))
            header = _header(part)
            if header is not None:
                self._header = header
                continue
            out.append(parse_line(part))

    def _flush_header(self, out: list) -> None:
        if self._header is not None:
            kind, f = self._header
            self._header = None
            item = _two_line(kind, f, "")
            out.append(item if item is not None else Info(kind))


# --- what to do about a failed submit ------------------------------------------------------
RETRY, REINIT, PERMANENT_NUMBER, PERMANENT_SIM, OUR_BUG = (
    "retry", "reinit", "permanent_number", "permanent_sim", "our_bug")


def cms_action(code: int | None) -> str:
    """27.005 3.2.5 / 24.011 E.2 causes, grouped by what the hub should do next."""
    if code in (1, 27, 28, 30):
        return PERMANENT_NUMBER          # unassigned / out of service / unknown subscriber
    if code in (8, 10, 50, 69):
        return PERMANENT_SIM             # barred, not subscribed (arrears, data-only SIM)
    if code in (303, 304, 305):
        return OUR_BUG                   # bad PDU: resending the same bytes cannot help
    if code in (302, 310, 311, 313, 316, 330):
        return REINIT                    # not ready, SIM state, no SMSC: initialise again
    return RETRY                         # 21, 38, 41, 42, 47, 300, 301, 314, 331, 332, 500, vendor
