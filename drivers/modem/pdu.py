"""SMS PDUs: SMS-SUBMIT encode, SMS-DELIVER / STATUS-REPORT / SUBMIT decode. Pure, no I/O.

PDU mode rather than text mode because a reply whose body is ``OK`` is, in text mode, taken for
the modem's own final result code; PDU bodies are hex and cannot collide.

Layouts: 3GPP TS 23.040 sections 9.2.2.1 (DELIVER), 9.2.2.2 (SUBMIT), 9.2.2.3 (STATUS-REPORT),
9.2.3.24.1 (concatenation UDH). Alphabets: TS 23.038 (GSM 7-bit default alphabet and its
extension table; UCS-2 big-endian for anything else, Chinese included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from drivers.errors import ParsingError

# TS 23.038 section 6.2.1: the default alphabet, by septet value.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
assert len(GSM7_BASIC) == 128
# Section 6.2.1.1: the extension table, reached through ESC (0x1B); each costs two septets.
GSM7_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C,
                  "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65}
_BASIC_INDEX = {c: i for i, c in enumerate(GSM7_BASIC) if i != 0x1B}
_EXT_CHAR = {v: k for k, v in GSM7_EXTENSION.items()}
ESC = 0x1B

DCS_GSM7, DCS_8BIT, DCS_UCS2 = 0x00, 0x04, 0x08
# Per-part payload limits (TS 23.040 9.2.3.24.1 with the 6-octet 8-bit-reference header).
SINGLE_SEPTETS, SINGLE_UCS2 = 160, 70
PART_SEPTETS, PART_UCS2 = 153, 67
MAX_PARTS = 255

TOA_INTERNATIONAL, TOA_UNKNOWN = 0x91, 0x81
TON_ALPHANUMERIC = 0x50


class PduError(ParsingError):
    """A PDU could not be built or read; the message says where."""


# --- septets -------------------------------------------------------------------------------
def gsm7_septets(text: str) -> list[int] | None:
    """The text as default-alphabet septets, or None when some character has no mapping."""
    out: list[int] = []
    for ch in text:
        if ch in _BASIC_INDEX:
            out.append(_BASIC_INDEX[ch])
        elif ch in GSM7_EXTENSION:
            out += [ESC, GSM7_EXTENSION[ch]]
        else:
            return None
    return out


def septets_to_text(septets: list[int]) -> str:
    out, escaped = [], False
    for s in septets:
        if escaped:
            out.append(_EXT_CHAR.get(s, " "))  # 23.038: unknown extension -> space-like
            escaped = False
        elif s == ESC:
            escaped = True
        else:
            out.append(GSM7_BASIC[s])
    return "".join(out)


def pack_septets(septets: list[int], fill_bits: int = 0) -> bytes:
    """Septets packed LSB first, after ``fill_bits`` zero bits (the UDH fill)."""
    acc = 0
    for i, s in enumerate(septets):
        acc |= (s & 0x7F) << (fill_bits + 7 * i)
    n = math.ceil((fill_bits + 7 * len(septets)) / 8)
    return acc.to_bytes(n, "little") if n else b""


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> list[int]:
    acc = int.from_bytes(data, "little")
    if fill_bits + 7 * count > 8 * len(data):
        raise PduError(f"user data holds fewer than {count} septets")
    return [(acc >> (fill_bits + 7 * i)) & 0x7F for i in range(count)]


# --- addresses and time stamps -------------------------------------------------------------
def _semi_octets(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex("".join(digits[i + 1] + digits[i] for i in range(0, len(digits), 2)))


def _read_semi_octets(data: bytes, ndigits: int) -> str:
    s = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in data)
    return s[:ndigits]


def encode_address(number: str) -> bytes:
    """A destination address: length in digits, type of address, swapped semi-octets."""
    intl = number.startswith("+")
    digits = number[1:] if intl else number
    if not digits or not digits.isdigit() or len(digits) > 20:
        raise PduError(f"{number!r} is not a phone number (digits, optionally after '+')")
    toa = TOA_INTERNATIONAL if intl else TOA_UNKNOWN
    return bytes([len(digits), toa]) + _semi_octets(digits)


def _decode_address(b: bytes, i: int) -> tuple[str, int, int]:
    """(number, type-of-address, next offset); alphanumeric senders come back as their text."""
    ndigits, toa = b[i], b[i + 1]
    nbytes = (ndigits + 1) // 2
    raw = b[i + 2:i + 2 + nbytes]
    if len(raw) < nbytes:
        raise PduError("address runs past the end of the PDU")
    if toa & 0x70 == TON_ALPHANUMERIC:
        text = septets_to_text(unpack_septets(raw, ndigits * 4 // 7))
        return text, toa, i + 2 + nbytes
    digits = _read_semi_octets(raw, ndigits)
    if toa & 0x70 == 0x10:  # international
        digits = "+" + digits
    return digits, toa, i + 2 + nbytes


def _decode_scts(b: bytes) -> datetime | None:
    """Service-centre time stamp: swapped BCD, then the zone in quarter hours (bit 3 = minus)."""
    if len(b) < 7:
        raise PduError("time stamp is shorter than 7 octets")
    try:
        yy, mo, dd, hh, mi, ss = (int(f"{x & 0x0F}{x >> 4}") for x in b[:6])
        tz = b[6]
        quarters = (tz & 0x07) * 10 + (tz >> 4)
        offset = timedelta(minutes=15 * quarters) * (-1 if tz & 0x08 else 1)
        return datetime(2000 + yy, mo, dd, hh, mi, ss, tzinfo=timezone(offset))
    except ValueError:
        return None  # a nonsense stamp from the network must not lose the message


def validity_octet(seconds: float) -> int:
    """TP-VP, relative format (23.040 9.2.3.12.1), rounded up to the next step."""
    minutes = max(5.0, seconds / 60)
    if minutes <= 720:
        return math.ceil(minutes / 5) - 1
    if minutes <= 1440:
        return 143 + math.ceil((minutes - 720) / 30)
    days = math.ceil(minutes / 1440)
    if days <= 30:
        return 166 + days
    return min(255, 192 + math.ceil(days / 7))


# --- SMS-SUBMIT ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SubmitPdu:
    """One part ready for ``AT+CMGS=<tpdu_length>``; ``hex`` includes the empty SMSC field."""

    hex: str
    tpdu_length: int
    part: int = 1
    parts: int = 1


def _split_units(units: list, limit: int) -> list[list]:
    """Split without tearing an escape pair (7-bit) or a surrogate pair (UCS-2)."""
    chunks, cur = [], []
    for unit in units:
        if len(cur) + len(unit) > limit:
            chunks.append(cur)
            cur = []
        cur = cur + list(unit)
    if cur or not chunks:
        chunks.append(cur)
    return chunks


def encode_submit(number: str, text: str, *, validity_s: float = 12 * 3600,
                  status_report: bool = False, concat_ref: int = 0) -> list[SubmitPdu]:
    """The text as one SMS-SUBMIT, or as concatenated parts sharing ``concat_ref``.

    7-bit when every character is in the default alphabet (or its extension), else UCS-2.
    """
    da = encode_address(number)
    septets = gsm7_septets(text)
    if septets is not None:
        dcs = DCS_GSM7
        units = [[_BASIC_INDEX[c]] if c in _BASIC_INDEX else [ESC, GSM7_EXTENSION[c]] for c in text]
        single, per_part = SINGLE_SEPTETS, PART_SEPTETS
    else:
        dcs = DCS_UCS2
        units = []
        for ch in text:
            b = ch.encode("utf-16-be")
            units.append([b[i:i + 2] for i in range(0, len(b), 2)])
        single, per_part = SINGLE_UCS2, PART_UCS2
    total = sum(len(u) for u in units)
    chunks = [sum(units, [])] if total <= single else _split_units(units, per_part)
    if len(chunks) > MAX_PARTS:
        raise PduError(f"text needs {len(chunks)} parts; at most {MAX_PARTS}")
    vp = validity_octet(validity_s)
    out = []
    for seq, chunk in enumerate(chunks, 1):
        concat = len(chunks) > 1
        fo = 0x01 | 0x10 | (0x20 if status_report else 0) | (0x40 if concat else 0)
        udh = bytes([5, 0x00, 3, concat_ref & 0xFF, len(chunks), seq]) if concat else b""
        if dcs == DCS_GSM7:
            hdr_septets = math.ceil(len(udh) * 8 / 7)
            fill = hdr_septets * 7 - len(udh) * 8
            ud = udh + pack_septets(chunk, fill)
            udl = hdr_septets + len(chunk)
        else:
            ud = udh + b"".join(chunk)
            udl = len(ud)
        tpdu = bytes([fo, 0x00]) + da + bytes([0x00, dcs, vp, udl]) + ud
        out.append(SubmitPdu(("00" + tpdu.hex()).upper(), len(tpdu), seq, len(chunks)))
    return out


# --- decoding ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Concat:
    ref: int
    total: int
    seq: int


@dataclass(frozen=True)
class Deliver:
    """An incoming SMS (SMS-DELIVER)."""

    sender: str
    sender_toa: int
    text: str
    sent_at: datetime | None
    dcs: int
    smsc: str = ""
    concat: Concat | None = None

    @property
    def alphanumeric_sender(self) -> bool:
        return self.sender_toa & 0x70 == TON_ALPHANUMERIC


@dataclass(frozen=True)
class Submit:
    """An SMS-SUBMIT read back (the simulator records what the hub sent)."""

    number: str
    text: str
    dcs: int
    validity: int | None
    status_report: bool
    concat: Concat | None = None


@dataclass(frozen=True)
class StatusReport:
    """TP-ST 0x00-0x1F: done (0x00 delivered); 0x20-0x3F still trying; 0x40+ failed."""

    ref: int
    recipient: str
    status: int
    discharged_at: datetime | None

    @property
    def delivered(self) -> bool:
        return self.status <= 0x1F


def _alphabet(dcs: int) -> int:
    if dcs & 0xC0 == 0x00:
        return (DCS_GSM7, DCS_8BIT, DCS_UCS2, DCS_GSM7)[(dcs >> 2) & 0x03]
    if dcs & 0xF0 == 0xF0:
        return DCS_8BIT if dcs & 0x04 else DCS_GSM7
    if dcs & 0xF0 == 0xE0:
        return DCS_UCS2
    return DCS_GSM7


def _user_data(b: bytes, i: int, dcs: int, udhi: bool) -> tuple[str, Concat | None]:
    udl = b[i]
    ud = b[i + 1:]
    alphabet = _alphabet(dcs)
    concat = None
    hdr_len = 0
    if udhi:
        if not ud:
            raise PduError("UDHI set but no user data")
        hdr_len = ud[0] + 1
        concat = _concat(ud[1:hdr_len])
    if alphabet == DCS_GSM7:
        septets = unpack_septets(ud, udl)
        return septets_to_text(septets[math.ceil(hdr_len * 8 / 7):]), concat
    if udl > len(ud):
        raise PduError(f"user data length {udl} exceeds the {len(ud)} octets present")
    body = ud[hdr_len:udl]
    if alphabet == DCS_UCS2:
        return body[: len(body) // 2 * 2].decode("utf-16-be", errors="replace"), concat
    return body.decode("latin-1"), concat


def _concat(udh: bytes) -> Concat | None:
    j = 0
    while j + 2 <= len(udh):
        iei, ln = udh[j], udh[j + 1]
        val = udh[j + 2:j + 2 + ln]
        if iei == 0x00 and ln == 3 and len(val) == 3:
            return Concat(val[0], val[1], val[2])
        if iei == 0x08 and ln == 4 and len(val) == 4:
            return Concat((val[0] << 8) | val[1], val[2], val[3])
        j += 2 + ln
    return None


def _split_sca(pdu_hex: str, tpdu_length: int | None) -> tuple[bytes, str]:
    try:
        b = bytes.fromhex(pdu_hex.strip())
    except ValueError:
        raise PduError("PDU is not hex") from None
    if not b:
        raise PduError("empty PDU")
    if tpdu_length is not None and len(b) == tpdu_length:
        return b, ""
    sca_len = b[0]
    smsc = ""
    if sca_len:
        if sca_len + 1 > len(b):
            raise PduError("SMSC address runs past the end of the PDU")
        toa, digits = b[1], _read_semi_octets(b[2:1 + sca_len], 2 * (sca_len - 1))
        smsc = ("+" if toa & 0x70 == 0x10 else "") + digits.rstrip("F")
    return b[1 + sca_len:], smsc


def decode(pdu_hex: str, tpdu_length: int | None = None):
    """A PDU as read from ``+CMGR``/``+CMGL``/``+CMT``/``+CDS``: Deliver or StatusReport.

    ``tpdu_length`` is the ``<length>`` of the header line; when the hex has exactly that many
    octets no SMSC field precedes it (some modems omit it in ``+CDS``).
    """
    try:
        b, smsc = _split_sca(pdu_hex, tpdu_length)
        mti = b[0] & 0x03
        if mti == 0x00:
            return _decode_deliver(b, smsc)
        if mti == 0x02:
            return _decode_status_report(b)
    except IndexError:
        raise PduError("PDU is truncated") from None
    raise PduError(f"message type {mti} is neither DELIVER nor STATUS-REPORT")


def _decode_deliver(b: bytes, smsc: str) -> Deliver:
    fo = b[0]
    sender, toa, i = _decode_address(b, 1)
    dcs = b[i + 1]
    sent_at = _decode_scts(b[i + 2:i + 9])
    text, concat = _user_data(b, i + 9, dcs, bool(fo & 0x40))
    return Deliver(sender, toa, text, sent_at, dcs, smsc, concat)


def _decode_status_report(b: bytes) -> StatusReport:
    ref = b[1]
    recipient, _, i = _decode_address(b, 2)
    discharged = _decode_scts(b[i + 7:i + 14])
    return StatusReport(ref, recipient, b[i + 14], discharged)


def decode_submit(pdu_hex: str, tpdu_length: int | None = None) -> Submit:
    try:
        b, _ = _split_sca(pdu_hex, tpdu_length)
        fo = b[0]
        if fo & 0x03 != 0x01:
            raise PduError("not an SMS-SUBMIT")
        number, _, i = _decode_address(b, 2)
        dcs = b[i + 1]
        vpf = (fo >> 3) & 0x03
        i += 2
        validity = None
        if vpf == 0b10:
            validity = b[i]
            i += 1
        elif vpf in (0b01, 0b11):
            i += 7
        text, concat = _user_data(b, i, dcs, bool(fo & 0x40))
    except IndexError:
        raise PduError("PDU is truncated") from None
    return Submit(number, text, dcs, validity, bool(fo & 0x20), concat)


# --- building DELIVER PDUs (the simulator's incoming texts) ---------------------------------
def _encode_scts(when: datetime) -> bytes:
    off = when.utcoffset() or timedelta(0)
    quarters = int(abs(off.total_seconds()) // 900)
    fields = [when.year % 100, when.month, when.day, when.hour, when.minute, when.second]
    out = bytes(((v % 10) << 4) | (v // 10) for v in fields)
    tz = ((quarters % 10) << 4) | (quarters // 10) | (0x08 if off < timedelta(0) else 0)
    return out + bytes([tz])


def encode_deliver(sender: str, text: str, sent_at: datetime, *,
                   smsc: str = "+8613800100500", ucs2: bool | None = None) -> tuple[str, int]:
    """(pdu hex with SMSC, TPDU length) of an SMS-DELIVER, as a modem stores it."""
    septets = None if ucs2 else gsm7_septets(text)
    oa = encode_address(sender)
    if septets is not None:
        dcs, udl, ud = DCS_GSM7, len(septets), pack_septets(septets)
    else:
        dcs = DCS_UCS2
        ud = text.encode("utf-16-be")
        udl = len(ud)
    tpdu = bytes([0x04]) + oa + bytes([0x00, dcs]) + _encode_scts(sent_at) + bytes([udl]) + ud
    sca = encode_address(smsc)[1:] if smsc else b""
    head = bytes([len(sca)]) + sca
    return (head + tpdu).hex().upper(), len(tpdu)
