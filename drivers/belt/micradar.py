"""MicRadar "53 59 ... 54 43" codec (R60ABD1 / MR60BHA1 / DFRobot C1001 / MR24HPC1).

Wire layout (reference sleep-sensors.md section 1.1; header fields big-endian)::

    [ 53 59 ][ ctrl ][ cmd ][ len u16 BE ][ data * len ][ sum8 ][ 54 43 ]

``sum8`` is the low byte of the sum of every byte before it, header included.
Frames are found by the length field, never by searching for the tail: a heart rate of
67 bpm is 0x43, the tail's second byte (reference 1.5).

Pure: bytes in, frozen dataclasses and ``Reading``s out, no I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from drivers.belt.reading import (
    MOTION_ACTIVE, MOTION_NONE, MOTION_STILL, RESP_FAST, RESP_NONE, RESP_NORMAL, RESP_SLOW,
    STAGE_AWAKE, STAGE_DEEP, STAGE_LIGHT, Reading,
)

LOGGER = logging.getLogger(__name__)

PROTOCOL = "micradar"
DEFAULT_BAUDRATE = 115200
HEADER = b"\x53\x59"
TAIL = b"\x54\x43"
# Longest data field we accept; the longest documented report (84 0D) is 12 bytes and
# product strings are short. Anything longer is noise that happened to start with 53 59.
MAX_DATA_LEN = 64
HEADER_LEN = 6            # 53 59 ctrl cmd len_hi len_lo
OVERHEAD = 9              # header + checksum + tail
MAX_FRAME_LEN = MAX_DATA_LEN + OVERHEAD

# Device limits of the heart rate field: 100 (V2.3) or 120 (V3.4). A value there may be higher.
HR_LIMITS_BPM = (100, 120)
# A radar that reports a reset again and again (a brown-out loop, or a line that echoes) gets
# its start-up frames at most this often; a reset inside the interval is answered at its end.
REHANDSHAKE_MIN_S = 10.0
# The 10-minute composite report.
COMPOSITE_WINDOW_S = 600.0


@dataclass(frozen=True)
class Frame:
    control: int
    command: int
    data: bytes = b""

    def to_bytes(self) -> bytes:
        return encode(self.control, self.command, self.data)


def checksum(body: bytes) -> int:
    """Low byte of the sum of header, control, command, length and data."""
    return sum(body) & 0xFF


def encode(control: int, command: int, data: bytes = b"") -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("MicRadar data longer than 65535 bytes")
    body = HEADER + bytes((control, command)) + len(data).to_bytes(2, "big") + bytes(data)
    return body + bytes((checksum(body),)) + TAIL


# --- frames the hub sends (reference 1.4) --------------------------------------------------
QUERY = b"\x0f"


def query_firmware() -> bytes:
    return encode(0x02, 0xA4, QUERY)


def switch(control: int, on: bool = True) -> bytes:
    """Function switch: 0x80 presence, 0x81 breathing, 0x84 sleep, 0x85 heart rate."""
    return encode(control, 0x00, b"\x01" if on else b"\x00")


def query(control: int, report_command: int) -> bytes:
    """Ask for a report now; the reply echoes the query command (report | 0x80)."""
    return encode(control, report_command | 0x80, QUERY)


PRESENCE_QUERY = (0x80, 0x01)    # reference 1.4: the reply echoes 80 81 with 00/01
IN_BED_QUERY = (0x84, 0x01)      # and 84 81 with 00 out / 01 in bed


def handshake_frames() -> list[bytes]:
    """What to write after every (re)open, or after the radar says it (re)initialised.

    The radar reports presence and in-bed only when they change, so a hub that starts or
    reconnects while the resident lies in bed asks for both (DFRobot's Pi driver does the same:
    ``_getData(0x84, 0x81)``).
    """
    return [query_firmware(), switch(0x80), switch(0x81), switch(0x85), switch(0x84),
            query(*PRESENCE_QUERY), query(*IN_BED_QUERY)]


# --- encoders of report frames (tests, simulator) ------------------------------------------
def presence(present: bool) -> bytes:
    return encode(0x80, 0x01, bytes((1 if present else 0,)))


def motion(state: int) -> bytes:
    return encode(0x80, 0x02, bytes((state,)))


def movement(index: int) -> bytes:
    return encode(0x80, 0x03, bytes((index,)))


def distance(cm: int) -> bytes:
    return encode(0x80, 0x04, cm.to_bytes(2, "big"))


def heart_rate(bpm: int) -> bytes:
    return encode(0x85, 0x02, bytes((bpm,)))


def resp_rate(per_min: int) -> bytes:
    return encode(0x81, 0x02, bytes((per_min,)))


def resp_state(code: int) -> bytes:
    return encode(0x81, 0x01, bytes((code,)))


def in_bed(code: int) -> bytes:
    """0 out of bed, 1 in bed, 2 none."""
    return encode(0x84, 0x01, bytes((code,)))


def sleep_stage(code: int) -> bytes:
    return encode(0x84, 0x02, bytes((code,)))


def heartbeat() -> bytes:
    return encode(0x01, 0x01, QUERY)


def init_complete() -> bytes:
    return encode(0x05, 0x01, QUERY)


def firmware_reply(text: str) -> bytes:
    return encode(0x02, 0xA4, text.encode("ascii"))


def composite(present: bool, state: int, rr: int, hr: int, turnovers: int,
              large_pct: int, small_pct: int, apnea: int = 0) -> bytes:
    """84 0C: state 3 out of bed, 2 awake, 1 light, 0 deep."""
    return encode(0x84, 0x0C, bytes((int(present), state, rr, hr, turnovers, large_pct,
                                     small_pct, apnea)))


# --- reassembler ---------------------------------------------------------------------------
class Reassembler:
    """Finds frames in a byte stream; bounded, never raises, counts what it drops.

    The buffer never holds more than one maximal frame after ``feed`` returns: whatever
    precedes a header is dropped as garbage, and a header whose length, checksum or tail
    is wrong is skipped by one byte so a real frame hiding inside it is still found.
    """

    def __init__(self):
        self._buf = bytearray()
        self.counters = {"frames_ok": 0, "bad_checksum": 0, "bad_tail": 0, "oversize": 0,
                         "garbage_bytes": 0}

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        counters = self.counters
        size = len(buf)
        pos = 0
        while True:
            i = buf.find(HEADER, pos)
            if i < 0:
                # keep a trailing 0x53: it may be the first half of the next header
                keep = 1 if size and buf[-1] == 0x53 else 0
                counters["garbage_bytes"] += size - keep - pos
                pos = size - keep
                break
            if i > pos:
                counters["garbage_bytes"] += i - pos
                pos = i
            if size - i < HEADER_LEN:
                break
            n = (buf[i + 4] << 8) | buf[i + 5]
            if n > MAX_DATA_LEN:
                counters["oversize"] += 1
                counters["garbage_bytes"] += 1
                pos = i + 1
                continue
            end = i + OVERHEAD + n
            if size < end:
                break
            cks = i + HEADER_LEN + n
            if sum(buf[i:cks]) & 0xFF != buf[cks]:
                counters["bad_checksum"] += 1
                counters["garbage_bytes"] += 1
                pos = i + 1
                continue
            if buf[cks + 1] != 0x54 or buf[cks + 2] != 0x43:
                counters["bad_tail"] += 1
                counters["garbage_bytes"] += 1
                pos = i + 1
                continue
            frames.append(Frame(buf[i + 2], buf[i + 3], bytes(buf[i + HEADER_LEN:cks])))
            pos = end
        if pos:
            del buf[:pos]
        counters["frames_ok"] += len(frames)
        return frames


# --- interpretation ------------------------------------------------------------------------
_RESP_STATES = {1: RESP_NORMAL, 2: RESP_FAST, 3: RESP_SLOW, 4: RESP_NONE}
_MOTIONS = {0: MOTION_NONE, 1: MOTION_STILL, 2: MOTION_ACTIVE}
_STAGES_84_02 = {0: STAGE_DEEP, 1: STAGE_LIGHT, 2: STAGE_AWAKE}   # 03: none
_STATES_84_0C = {0: STAGE_DEEP, 1: STAGE_LIGHT, 2: STAGE_AWAKE}   # 03: out of bed
_SWITCHES = {0x80: "presence", 0x81: "breathing", 0x84: "sleep", 0x85: "heart_rate"}
_EVENTS_1B = {
    (0x01, 0x01): "heartbeat",
    (0x01, 0x02): "reset",
    (0x05, 0x01): "init_complete",
    (0x84, 0x0E): "sleep_anomaly",
    (0x84, 0x10): "sleep_rating",
    (0x84, 0x11): "struggle",
    (0x84, 0x12): "no_one_timer",
    (0x07, 0x07): "range",
}
_INFO_U16 = {(0x84, 0x03): "awake_min", (0x84, 0x04): "light_min", (0x84, 0x05): "deep_min"}
_PRODUCT = {0xA1: "product_model", 0xA2: "product_id", 0xA3: "hardware_model", 0xA4: "firmware"}
_WAVES = {(0x81, 0x05): "breath_wave", (0x85, 0x05): "heart_wave"}
# Every report command that may also come back as a query reply (command | 0x80).
_ECHOED_CONTROLS = frozenset((0x05, 0x07, 0x80, 0x81, 0x84, 0x85))


def _rate(value: int) -> float | None:
    return float(value) if value else None


def _raw(frame: Frame, **extra) -> dict:
    raw = {"control": frame.control, "command": frame.command, "hex": frame.data.hex()}
    raw.update(extra)
    return raw


def _unknown(frame: Frame, reason: str) -> Reading:
    return Reading(PROTOCOL, kind="unknown", raw=_raw(frame, reason=reason))


def _one(frame: Frame, d: bytes, cmd: int) -> Reading | None:
    """The single-byte reports, by (normalised) command; None when not one of them."""
    ctrl = frame.control
    v = d[0]
    if ctrl == 0x85 and cmd == 0x02:
        hr = _rate(v)
        return Reading(PROTOCOL, heart_rate_bpm=hr,
                       hr_clamped=(v in HR_LIMITS_BPM or v > HR_LIMITS_BPM[-1]) if hr else None)
    if ctrl == 0x81 and cmd == 0x02:
        return Reading(PROTOCOL, resp_rate_per_min=_rate(v))
    if ctrl == 0x81 and cmd == 0x01 and v in _RESP_STATES:
        return Reading(PROTOCOL, resp_state=_RESP_STATES[v])
    if ctrl == 0x80 and cmd == 0x01 and v in (0, 1):
        return Reading(PROTOCOL, presence=bool(v))
    if ctrl == 0x80 and cmd == 0x02 and v in _MOTIONS:
        return Reading(PROTOCOL, motion=_MOTIONS[v])
    if ctrl == 0x80 and cmd == 0x03 and v <= 100:
        return Reading(PROTOCOL, movement_index=float(v))
    if ctrl == 0x84 and cmd == 0x01 and v in (0, 1, 2):
        return Reading(PROTOCOL, in_bed=None if v == 2 else bool(v))
    if ctrl == 0x84 and cmd == 0x02 and v in (0, 1, 2, 3):
        return Reading(PROTOCOL, sleep_stage=_STAGES_84_02.get(v))
    if ctrl == 0x84 and cmd == 0x06:
        return Reading(PROTOCOL, kind="night_summary", raw=_raw(frame, sleep_score=v))
    if cmd == 0x00 and ctrl in _SWITCHES and v in (0, 1):
        return Reading(PROTOCOL, kind="info", raw=_raw(frame, switch=_SWITCHES[ctrl], on=bool(v)))
    key = (ctrl, cmd)
    if key in _EVENTS_1B:
        return Reading(PROTOCOL, kind="event", raw=_raw(frame, event=_EVENTS_1B[key], value=v))
    return None


def _composite(frame: Frame, d: bytes) -> Reading:
    present, state, rr, hr, turns, large, small, apnea = d
    return Reading(
        PROTOCOL, kind="window", window_s=COMPOSITE_WINDOW_S,
        presence=bool(present),
        in_bed=(state != 3) if present else False,
        sleep_stage=_STATES_84_0C.get(state),
        resp_rate_per_min=_rate(rr), heart_rate_bpm=_rate(hr),
        turnover_count=turns,
        raw=_raw(frame, large_movement_pct=large, small_movement_pct=small,
                 apnea_count_reserved=apnea),
    )


def _summary(frame: Frame, d: bytes) -> Reading:
    total_min = (d[1] << 8) | d[2]
    return Reading(
        PROTOCOL, kind="night_summary", window_s=total_min * 60.0,
        out_of_bed_min=float(d[6]), out_of_bed_count=d[7], turnover_count=d[8],
        resp_rate_per_min=_rate(d[9]), heart_rate_bpm=_rate(d[10]),
        raw=_raw(frame, sleep_score=d[0], total_min=total_min, awake_pct=d[3], light_pct=d[4],
                 deep_pct=d[5], apnea_count_reserved=d[11]),
    )


def interpret(frame: Frame) -> Reading:
    """One frame -> one Reading; unknown or malformed frames come back as kind "unknown"."""
    ctrl, cmd, d = frame.control, frame.command, frame.data
    n = len(d)
    if ctrl == 0x02 and cmd in _PRODUCT and d == QUERY:
        return Reading(PROTOCOL, kind="info", raw=_raw(frame, query=_PRODUCT[cmd]))  # our own query
    if ctrl == 0x02 and cmd in _PRODUCT:
        text = d.decode("ascii", "replace").strip("\x00 ")
        if cmd == 0xA4:
            return Reading(PROTOCOL, kind="info", firmware=text, raw=_raw(frame))
        return Reading(PROTOCOL, kind="info", raw=_raw(frame, **{_PRODUCT[cmd]: text}))
    if ctrl in _ECHOED_CONTROLS and cmd & 0x80:
        cmd &= 0x7F        # a query reply carries the report's payload
    if n == 1:
        reading = _one(frame, d, cmd)
        if reading is not None:
            return reading
    elif ctrl == 0x84 and cmd == 0x0C and n == 8:
        return _composite(frame, d)
    elif ctrl == 0x84 and cmd == 0x0D and n == 12:
        return _summary(frame, d)
    elif ctrl == 0x80 and cmd == 0x04 and n == 2:
        cm = (d[0] << 8) | d[1]
        return Reading(PROTOCOL, distance_m=cm / 100.0)
    elif ctrl == 0x80 and cmd == 0x05 and n == 6:
        # sign convention disputed between documents (reference 1.5): keep raw only
        return Reading(PROTOCOL, kind="info", raw=_raw(frame, position=True))
    elif (ctrl, cmd) in _INFO_U16 and n == 2:
        return Reading(PROTOCOL, kind="info",
                       raw=_raw(frame, **{_INFO_U16[(ctrl, cmd)]: (d[0] << 8) | d[1]}))
    elif (ctrl, cmd) in _WAVES and n == 5:
        return Reading(PROTOCOL, kind="info", raw=_raw(frame, wave=_WAVES[(ctrl, cmd)]))
    return _unknown(frame, "unknown message or payload")


def is_reinit(reading: Reading) -> bool:
    """The radar rebooted or reset: its function switches must be sent again."""
    raw = reading.raw
    if reading.kind != "event" or raw is None:
        return False
    # 05 01 reports 0x0F; a reply to the 05 81 query says 01 (done) or 00 (not yet)
    return raw.get("event") == "reset" or (raw.get("event") == "init_complete"
                                           and raw.get("value") != 0)
